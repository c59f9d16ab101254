"""Fetch the next page while the current one is written.

A sync alternates between waiting for the provider and writing to the database; the
two use different resources (the provider's servers and the network, this process's
database connection), so overlapping them makes a sync cost about the larger of the
two instead of their sum. The provider's iterator runs in one helper thread, a bounded
queue ahead of the consumer: pages still arrive in order, an exception arrives after
the pages before it (as without the thread), and a consumer that stops early stops the
helper before the next request.

Called inside an outer transaction (a caller's atomic block, a test's), pages are
produced inline instead: the helper's own database connection (the rate limiter's
buckets) could neither see that transaction's rows nor get past its locks.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

from django.db import connection, connections

T = TypeVar("T")
_DONE = object()


def prefetched(pages: Iterator[T], ahead: int = 2) -> Iterator[T]:
    """Yield `pages` in order, producing up to `ahead` of them in a helper thread."""
    if connection.in_atomic_block:
        yield from pages
        return
    handoff: queue.Queue[object] = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for page in pages:
                if not put(page):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there in order
            put(exc)
        finally:
            # The rate limiter may have used this thread's own database connection.
            connections.close_all()

    worker = threading.Thread(target=produce, name="page-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()
