"""Keyset ("cursor") pagination over the queryset's own ordering.

DRF's `CursorPagination` keeps only the first ordering field in the cursor and counts
an offset for ties, and it fails on NULLs (a job's provider `created_at` is NULL until
the provider reports it). Here the cursor holds the full ordering key of the last row
(the ordering always ends with the unique `id`), so a page is one indexed range query
and pages never skip or repeat rows when jobs are inserted.

NULLs sort where the database puts them natively (PostgreSQL: as the largest value, so
first in newest-first order; SQLite: as the smallest), so the existing indexes serve
the sort on both; an explicit NULLS FIRST/LAST would make SQLite sort the whole table.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import OrderedDict
from datetime import UTC, date, datetime
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from django.db.models import Q, QuerySet
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from jobcenter.queries.keyset import KeyPart, key_values, ordering_key, segments_after

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
BIGINT_LIMIT = 2**63


def encode_cursor(key: list[KeyPart], values: list[Any], backwards: bool) -> str:
    def plain(value: Any) -> Any:
        return value.isoformat() if isinstance(value, date | datetime) else value

    body = {
        "o": [("-" if p.descending else "") + p.name for p in key],
        "v": [plain(v) for v in values],
        "b": backwards,
    }
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, key: list[KeyPart]) -> tuple[list[Any], bool]:
    """(key values, backwards) from a cursor; 400 when it is not one of ours."""
    invalid = ValidationError({"cursor": ["Invalid cursor: start again from the first page."]})
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        body = json.loads(raw)
        names = [("-" if p.descending else "") + p.name for p in key]
        if not isinstance(body, dict) or body.get("o") != names:
            raise invalid
        values = body["v"]
        backwards = body["b"]
        if not isinstance(values, list) or len(values) != len(key) or backwards not in (0, 1):
            raise invalid
        parsed = [_parse(part, value) for part, value in zip(key, values, strict=True)]
    except (ValueError, TypeError, KeyError, OverflowError, binascii.Error, DjangoValidationError):
        raise invalid from None
    return parsed, bool(backwards)


def _parse(part: KeyPart, value: Any) -> Any:
    if value is None:
        if not part.nullable:
            raise ValueError("null in a non-null key column")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("cursor values are strings or integers")
    parsed = part.field.to_python(value)
    if isinstance(parsed, int) and not -BIGINT_LIMIT < parsed < BIGINT_LIMIT:
        raise ValueError("integer out of range")
    if isinstance(parsed, datetime):
        if parsed.tzinfo is None:
            raise ValueError("naive datetime")
        parsed = parsed.astimezone(UTC)  # OverflowError near year 1 or 9999
    return parsed


def page_queryset(
    queryset: QuerySet, cursor: str | None = None
) -> tuple[list[QuerySet], list[KeyPart], bool]:
    """The queries to read for one page plus one row (to see whether more follow).

    The segments are read in turn, each for what the page still lacks; returned apart
    from the view so tests can EXPLAIN exactly the queries the API runs.
    """
    key = ordering_key(queryset)
    values, backwards = decode_cursor(cursor, key) if cursor else (None, False)
    return segments_after(queryset, key, values, backwards), key, backwards


class KeysetPagination(BasePagination):
    """`?cursor=` and `?page_size=` (1 to 500); `next`/`previous` links, no total count."""

    cursor_query_param = "cursor"
    page_size_query_param = "page_size"

    def paginate_queryset(
        self, queryset: QuerySet, request: Request, view: Any = None
    ) -> list[Any]:
        self.request = request
        size = self.page_size(request)
        cursor = request.query_params.get(self.cursor_query_param) or None
        segments, key, backwards = page_queryset(queryset, cursor)
        rows: list[Any] = []
        for segment in segments:
            if len(rows) > size:
                break
            # A whole page and one row of each segment read, not just what the page
            # lacks: these are the rows `fingerprint_rows` reads in one query.
            rows += segment[: size + 1]
        self.read = list(rows)  # what the ETag is taken from (jobcenter.api.conditional)
        more = len(rows) > size
        rows = rows[:size]
        if backwards:
            rows.reverse()
        self.key = key
        self.rows = rows
        # Going forwards, a cursor means rows lie before; going backwards, they lie after.
        self.has_next = (more and not backwards) or (backwards and bool(cursor))
        self.has_previous = (more and backwards) or (not backwards and bool(cursor))
        return rows

    def fingerprint_rows(
        self, queryset: QuerySet, request: Request, columns: list[str]
    ) -> list[tuple[Any, ...]]:
        """The rows `paginate_queryset` would read, as tuples of `columns`, in one query.

        One segment (most pages) is its range query with narrow columns. Two segments
        (the page where rows without a value in a nullable leading column begin) are
        read together: each segment's first page and one row, by id; the second's are
        dropped when the first filled the page, as `paginate_queryset` never reads them
        then. `columns` must hold the ordering key.
        """
        size = self.page_size(request)
        cursor = request.query_params.get(self.cursor_query_param) or None
        segments, key, backwards = page_queryset(queryset, cursor)
        limit = size + 1
        if len(segments) == 1:
            return list(segments[0].values_list(*columns)[:limit])
        first, second = segments  # segments_after: rows with and without a leading value
        both = Q(pk__in=first.values("pk")[:limit]) | Q(pk__in=second.values("pk")[:limit])
        rows = list(queryset.filter(both).order_by().values_list(*columns))
        lead = columns.index(key[0].name)
        # segments_after reads the rows without a value first when NULLs come first in
        # this direction.
        first_without = key[0].nulls_first != backwards
        firsts = [row for row in rows if (row[lead] is None) == first_without]
        return firsts if len(firsts) == limit else rows

    def page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw in (None, ""):
            return DEFAULT_PAGE_SIZE
        try:
            size = int(raw)
        except ValueError:
            size = 0
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise ValidationError(
                {self.page_size_query_param: [f"Enter a whole number from 1 to {MAX_PAGE_SIZE}."]}
            )
        return size

    def link(self, instance: models.Model | None, backwards: bool) -> str | None:
        url = self.request.build_absolute_uri()
        if instance is None:
            return remove_query_param(url, self.cursor_query_param)
        cursor = encode_cursor(self.key, key_values(instance, self.key), backwards)
        return replace_query_param(url, self.cursor_query_param, cursor)

    def get_next_link(self) -> str | None:
        if not self.has_next:
            return None
        return self.link(self.rows[-1] if self.rows else None, backwards=False)

    def get_previous_link(self) -> str | None:
        if not self.has_previous:
            return None
        return self.link(self.rows[0] if self.rows else None, backwards=True)

    def get_paginated_response(self, data: Any) -> Response:
        return Response(
            OrderedDict(
                [
                    ("next", self.get_next_link()),
                    ("previous", self.get_previous_link()),
                    ("results", data),
                ]
            )
        )

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        link = {"type": "string", "nullable": True, "format": "uri"}
        return {
            "type": "object",
            "required": ["next", "previous", "results"],
            "properties": {"next": link, "previous": link, "results": schema},
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "Opaque position from a `next` or `previous` link.",
                "schema": {"type": "string"},
            },
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": f"Rows per page (default {DEFAULT_PAGE_SIZE}).",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
            },
        ]
