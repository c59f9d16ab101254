"""Admin for the audit log: superusers only, read-only, exportable as CSV.

The list filters by action, model, actor and date and searches the object's name and
the actor; a record's page shows what changed, field by field. Nobody adds, changes or
deletes a record here (the model refuses it anyway: `jobcenter.models.audit`). Staff who
are not superusers do not see the log, whatever permissions they hold: it names every
team's accounts and every user's changes.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from jobcenter.admin.common import time_column
from jobcenter.admin.exports import ExportAdminMixin
from jobcenter.audit.export import AUDIT_EXPORT
from jobcenter.exports.specs import ExportSpec
from jobcenter.models import AuditRecord


def _superuser(request: HttpRequest) -> bool:
    return bool(request.user.is_active and request.user.is_superuser)


def _shown(change: Any) -> tuple[str, str]:
    """One recorded change as (before, after) text."""
    if not isinstance(change, dict):
        return "", str(change)  # "changed": a secret
    if "added" in change or "removed" in change:
        return ", ".join(change.get("removed", [])), ", ".join(change.get("added", []))
    return (
        "" if "old" not in change else repr(change["old"]),
        "" if "new" not in change else repr(change["new"]),
    )


@admin.register(AuditRecord)
class AuditRecordAdmin(ExportAdminMixin, admin.ModelAdmin):
    list_display = ["when", "actor", "address", "action", "model", "object_repr", "changed"]
    list_filter = ["action", "model", "actor", ("at", admin.DateFieldListFilter)]
    search_fields = ["object_repr", "actor"]
    actions = ["export_selected"]
    export_formats = ("csv",)
    fields = [
        "when",
        "actor",
        "actor_id",
        "address",
        "action",
        "model",
        "object_id",
        "object_repr",
        "changes_table",
    ]
    readonly_fields = fields

    when = time_column("at", "when")

    @property
    def export_spec(self) -> ExportSpec:
        return AUDIT_EXPORT

    @admin.display(description="changed")
    def changed(self, obj: AuditRecord) -> str:
        return ", ".join(obj.changes)

    @admin.display(description="changes")
    def changes_table(self, obj: AuditRecord) -> str:
        if not obj.changes:
            return "-"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((name, *_shown(change)) for name, change in sorted(obj.changes.items())),
        )
        return format_html(
            "<table><thead><tr><th>field</th><th>before (or removed)</th>"
            "<th>after (or added)</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    # Superusers read; nobody writes.
    def has_module_permission(self, request: HttpRequest) -> bool:
        return _superuser(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _superuser(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_export_permission(self, request: HttpRequest) -> bool:
        return _superuser(request)
