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
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connections, models
from django.db.models import F, Q, QuerySet
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
BIGINT_LIMIT = 2**63


@dataclass(frozen=True)
class KeyPart:
    """One column of the ordering key."""

    field: models.Field
    descending: bool
    nulls_largest: bool  # the database's native NULL order
    # Set where the rows are already restricted to non-null values of a nullable column:
    # conditions then are plain ranges an index can seek to (exports.keyset_chunks).
    known_not_null: bool = False

    @property
    def name(self) -> str:
        return self.field.attname

    @property
    def nullable(self) -> bool:
        return self.field.null and not self.known_not_null

    @property
    def nulls_first(self) -> bool:
        """Whether NULLs come before values in this column's order."""
        return self.nulls_largest == self.descending

    def order_expression(self, reverse: bool) -> Any:
        expression = F(self.name)
        return expression.desc() if self.descending != reverse else expression.asc()

    def equal(self, value: Any) -> Q:
        return Q(**{f"{self.name}__isnull": True}) if value is None else Q(**{self.name: value})

    def _null(self, present: bool) -> Q:
        return Q(**{f"{self.name}__isnull": not present})

    def greater(self, value: Any) -> Q | None:
        """Rows whose value sorts after `value` in ascending order."""
        if value is None:
            return None if self.nulls_largest else self._null(present=True)
        condition = Q(**{f"{self.name}__gt": value})
        if self.nullable and self.nulls_largest:
            condition |= self._null(present=False)
        return condition

    def less(self, value: Any) -> Q | None:
        """Rows whose value sorts before `value` in ascending order."""
        if value is None:
            return self._null(present=True) if self.nulls_largest else None
        condition = Q(**{f"{self.name}__lt": value})
        if self.nullable and not self.nulls_largest:
            condition |= self._null(present=False)
        return condition

    def beyond(self, value: Any, backwards: bool) -> Q | None:
        """Rows strictly after `value` in this column's order (before it if `backwards`)."""
        after_means_less = self.descending != backwards
        return self.less(value) if after_means_less else self.greater(value)

    def range_start(self, value: Any, backwards: bool) -> Q | None:
        """A plain range on the leading column (`<=`/`>=`), which an index can seek to.

        Implied by `beyond_position`; only stated for non-null values and columns, where
        it is a simple range.
        """
        if value is None or self.nullable:
            return None
        after_means_less = self.descending != backwards
        return Q(**{f"{self.name}__{'lte' if after_means_less else 'gte'}": value})


def ordering_key(queryset: QuerySet) -> list[KeyPart]:
    """The key the queryset is ordered by; it must end with the primary key."""
    ordering = [str(o) for o in queryset.query.order_by]
    if not ordering or ordering[-1].lstrip("-") not in ("id", "pk"):
        raise ImproperlyConfigured(
            f"Keyset pagination needs an ordering ending with the id, not {ordering!r}; "
            "order the queryset in its FilterSet."
        )
    meta = queryset.model._meta
    nulls_largest = connections[queryset.db].features.nulls_order_largest
    parts = []
    for name in ordering:
        bare = name.lstrip("-")
        field = meta.pk if bare == "pk" else meta.get_field(bare)
        parts.append(KeyPart(field, name.startswith("-"), nulls_largest))
    return parts


def key_values(instance: models.Model, key: list[KeyPart]) -> list[Any]:
    return [getattr(instance, part.name) for part in key]


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


def beyond_position(key: list[KeyPart], values: list[Any], backwards: bool) -> Q:
    """Rows strictly after `values` in key order (strictly before when `backwards`)."""
    result: Q | None = None
    prefix = Q()
    for part, value in zip(key, values, strict=True):
        step = part.beyond(value, backwards)
        if step is not None:
            term = prefix & step
            result = term if result is None else result | term
        prefix &= part.equal(value)
    if result is None:
        return Q(pk__in=[])
    start = key[0].range_start(values[0], backwards)
    return result if start is None else start & result


def segments_after(
    queryset: QuerySet, key: list[KeyPart], values: list[Any] | None, backwards: bool
) -> list[QuerySet]:
    """The rows after `values` (all rows when None), as ordered querysets to read in turn.

    "After (x, id)" on a nullable leading column reads `x < :x OR x IS NULL OR ...`,
    which no index can seek to: a deep page (or an export's millionth row) would scan
    from the start. So rows with a value and rows without one are read apart, in the
    order the database sorts them, each by a key on which "after" is a plain range. A
    page crosses from one part to the other at most once: one query, two at the border.
    """
    lead = key[0]
    if values is None or not lead.nullable or len(key) < 2:  # one index scan does it
        if values is not None:
            queryset = queryset.filter(beyond_position(key, values, backwards))
        return [queryset.order_by(*(part.order_expression(backwards) for part in key))]
    present_key = [replace(lead, known_not_null=True), *key[1:]]
    present = queryset.filter(**{f"{lead.name}__isnull": False})
    absent = queryset.filter(**{f"{lead.name}__isnull": True})
    if values[0] is None:
        absent = absent.filter(beyond_position(key[1:], values[1:], backwards))
    else:
        present = present.filter(beyond_position(present_key, values, backwards))
    nulls_first = lead.nulls_first != backwards  # in the order of this traversal
    parts = [
        present.order_by(*(part.order_expression(backwards) for part in present_key)),
        absent.order_by(*(part.order_expression(backwards) for part in key[1:])),
    ]
    if nulls_first:
        parts.reverse()
    # The part before the position's own is behind it.
    return parts[1:] if (values[0] is None) != nulls_first else parts


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
            rows += segment[: size + 1 - len(rows)]
            if len(rows) > size:
                break
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
