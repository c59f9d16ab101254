"""Which sync a log line belongs to: every record made during a sync carries its ids.

A sweep (`jobcenter.sync.engine.sync_account`) and a hot pass (`jobcenter.sync.hot.hot_pass`)
run inside `sync_log_context(...)`. A LogRecord factory, installed once per process at
start-up (`JobCenterConfig.ready`), copies the context's fields onto every record made
meanwhile, from any logger: Job Center's, `providers.http`'s request lines, Django's, a
library's. They are plain record attributes, so the JSON formatter writes them as fields,
the plain formatter shows them in brackets after the logger's name, and tests read them
from pytest's `caplog`. Outside a sync a record has none of them.

- `sync_run`: the SyncRun's id. A sweep creates its row first, so every line carries it.
- `sync_pass`: a hot pass's id (the one its lease is held under). A pass records a SyncRun
  only when it changed something or failed, at its end, so its lines carry `sync_pass`,
  the lines after its row exists carry `sync_run` too, and the row keeps the pass's id in
  its `detail` ("sync_pass"): from the row to its lines, and back.
- `sync_account`, `sync_provider`: the account's id and its provider's slug.

The names are taken: a call that passes one in `extra=` gets logging's KeyError.

A context variable, not a thread-local: a new `threading.Thread` starts with an empty
context, so the sync's one helper thread (`jobcenter/sync/prefetch.py`) is started in a
copy of the sync's context, and its lines (the provider's requests) carry the ids too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

# The attributes a record may carry, in the order the plain formatter shows them.
FIELDS = ("sync_run", "sync_pass", "sync_account", "sync_provider")

_EMPTY: Mapping[str, object] = MappingProxyType({})
_current: ContextVar[Mapping[str, object]] = ContextVar("jobcenter_sync_log", default=_EMPTY)


@contextmanager
def sync_log_context(
    *,
    run: int | None = None,
    sync_pass: str | None = None,
    account: int | None = None,
    provider: str | None = None,
) -> Iterator[None]:
    """While the block runs, every record made in this context carries these fields
    (added to those of an enclosing block; None leaves a field as it was)."""
    given = zip(FIELDS, (run, sync_pass, account, provider), strict=True)
    fields = {**_current.get(), **{name: value for name, value in given if value is not None}}
    token = _current.set(MappingProxyType(fields))
    try:
        yield
    finally:
        _current.reset(token)


def current_fields() -> Mapping[str, object]:
    """The fields records made now get (empty outside a sync)."""
    return _current.get()


def install_record_factory() -> None:
    """Make every LogRecord of this process carry the current sync's fields (idempotent).

    A factory rather than a handler's filter: it runs when the record is made, in the
    thread that logs, for every handler alike (the console's, pytest's, an error
    tracker's).
    """
    previous = logging.getLogRecordFactory()
    if getattr(previous, "jobcenter_sync_fields", False):
        return

    def record_with_sync_fields(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        fields = _current.get()
        if fields:
            record.__dict__.update(fields)
        return record

    record_with_sync_fields.jobcenter_sync_fields = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(record_with_sync_fields)
