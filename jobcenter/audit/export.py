"""The audit log as a CSV download, written by `jobcenter.exports` like any export.

The admin's "Export (CSV)" streams the rows its list's filters and search select, in
keyset chunks, with the exports' cell rules (UTC times, spreadsheet-formula escaping,
RFC 4180 quoting). `changes` is the record's JSON text in one cell.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import django_filters as df
from django.db.models import Expression, TextField
from django.db.models.functions import Cast

from jobcenter.exports.columns import NUMBER, TIME, Column, CsvText, Kind, same, spreadsheet_safe
from jobcenter.exports.specs import ExportSpec
from jobcenter.models.audit import AuditRecord
from jobcenter.queries.filters import KeyOrderingFilter


class JsonCsvText(CsvText):
    """A JSON column's text as one CSV cell (PostgreSQL's jsonb cast to text first)."""

    def __init__(self, expression: Expression, **extra: Any) -> None:
        super().__init__(Cast(expression, TextField()), **extra)


def _json_cell(value: Any) -> str:
    """The Python rule of JsonCsvText, for other databases."""
    return spreadsheet_safe(value if value is None or isinstance(value, str) else json.dumps(value))


JSON_TEXT = Kind(_json_cell, same, JsonCsvText)

AUDIT_COLUMNS = [
    Column("id", "id", NUMBER),
    Column("at", "at", TIME),
    Column("actor_id", "actor_id", NUMBER),
    Column("actor", "actor"),
    Column("address", "address"),
    Column("action", "action"),
    Column("model", "model"),
    Column("object_id", "object_id"),
    Column("object", "object_repr"),
    Column("changes", "changes", JSON_TEXT),
]


class AuditFilter(df.FilterSet):
    """The export's order: newest first, by a key that ends with the id."""

    ordering = KeyOrderingFilter(orderings={"-at": ("-at", "-id")})

    class Meta:
        model = AuditRecord
        fields: ClassVar[list[str]] = []


AUDIT_EXPORT = ExportSpec("audit", AuditRecord, AuditFilter, AUDIT_COLUMNS, raw="changes")
