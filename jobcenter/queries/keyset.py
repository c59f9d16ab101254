"""Keyset positions over a queryset's own ordering: shared by the API's pages and exports.

The ordering always ends with the unique `id`, so a position is the full ordering key of
the last row read, and the next rows are one indexed range query: nothing is skipped or
repeated when rows are inserted meanwhile.

NULLs sort where the database puts them natively (PostgreSQL: as the largest value, so
first in newest-first order; SQLite: as the smallest), so the existing indexes serve
the sort on both; an explicit NULLS FIRST/LAST would make SQLite sort the whole table.

A key column may be a related one (`account__name`): the admin's column sort names
them, and its exports read by keyset like any other (`keyed_ordering`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import connections, models
from django.db.models import F, OrderBy, Q, QuerySet


@dataclass(frozen=True)
class KeyPart:
    """One column of the ordering key."""

    field: models.Field
    descending: bool
    nulls_largest: bool  # the database's native NULL order
    # Set where the rows are already restricted to non-null values of a nullable column:
    # conditions then are plain ranges an index can seek to (exports.keyset_chunks).
    known_not_null: bool = False
    # A related column: its path from the ordered model ("account__name"), and whether
    # a nullable relation on the way can make it read NULL.
    path: str = ""
    through_null: bool = False

    @property
    def name(self) -> str:
        return self.path or self.field.attname

    @property
    def nullable(self) -> bool:
        return (self.field.null or self.through_null) and not self.known_not_null

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
    nulls_largest = connections[queryset.db].features.nulls_order_largest
    parts = []
    for name in ordering:
        chain = _field_chain(queryset.model, name.lstrip("-"))
        field = chain[-1]
        path = "__".join([*(f.name for f in chain[:-1]), field.attname]) if len(chain) > 1 else ""
        through_null = any(f.null for f in chain[:-1])
        parts.append(KeyPart(field, name.startswith("-"), nulls_largest, False, path, through_null))
    return parts


def _field_chain(model: type[models.Model], path: str) -> list[models.Field]:
    """The fields `path` walks from `model` ("account__name": the account, its name),
    through forward relations only (one row each: the key stays the row's own)."""
    fields = []
    names = path.split("__")
    for i, name in enumerate(names):
        meta = model._meta
        field = meta.pk if name == "pk" else meta.get_field(name)
        fields.append(field)
        if i < len(names) - 1:
            if not (field.many_to_one or field.one_to_one) or not field.concrete:
                raise ImproperlyConfigured(f"A key column follows forward relations, not {path!r}.")
            model = field.related_model
    return fields


def key_values(instance: models.Model, key: list[KeyPart]) -> list[Any]:
    """The key's values on a model instance (a related column through its relations)."""
    values = []
    for part in key:
        value: Any = instance
        for name in part.name.split("__"):
            value = None if value is None else getattr(value, name)
        values.append(value)
    return values


def keyed_ordering(
    model: type[models.Model], ordering: Iterable[str | F | OrderBy]
) -> tuple[str, ...]:
    """`ordering` (a queryset's or the admin's: names, F(), asc()/desc()) as field paths
    ending with the primary key, for keyset reads in the same order.

    A relation orders as Django orders it, by its model's own ordering (else its id);
    whatever follows the primary key cannot change the order and is dropped, and an
    ordering without it ends with `-pk`, as the admin's lists make theirs total. An
    expression other than a column, or an explicit NULLS FIRST/LAST, has no keyset
    position: ImproperlyConfigured.
    """
    result: list[str] = []
    for item in ordering:
        for name in _expanded(model, *_named(item)):
            result.append(name)
            if name.lstrip("-") in ("pk", model._meta.pk.attname):
                return tuple(result)
    return (*result, "-pk")


def _named(item: str | F | OrderBy) -> tuple[str, bool]:
    """One ordering item as (field path, descending)."""
    if isinstance(item, str) and item != "?":
        return item.lstrip("-"), item.startswith("-")
    if isinstance(item, F):
        return item.name, False
    if (
        isinstance(item, OrderBy)
        and isinstance(item.expression, F)
        and not (item.nulls_first or item.nulls_last)
    ):
        return item.expression.name, item.descending
    raise ImproperlyConfigured(f"No keyset order by {item!r}: order by columns.")


def _expanded(model: type[models.Model], path: str, descending: bool) -> Iterator[str]:
    """A path as the columns it orders by: a relation by its model's ordering, else its id."""
    field = _field_chain(model, path)[-1]
    head, _, last = path.rpartition("__")
    if field.is_relation and last == field.name:  # the relation itself, not its `_id`
        if field.related_model._meta.ordering:
            for item in field.related_model._meta.ordering:
                name, desc = _named(item)
                yield from _expanded(model, f"{path}__{name}", desc != descending)
            return
        path = f"{head}__{field.attname}" if head else field.attname
    yield f"-{path}" if descending else path


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
