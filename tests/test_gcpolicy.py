"""fewer_collections: the collector's threshold raised while syncs run, then restored."""

from __future__ import annotations

import gc
import threading

import pytest

from jobcenter.sync.engine import sync_account
from jobcenter.sync.gcpolicy import SYNC_GEN0_THRESHOLD, fewer_collections
from tests.factories import sandbox_account


@pytest.fixture
def default_thresholds():
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


def test_the_threshold_is_raised_inside_and_restored_after(default_thresholds) -> None:
    with fewer_collections():
        assert gc.get_threshold() == (SYNC_GEN0_THRESHOLD, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_an_error_inside_still_restores_it(default_thresholds) -> None:
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("the sync failed")
    assert gc.get_threshold() == (700, 10, 10)


def test_overlapping_syncs_restore_only_when_the_last_one_leaves(default_thresholds) -> None:
    first_inside, second_inside, first_left = (
        threading.Event(),
        threading.Event(),
        threading.Event(),
    )
    seen: list[tuple[int, ...]] = []

    def second() -> None:
        first_inside.wait()
        with fewer_collections():
            second_inside.set()
            first_left.wait()
            seen.append(gc.get_threshold())  # the first one has left: still raised

    worker = threading.Thread(target=second)
    worker.start()
    with fewer_collections():
        first_inside.set()
        second_inside.wait()
    first_left.set()
    worker.join()
    assert seen == [(SYNC_GEN0_THRESHOLD, 10, 10)]
    assert gc.get_threshold() == (700, 10, 10)


def test_a_higher_threshold_or_a_disabled_collector_is_left_alone() -> None:
    before = gc.get_threshold()
    try:
        for setting in [(100_000, 10, 10), (0, 10, 10)]:
            gc.set_threshold(*setting)
            with fewer_collections():
                assert gc.get_threshold() == setting
            assert gc.get_threshold() == setting
    finally:
        gc.set_threshold(*before)


@pytest.mark.django_db(transaction=True)
def test_a_sync_runs_with_the_raised_threshold(sandbox, default_thresholds) -> None:
    account, _ = sandbox_account(sandbox, "klaviyo", seed=5, jobs_per_kind=2)
    during: list[int] = []
    run = sync_account(account.pk, on_progress=lambda _text: during.append(gc.get_threshold()[0]))
    assert run.outcome == "succeeded", run.error
    assert during and set(during) == {SYNC_GEN0_THRESHOLD}
    assert gc.get_threshold() == (700, 10, 10)
