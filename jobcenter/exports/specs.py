"""What can be exported, in which formats, by whom, and which rows a query selects."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import Model, QuerySet
from django.http import QueryDict
from django_filters import FilterSet

from jobcenter.exports.columns import ERROR_COLUMNS, JOB_COLUMNS, SNAPSHOT_COLUMNS, Column
from jobcenter.models import Job, JobError, JobSnapshot
from jobcenter.queries.filters import ErrorFilter, JobFilter, SnapshotFilter

EXPORT_PERMISSION = "jobcenter.export_job"
FORMATS = ("csv", "ndjson")


@dataclass(frozen=True)
class ExportSpec:
    """What one export reads: model, filters, columns, and the raw JSON NDJSON adds."""

    name: str  # "jobs", "snapshots", "errors": in URLs, file names and --what
    model: type[Model]
    filterset: type[FilterSet]
    columns: Sequence[Column]
    raw: str  # NDJSON only: the field holding the provider's JSON as it was received

    @property
    def view_permission(self) -> str:
        return f"{self.model._meta.app_label}.view_{self.model._meta.model_name}"

    def header(self) -> list[str]:
        return [column.name for column in self.columns]


EXPORTS: dict[str, ExportSpec] = {
    spec.name: spec
    for spec in (
        ExportSpec("jobs", Job, JobFilter, JOB_COLUMNS, "payload"),
        ExportSpec("snapshots", JobSnapshot, SnapshotFilter, SNAPSHOT_COLUMNS, "payload"),
        ExportSpec("errors", JobError, ErrorFilter, ERROR_COLUMNS, "raw"),
    )
}


# --- who may export ---------------------------------------------------------------------


def can_export(user: Any, spec: ExportSpec) -> bool:
    """Staff with the export permission and the view permission of what is exported."""
    return bool(
        user
        and user.is_active
        and user.is_staff
        and user.has_perm(EXPORT_PERMISSION)
        and user.has_perm(spec.view_permission)
    )


# --- rows -------------------------------------------------------------------------------


class FilterError(ValueError):
    """The filters do not validate; `errors` maps each filter to its problems."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in errors.items()))
        self.errors = errors


def filtered(spec: ExportSpec, query: QueryDict, queryset: QuerySet | None = None) -> QuerySet:
    """The rows the matching list endpoint returns for `query`, in the same order."""
    base = spec.model._default_manager.all() if queryset is None else queryset
    filterset = spec.filterset(query, queryset=base)
    if not filterset.is_valid():
        raise FilterError({name: list(msgs) for name, msgs in filterset.errors.items()})
    return filterset.qs


def default_ordering(spec: ExportSpec) -> tuple[str, ...]:
    """The list endpoint's default order (newest first), a key ending with the id."""
    ordering = spec.filterset.base_filters["ordering"]
    return ordering.orderings[ordering.default]
