"""Checkpoint SQLite's write-ahead log in a helper thread while a long write runs.

In WAL mode every commit appends its pages to the log, and the commit that takes the
log past `wal_autocheckpoint` pages (1000 by default) copies the whole log back into the
database file before it returns. A sync commits every page or few pages, so every
so often one commit stalls for the copy: a third of a first sync's time on SQLite. While a sync
runs, its connection leaves the copying to a helper thread with its own connection,
which runs PASSIVE checkpoints (never waiting for readers or writers) on a short
period; the sync's commits then only append. The helper's work is in SQLite's C code,
outside Python's lock, so it runs beside the sync's Python work.

Connections this process opens meanwhile (the page-prefetch thread's, for the rate
limiter's buckets) are opened without automatic checkpoints too: else their small
commits would do the copying, and stall the fetching instead. Other processes keep
checkpointing as before, the log is checkpointed once more when the write ends, and the
connection's setting is restored.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DEFAULT_DB_ALIAS, connections

logger = logging.getLogger("jobcenter.sqlite")

CHECKPOINT_PERIOD_SECONDS = 0.25
_active_lock = threading.Lock()
_active = 0  # background_checkpoints blocks running in this process


def in_background() -> bool:
    """Whether a connection opened now should leave checkpoints to a helper thread."""
    return _active > 0


def _pragma(alias: str, statement: str) -> object:
    with connections[alias].cursor() as cursor:
        cursor.execute(statement)
        row = cursor.fetchone()
    return row[0] if row else None


@contextmanager
def background_checkpoints(alias: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    """While the block runs, checkpoint the log from a helper thread, not at commits.

    Does nothing off SQLite, off WAL mode, or inside a transaction (a caller's atomic
    block commits once, at its end: there is nothing to spread).
    """
    connection = connections[alias]
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        yield
        return
    if str(_pragma(alias, "PRAGMA journal_mode")).lower() != "wal":
        yield
        return
    global _active
    previous = int(_pragma(alias, "PRAGMA wal_autocheckpoint") or 1000)
    _pragma(alias, "PRAGMA wal_autocheckpoint=0")
    with _active_lock:
        _active += 1
    stop = threading.Event()

    def checkpoint_until_stopped() -> None:
        try:
            while True:
                stopping = stop.wait(CHECKPOINT_PERIOD_SECONDS)
                _pragma(alias, "PRAGMA wal_checkpoint(PASSIVE)")
                if stopping:
                    return
        except Exception:  # a checkpoint left undone is done by the next commit
            logger.exception("background WAL checkpoint failed")
        finally:
            connections[alias].close()

    # In a copy of this context: its log lines belong to the sync that started it.
    helper = threading.Thread(
        target=contextvars.copy_context().run,
        args=(checkpoint_until_stopped,),
        name="wal-checkpoint",
        daemon=True,
    )
    helper.start()
    try:
        yield
    finally:
        with _active_lock:
            _active -= 1
        stop.set()
        helper.join()
        _pragma(alias, f"PRAGMA wal_autocheckpoint={previous}")
