"""The four ways a list's pages follow each other, and none: one loop each, each under a
`CursorGuard` (a repeated cursor or too many pages ends it), each yielding the page's
records with the cursor a later run resumes from.

- `offset`: offset and limit parameters; the cursor is the next offset. A short page is
  the last (or the offset reaching the list's total, when the answer states one); an
  offset past the provider's window ends the listing with its window truncated.
- `next_link`: the page links the next one; the cursor is that URL.
- `cursor_field`: the page names a token sent back as a parameter; the cursor is it.
- `next_records_url`: Salesforce's `done` and `nextRecordsUrl`; the cursor is that URL.

Every URL a page hands over goes through the HTTP client, which refuses one on another
origin before anything is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from providers.base import CursorGuard
from providers.declarative.fields import as_count, read
from providers.errors import BadResponse, InvalidCursor, RequestRejected

# (path or URL, query parameters or None) -> the answer's parsed JSON
Get = Callable[[str, Mapping[str, Any] | None], Any]
Excerpt = Callable[[Any], str]


@dataclass
class RawPage:
    """One page of a list: its records as the provider wrote them, and where to go next."""

    records: list[dict[str, Any]]
    next_cursor: str | None = None
    window_truncated: bool = False


@dataclass
class ListSpec:
    """One paged list: a listing's, or a job's error records."""

    what: str  # for messages: "Elastic Path's pcm-jobs list"
    path: str
    query: Mapping[str, Any]
    records: str  # a field reference
    pagination: Mapping[str, Any]
    page_limit: int | None = None  # the page_limit option, lowering the definition's limit


def iter_raw_pages(
    spec: ListSpec, get: Get, excerpt: Excerpt, cursor: str | None = None
) -> Iterator[RawPage]:
    """The list's pages from `cursor` (None: the first page)."""
    kind = spec.pagination["kind"]
    guard = CursorGuard(spec.what)
    if kind == "none":
        guard.advance(None)
        yield RawPage(_records(spec, get(spec.path, dict(spec.query)), excerpt))
    elif kind == "offset":
        yield from _offset_pages(spec, get, excerpt, guard, cursor)
    elif kind == "cursor_field":
        yield from _token_pages(spec, get, excerpt, guard, cursor)
    else:  # next_link, next_records_url
        yield from _link_pages(spec, get, excerpt, guard, cursor)


def limit_of(spec: ListSpec) -> int:
    limit = int(spec.pagination["limit"])
    return min(limit, max(1, spec.page_limit)) if spec.page_limit else limit


def _records(spec: ListSpec, body: Any, excerpt: Excerpt) -> list[dict[str, Any]]:
    items = read(spec.records, body)
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadResponse(f"{spec.what}: the answer has no list of records", excerpt=excerpt(body))
    return items


def _offset_pages(
    spec: ListSpec, get: Get, excerpt: Excerpt, guard: CursorGuard, cursor: str | None
) -> Iterator[RawPage]:
    pagination = spec.pagination
    limit = limit_of(spec)
    max_offset = pagination.get("max_offset")
    offset = _offset_from_cursor(spec, cursor, max_offset)
    too_deep = set(pagination.get("too_deep_statuses") or ())
    while True:
        guard.advance(str(offset))
        params = {
            **spec.query,
            pagination["offset_param"]: offset,
            pagination["limit_param"]: limit,
        }
        try:
            body = get(spec.path, params)
        except RequestRejected as exc:
            if offset > 0 and exc.status_code in too_deep:
                # A deeper offset than the provider serves: the list's window ends here.
                yield RawPage([], None, window_truncated=True)
                return
            raise
        items = _records(spec, body, excerpt)
        next_offset = offset + len(items)
        total = _total(spec, body, excerpt)
        if len(items) < limit or (total is not None and next_offset >= total):
            yield RawPage(items)
            return
        if max_offset is not None and next_offset > max_offset:
            yield RawPage(items, None, window_truncated=True)
            return
        yield RawPage(items, str(next_offset))
        offset = next_offset


def _offset_from_cursor(spec: ListSpec, cursor: str | None, max_offset: int | None) -> int:
    if not cursor:
        return 0
    try:
        offset = int(cursor)
    except ValueError:
        raise InvalidCursor(f"{spec.what}: saved cursor {cursor!r} is not an offset") from None
    if offset < 0 or (max_offset is not None and offset > max_offset):
        raise InvalidCursor(f"{spec.what}: saved offset {offset} is out of range")
    return offset


def _total(spec: ListSpec, body: Any, excerpt: Excerpt) -> int | None:
    ref = spec.pagination.get("total")
    if ref is None:
        return None
    try:
        return as_count(read(ref, body))
    except ValueError:
        raise BadResponse(
            f"{spec.what}: the list's total is not a number", excerpt=excerpt(body)
        ) from None


def _token_pages(
    spec: ListSpec, get: Get, excerpt: Excerpt, guard: CursorGuard, cursor: str | None
) -> Iterator[RawPage]:
    pagination = spec.pagination
    token = cursor or None
    while True:
        guard.advance(token)
        params = dict(spec.query)
        if "limit_param" in pagination:
            params[pagination["limit_param"]] = limit_of(spec)
        if token is not None:
            params[pagination["cursor_param"]] = token
        body = get(spec.path, params)
        items = _records(spec, body, excerpt)
        following = _text_or_none(spec, read(pagination["next"], body), body, excerpt)
        yield RawPage(items, following)
        if following is None:
            return
        token = following


def _link_pages(
    spec: ListSpec, get: Get, excerpt: Excerpt, guard: CursorGuard, cursor: str | None
) -> Iterator[RawPage]:
    pagination = spec.pagination
    if cursor and not cursor.startswith(("/", "https://", "http://")):
        raise InvalidCursor(f"{spec.what}: saved cursor {cursor!r} is not a link")
    url: str = cursor or spec.path
    params: dict[str, Any] | None = None
    if not cursor:
        params = dict(spec.query)
        if "limit_param" in pagination:
            params[pagination["limit_param"]] = limit_of(spec)
    while True:
        guard.advance(url if url != spec.path else None)
        body = get(url, params)
        items = _records(spec, body, excerpt)
        following = _text_or_none(spec, read(pagination["next"], body), body, excerpt)
        if "done" in pagination:
            done = read(pagination["done"], body)
            if not isinstance(done, bool):
                raise BadResponse(
                    f"{spec.what}: the page says neither done nor not done", excerpt=excerpt(body)
                )
            if not done and following is None:
                raise BadResponse(
                    f"{spec.what}: a page not done names no next page", excerpt=excerpt(body)
                )
            following = None if done else following
        yield RawPage(items, following)
        if following is None:
            return
        url, params = following, None


def _text_or_none(spec: ListSpec, value: Any, body: Any, excerpt: Excerpt) -> str | None:
    """A next link or token: text, or None on the last page."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadResponse(
            f"{spec.what}: the next page is named by {value!r}", excerpt=excerpt(body)
        )
    return str(value)
