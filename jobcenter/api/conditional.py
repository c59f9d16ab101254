"""Conditional GETs: lists and details carry a weak `ETag`; a matching `If-None-Match` is a 304.

Clients poll; most polls find nothing new. A 304 costs the authentication (one query
with a token: `authentication.py` reads the user's permissions in the same query) and
one query that reads the answer's fingerprint, never the rendering of the page:

- a detail's fingerprint is its row, the one query a 200 also starts with (a job's
  also carries counts and latest ids of its snapshots and error records, which the
  detail embeds);
- a list's is the narrow columns of the rows the page would read, the page and the row
  after it (`KeysetPagination.fingerprint_rows`): one indexed range query however many
  rows the list holds, as the page read is.

The fingerprint covers every column the serializer shows: the columns are derived from
the serializer's fields, and a field with no column of its own names the columns that
stand for it in `etag_covered` (a snapshot's `payload` by its `digest`), or the view
fails loudly. The ETag is a digest of that fingerprint, the user, the absolute URL
(path, filters, ordering, cursor, page size, host: the `next` links carry it) and the
representation (the accepted media type), so two users, two filters or two pages never
share one. It is weak: it stands for the answer's content, not its bytes.

A list's 200 without `If-None-Match` reads no fingerprint: its ETag comes from the rows
the page read, the same rows with the same values, so both give the same ETag (a tag
that no longer matches costs the fingerprint and the page). The browsable API (HTML)
gets no ETag. `Last-Modified` is not sent (no one time stands for every change an
answer shows), so `If-Modified-Since` has no date to compare with and is ignored.
Every answer here, 304s included, is `Cache-Control: private, no-cache` with
`Vary: Accept, Authorization, Cookie`: staff data stays out of shared caches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db.models import Model, QuerySet
from django.http import HttpResponseBase, HttpResponseNotModified
from django.utils.cache import patch_cache_control, patch_vary_headers
from django.utils.http import parse_etags
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from jobcenter.queries.keyset import ordering_key

if TYPE_CHECKING:  # the views it is mixed into
    from rest_framework.generics import GenericAPIView as _ViewBase
else:
    _ViewBase = object

# Bump when what an answer shows changes in a way its columns do not (a new rendering).
ETAG_VERSION = "1"
VARY = ("Accept", "Authorization", "Cookie")

Row = tuple[Any, ...]
# Columns per (view, serializer, annotations): each serializer is built once to find them.
_COLUMNS: dict[tuple[Any, ...], list[str]] = {}


def serializer_columns(
    serializer_class: type[serializers.Serializer],
    queryset: QuerySet,
    covered: dict[str, tuple[str, ...]],
) -> list[str]:
    """The queryset columns (attribute names) that determine what the serializer shows.

    A field backed by a concrete model field gives its column (`account` gives
    `account_id`), one backed by an annotation of the queryset gives that; any other
    field (a property, a method field) must be in `covered`, with the columns that
    change whenever it does. Write-only fields show nothing.
    """
    model = queryset.model
    columns: list[str] = []
    for name, field in serializer_class().fields.items():
        if field.write_only:
            continue
        if name in covered:
            columns += covered[name]
            continue
        columns.append(_column(model, queryset, field.source, name, serializer_class))
    return list(dict.fromkeys(columns))


def _column(
    model: type[Model], queryset: QuerySet, source: str, name: str, serializer_class: type
) -> str:
    if source in queryset.query.annotations:
        return source
    try:
        field = model._meta.get_field(source)
    except FieldDoesNotExist:
        field = None
    if field is not None and field.concrete and not field.many_to_many:
        return field.attname
    raise ImproperlyConfigured(
        f"{serializer_class.__name__}.{name} has no column of its own: name the columns "
        "that change with it in the view's etag_covered (jobcenter.api.conditional)."
    )


def rows_digest(rows: Iterable[Row]) -> str:
    """A digest of a set of rows, whatever order they were read in (the ordering is in
    the URL, and the rows carry the values they are ordered by)."""
    encoded = sorted(
        json.dumps(list(row), sort_keys=True, default=str, separators=(",", ":")) for row in rows
    )
    return hashlib.sha256("\n".join(encoded).encode()).hexdigest()


def instance_rows(instances: Iterable[Model], columns: Sequence[str]) -> list[Row]:
    """The fingerprint rows of instances already read (the same values values_list reads)."""
    return [tuple(getattr(instance, column) for column in columns) for instance in instances]


def make_etag(request: Request, view_name: str, columns: Sequence[str], rows: list[Row]) -> str:
    """The weak ETag of one answer: its rows, for this user, URL and representation."""
    parts = [
        ETAG_VERSION,
        str(getattr(request.user, "pk", "")),
        request.build_absolute_uri(),
        str(getattr(request, "accepted_media_type", "")),
        view_name,
        ",".join(columns),
        rows_digest(rows),
    ]
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]
    return f'W/"{digest}"'


def named_tags(request: Request) -> list[str]:
    """The tags `If-None-Match` names, without their weak marks (`["*"]` for any)."""
    header = request.headers.get("If-None-Match")
    return [tag.removeprefix("W/") for tag in parse_etags(header)] if header else []


def none_match_hits(tags: list[str], etag: str) -> bool:
    """Whether the answer tagged `etag` is one the client holds (weak comparison): a 304."""
    return tags == ["*"] or etag.removeprefix("W/") in tags


def private_answer(response: HttpResponseBase, etag: str | None) -> HttpResponseBase:
    """The headers a list or detail answer carries, 200 and 304 alike."""
    if etag is not None:
        response["ETag"] = etag
    patch_cache_control(response, private=True, no_cache=True)
    patch_vary_headers(response, VARY)
    return response


class ConditionalGet(_ViewBase):
    """`list` and `retrieve` with ETags and 304s, for DRF generic views and viewsets.

    `etag_covered` maps each serializer field without a column of its own to the columns
    that stand for it. `empty_page()` runs when a list page has no rows (nested lists
    check their parent there).
    """

    etag_covered: ClassVar[dict[str, tuple[str, ...]]] = {}

    def uses_etags(self, request: Request) -> bool:
        """JSON only: the browsable API's HTML holds a CSRF token and forms of its own."""
        renderer = getattr(request, "accepted_renderer", None)
        return getattr(renderer, "format", None) == "json"

    def etag_columns(self, queryset: QuerySet, extra: Iterable[str] = ()) -> list[str]:
        serializer_class = self.get_serializer_class()
        key = (type(self), serializer_class, tuple(queryset.query.annotations))
        if key not in _COLUMNS:
            _COLUMNS[key] = serializer_columns(serializer_class, queryset, self.etag_covered)
        return list(dict.fromkeys([*_COLUMNS[key], *extra]))

    def empty_page(self) -> None:
        """Called when a list page has no rows; nested lists raise Http404 here."""

    def list(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponseBase:
        queryset = self.filter_queryset(self.get_queryset())  # a bad filter: 400
        view_name = type(self).__name__
        columns: list[str] = []
        if self.uses_etags(request):
            columns = self.etag_columns(queryset, [p.name for p in ordering_key(queryset)])
            tags = named_tags(request)
            if tags:
                rows = self.paginator.fingerprint_rows(queryset, request, columns)
                if not rows:
                    self.empty_page()
                etag = make_etag(request, view_name, columns, rows)
                if none_match_hits(tags, etag):
                    return private_answer(HttpResponseNotModified(), etag)
        page = self.paginator.paginate_queryset(queryset, request, view=self)
        if not self.paginator.read:
            self.empty_page()
        etag = None
        if columns:  # from the rows just read: the same rows, values and tag
            etag = make_etag(
                request, view_name, columns, instance_rows(self.paginator.read, columns)
            )
        data = self.get_serializer(page, many=True).data
        return private_answer(self.paginator.get_paginated_response(data), etag)

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponseBase:
        instance = self.get_object()  # a missing row, or another team's: 404
        etag = None
        if self.uses_etags(request):
            columns = self.etag_columns(self.get_queryset())
            etag = make_etag(
                request, type(self).__name__, columns, instance_rows([instance], columns)
            )
            if none_match_hits(named_tags(request), etag):
                return private_answer(HttpResponseNotModified(), etag)
        return private_answer(Response(self.get_serializer(instance).data), etag)
