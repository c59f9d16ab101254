"""Keyset positions over a queryset's own ordering: shared by the API's pages and exports.

The ordering always ends with the unique `id`, so a position is the full ordering key of
the last row read, and the next rows are one indexed range query: nothing is skipped or
repeated when rows are inserted meanwhile.

NULLs sort where the database puts them natively (PostgreSQL: as the largest value, so
first in newest-first order; SQLite: as the smallest), so the existing indexes serve
the sort on both; an explicit NULLS FIRST/LAST would make SQLite sort the whole table.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import connections, models
from django.db.models import F, Q, QuerySet


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
