"""Fetch the next page while the current one is written.

A sync alternates between waiting for the provider and writing to the database; the
two use different resources (the provider's servers and the network, this process's
database connection), so overlapping them makes a sync cost about the larger of the
two instead of their sum. The provider's iterator runs in one helper thread, a bounded
queue ahead of the consumer: pages still arrive in order, an exception arrives after
the pages before it (as without the thread), and a consumer that stops early stops the
helper before the next request.

`ready()` says, without waiting, whether the next page has already arrived: the sync
writes pages that are waiting in the same transaction (fewer commits), and commits
before it would wait for the provider.

`spare(page)`, when given, runs in the helper on a page it produced while the queue is
full, before it waits for room: the consumer is behind then, so work it would do for
that page costs no time in the helper. The page is handed over only afterwards.

The helper runs in a copy of the consumer's context (contextvars), so what the sync set
there (the ids its log lines carry) holds in the helper too.

Called inside an outer transaction (a caller's atomic block, a test's), pages are
produced inline instead: the helper's own database connection (the rate limiter's
buckets) could neither see that transaction's rows nor get past its locks.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from django.db import connection, connections

T = TypeVar("T")
_DONE = object()
_NOTHING = object()


class Prefetched(Generic[T]):
    """Iterate `pages` in order, producing up to `ahead` of them in a helper thread."""

    def __init__(
        self, pages: Iterator[T], ahead: int = 2, spare: Callable[[T], None] | None = None
    ) -> None:
        self.inline: Iterator[T] | None = pages if connection.in_atomic_block else None
        self.handoff: queue.Queue[object] = queue.Queue(maxsize=ahead)
        self.spare = spare
        self.stop = threading.Event()
        self.peeked: object = _NOTHING
        self.worker: threading.Thread | None = None
        if self.inline is None:
            # In a copy of this thread's context: a new thread starts with an empty one,
            # and the helper's log lines (the provider's requests) belong to this sync
            # (jobcenter/logcontext.py).
            context = contextvars.copy_context()
            self.worker = threading.Thread(
                target=context.run, args=(self.produce, pages), name="page-prefetch", daemon=True
            )
            self.worker.start()

    def put(self, item: object) -> bool:
        while not self.stop.is_set():
            try:
                self.handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce(self, pages: Iterator[T]) -> None:
        try:
            for page in pages:
                if self.spare is not None and self.handoff.full():
                    self.spare(page)  # the consumer is behind: its work, done here
                if not self.put(page):
                    return
            self.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there in order
            self.put(exc)
        finally:
            # The rate limiter may have used this thread's own database connection.
            connections.close_all()

    def __iter__(self) -> Prefetched[T]:
        return self

    def __next__(self) -> T:
        if self.inline is not None:
            return next(self.inline)
        if self.peeked is not _NOTHING:
            item, self.peeked = self.peeked, _NOTHING
        else:
            item = self.handoff.get()
        if item is _DONE:
            self.peeked = _DONE  # and so on every later call
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        return item  # type: ignore[return-value]

    def ready(self) -> bool:
        """Whether the next page is here already (not an error, not the end)."""
        if self.inline is not None:
            return False
        if self.peeked is _NOTHING:
            try:
                self.peeked = self.handoff.get_nowait()
            except queue.Empty:
                return False
        return self.peeked is not _DONE and not isinstance(self.peeked, BaseException)

    def close(self) -> None:
        """Stop the helper (before its next request) and wait for it."""
        self.stop.set()
        if self.worker is not None:
            self.worker.join()

    def __enter__(self) -> Prefetched[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prefetched(
    pages: Iterator[T], ahead: int = 2, spare: Callable[[T], None] | None = None
) -> Prefetched[T]:
    """`pages` fetched ahead in a helper thread; use in a `with` block, so it stops."""
    return Prefetched(pages, ahead, spare)
