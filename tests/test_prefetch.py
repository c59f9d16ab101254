"""The page prefetcher: order, errors in their place, and `ready()` never waiting."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from jobcenter.sync.prefetch import prefetched


def test_pages_arrive_in_order_and_an_error_after_the_pages_before_it() -> None:
    def pages() -> Iterator[int]:
        yield 1
        yield 2
        raise RuntimeError("page 3 failed")

    seen = []
    with prefetched(pages()) as fetched, pytest.raises(RuntimeError, match="page 3"):
        for page in fetched:
            seen.append(page)
    assert seen == [1, 2]


def test_ready_says_whether_a_page_is_here_without_waiting_for_one() -> None:
    release = threading.Event()

    def pages() -> Iterator[int]:
        yield 1
        release.wait(60)
        yield 2
        raise RuntimeError("no page 3")

    with prefetched(pages()) as fetched:
        assert next(fetched) == 1
        assert not fetched.ready()  # page 2 is not fetched yet: no wait, no page
        release.set()
        while not fetched.ready():
            threading.Event().wait(0.01)
        assert next(fetched) == 2
        threading.Event().wait(0.1)
        assert not fetched.ready()  # an error waiting is not a page
        with pytest.raises(RuntimeError):
            next(fetched)


def test_the_end_is_not_ready_and_stopping_early_stops_the_helper() -> None:
    made = []

    def pages() -> Iterator[int]:
        for n in range(1000):
            made.append(n)
            yield n

    with prefetched(pages(), ahead=2) as fetched:
        assert next(fetched) == 0
    assert len(made) <= 5  # stopped before fetching on
    with prefetched(iter([7])) as fetched:
        assert list(fetched) == [7]
        assert not fetched.ready()


def test_spare_runs_in_the_helper_only_on_pages_made_while_the_consumer_is_behind() -> None:
    helper_threads = set()
    spared = threading.Event()

    def spare(page: dict[str, int]) -> None:
        helper_threads.add(threading.current_thread().name)
        page["spared"] = 1
        spared.set()

    # A consumer that starts late: two pages fill the queue, the third waits for room.
    with prefetched(iter([{"n": n} for n in range(4)]), ahead=2, spare=spare) as fetched:
        assert spared.wait(60)
        seen = list(fetched)
    assert [page["n"] for page in seen] == [0, 1, 2, 3]
    assert [page.get("spared", 0) for page in seen[:3]] == [0, 0, 1]  # handed over after
    assert helper_threads == {"page-prefetch"}

    # A consumer that keeps up: the queue is never full, nothing is spared.
    taken = threading.Semaphore(0)

    def paced() -> Iterator[dict[str, int]]:
        for n in range(5):
            yield {"n": n}
            taken.acquire(timeout=60)  # the next page only once this one was taken

    with prefetched(paced(), ahead=2, spare=spare) as fetched:
        kept_up = []
        for page in fetched:
            kept_up.append(page)
            taken.release()
    assert [page.get("spared", 0) for page in kept_up] == [0] * 5
