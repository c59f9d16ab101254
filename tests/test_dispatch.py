"""The dispatcher (jobcenter/tasks.py): what one cycle queues, the loop and its baton, and
the sweep bookkeeping that makes a lost task cost one cycle rather than an interval.

Where only the queueing is under test, `enqueue_sync` and `async_task` are replaced by a
recorder (the `queued` fixture); elsewhere tasks run inline (Q_CLUSTER sync=True).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connections
from django.utils import timezone

from jobcenter import tasks
from jobcenter.models import DispatchBaton, Job, ProviderAccount, SyncRun
from jobcenter.sync.engine import sync_account
from jobcenter.sync.lease import Lease
from tests.factories import sandbox_account
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

Queued = list[tuple[str, int]]


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> Queued:
    """("sweep" | "hot", account id) of each task the dispatcher queues, in order; none runs."""
    calls: Queued = []

    def enqueue_sync(account_id: int, trigger: str = "manual") -> str:
        assert trigger == "schedule"
        calls.append(("sweep", account_id))
        return "task"

    def async_task(func: str, *args: Any, **kwargs: Any) -> str:
        assert func == "jobcenter.tasks.run_hot_pass"
        calls.append(("hot", args[0]))
        return "task"

    monkeypatch.setattr(tasks, "enqueue_sync", enqueue_sync)
    monkeypatch.setattr(tasks, "async_task", async_task)
    return calls


def account(sandbox, name: str, *, moving: bool = True, **fields: Any) -> ProviderAccount:
    """A Klaviyo sandbox account not due for a sweep, with one unfinished job (`moving`)
    or one finished job; `fields` set on its row."""
    made, _ = sandbox_account(sandbox, "klaviyo", jobs_per_kind=0, name=name)
    Job.objects.create(
        account=made,
        provider=made.provider,
        kind="profile-bulk-import-job",
        external_id=f"{name}-job",
        status="running" if moving else "succeeded",
        is_terminal=not moving,
    )
    fields = {"next_sync_at": timezone.now() + timedelta(hours=1), **fields}
    ProviderAccount.objects.filter(pk=made.pk).update(**fields)
    return ProviderAccount.objects.get(pk=made.pk)


def test_one_cycle_queues_due_sweeps_and_hot_passes_of_free_moving_accounts(
    sandbox, queued: Queued
) -> None:
    now = timezone.now()
    past, future = now - timedelta(minutes=1), now + timedelta(minutes=5)
    due = account(sandbox, "due", next_sync_at=past)
    hot = account(sandbox, "hot")
    account(sandbox, "idle", moving=False)
    account(sandbox, "leased", lease_owner="a sweep", lease_until=future)
    account(sandbox, "blocked", blocked_until=future, next_sync_at=past)
    account(sandbox, "disabled", enabled=False, next_sync_at=past)
    account(sandbox, "hot later", hot_next_at=future)
    gone = account(sandbox, "gone")
    Job.objects.filter(account=gone).update(gone_at=now)

    # The due account has unfinished jobs too: its sweep refreshes them, no pass beside
    # it (a pass would race the sweep for the lease and have it skipped).
    assert tasks.dispatch_once(now) == 2
    assert queued == [("sweep", due.pk), ("hot", hot.pk)]
    for each in (due, hot):
        each.refresh_from_db()
        assert each.hot_next_at == now + timedelta(seconds=15)
    assert tasks.dispatch_once(now) == 0  # each claim moved on: nothing is due twice
    assert tasks.dispatch_once(now + timedelta(seconds=14)) == 0
    assert tasks.dispatch_once(now + timedelta(seconds=15)) == 2  # one hot interval on
    assert sorted(queued[2:]) == sorted([("hot", due.pk), ("hot", hot.pk)])


@pytest.mark.parametrize("lane", ["sweep", "hot"])
def test_two_dispatchers_at_one_instant_queue_each_account_once(
    sandbox, queued: Queued, monkeypatch: pytest.MonkeyPatch, lane: str
) -> None:
    now = timezone.now()
    fields = {"next_sync_at": now - timedelta(minutes=1)} if lane == "sweep" else {}
    accounts = [account(sandbox, f"{lane} {n}", **fields) for n in range(3)]
    # The second dispatcher runs while the first queues its first task, so the first
    # then claims the rows it read before the second moved them on.
    record = tasks.enqueue_sync if lane == "sweep" else tasks.async_task
    interleaved: list[int] = []

    def first_queue(*args: Any, **kwargs: Any) -> str:
        if not interleaved:
            interleaved.append(-1)  # the second dispatcher's own queueing is not nested
            interleaved[0] = tasks.dispatch_once(now)
        return record(*args, **kwargs)

    monkeypatch.setattr(tasks, "enqueue_sync" if lane == "sweep" else "async_task", first_queue)
    first = tasks.dispatch_once(now)
    assert (first, interleaved[0]) == (1, 2)
    assert sorted(queued) == sorted((lane, a.pk) for a in accounts)


def test_hot_seconds_zero_turns_the_hot_lane_off(sandbox, queued: Queued, settings) -> None:
    settings.JOBCENTER_HOT_SECONDS = 0
    now = timezone.now()
    due = account(sandbox, "due", next_sync_at=now - timedelta(minutes=1))
    account(sandbox, "moving")
    assert tasks.dispatch_once(now) == 1
    assert queued == [("sweep", due.pk)]


def test_a_sweep_lost_before_it_started_is_queued_again_after_the_lease_time(
    sandbox, queued: Queued, settings
) -> None:
    now = timezone.now()
    due = account(sandbox, "due", moving=False, next_sync_at=now - timedelta(minutes=1))
    assert tasks.dispatch_once(now) == 1  # queued; its worker dies before it starts
    lease = timedelta(seconds=settings.JOBCENTER_LEASE_SECONDS)
    assert tasks.dispatch_once(now + lease - timedelta(seconds=1)) == 0
    assert tasks.dispatch_once(now + lease) == 1
    assert queued == [("sweep", due.pk)] * 2


def test_skip_run_makes_the_account_due_again_once_the_lease_is_free(
    sandbox, queued: Queued
) -> None:
    busy = account(sandbox, "busy")
    assert Lease(busy.pk, "another worker").acquire(sweep=False)
    run = sync_account(busy.pk)
    assert run.outcome == "skipped"
    busy.refresh_from_db()
    assert run.started_at <= busy.next_sync_at <= timezone.now()  # due again
    assert tasks.dispatch_once(timezone.now()) == 0  # but leased: passed over
    assert tasks.dispatch_once(busy.lease_until + timedelta(seconds=1)) == 1
    assert queued == [("sweep", busy.pk)]


def test_a_sweep_that_starts_is_due_behind_its_lease_and_one_that_ends_an_interval_on(
    sandbox, queued: Queued
) -> None:
    dead = account(sandbox, "dead worker")
    before = timezone.now()
    assert Lease(dead.pk, "a sweep").acquire()  # sweep=True: what a starting sweep does
    dead.refresh_from_db()
    assert before <= dead.next_sync_at <= timezone.now()
    assert tasks.dispatch_once(timezone.now()) == 0  # leased: passed over, hot lane too
    after_lease = dead.lease_until + timedelta(seconds=1)
    assert tasks.dispatch_once(after_lease) == 1  # its worker died: one cycle on
    assert tasks.dispatch_once(after_lease) == 0
    assert queued == [("sweep", dead.pk)]

    done = account(sandbox, "done", sync_interval_minutes=5)
    run = sync_account(done.pk)
    assert run.outcome == "succeeded", run.error
    done.refresh_from_db()
    # Five minutes after it started, less half a dispatch cycle: the dispatch that
    # queued it, five minutes on, finds it due.
    cycle = timedelta(seconds=settings.JOBCENTER_DISPATCH_SECONDS)
    assert done.next_sync_at == run.started_at + timedelta(minutes=5) - cycle / 2


def test_inline_cycles_sweep_a_due_account_then_refresh_it_in_the_hot_lane(sandbox) -> None:
    made, described = sandbox_account(sandbox, "klaviyo", jobs_per_kind=0)
    sid = described["id"]
    ids = sandbox.control(
        sid,
        "create_jobs",
        kind="profile-bulk-import-job",
        queued_seconds=10,
        processing_seconds=600,
    )["ids"]
    assert tasks.dispatch_once() == 1  # tasks run inline: the sweep ran
    assert list(SyncRun.objects.filter(account=made).values_list("trigger", flat=True)) == [
        "schedule"
    ]
    made.refresh_from_db()
    assert tasks.dispatch_once(made.hot_next_at - timedelta(seconds=1)) == 0
    sandbox.clock(sid, advance=60)
    Job.objects.filter(account=made).update(last_checked_at=timezone.now() - timedelta(minutes=1))
    now = made.hot_next_at  # a hot interval after the sweep was queued
    assert tasks.dispatch_once(now) == 1  # not due for a sweep: the hot pass ran
    hot = SyncRun.objects.get(account=made, trigger="hot")
    assert hot.jobs_changed == 1
    assert Job.objects.get(account=made, external_id=ids[0]).provider_status == "processing"
    made.refresh_from_db()
    assert made.hot_next_at == now + timedelta(seconds=15)


def run_loop(name: str, results: dict[str, int]) -> threading.Thread:
    """`dispatch_due_syncs` in a thread named `name`; its return value lands in results."""

    def target() -> None:
        try:
            results[name] = tasks.dispatch_due_syncs()
        finally:
            connections.close_all()

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def cycles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The thread name of each dispatch cycle, in order (the cycles run as they are)."""
    names: list[str] = []
    real: Callable[[datetime | None], int] = tasks.dispatch_once

    def counted(now: datetime | None = None) -> int:
        names.append(threading.current_thread().name)
        return real(now)

    monkeypatch.setattr(tasks, "dispatch_once", counted)
    return names


@pytest.fixture
def looping(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings under which `dispatch_due_syncs` loops: a broker, workers, 1 s cycles."""
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False, "workers": 4}
    settings.JOBCENTER_DISPATCH_SECONDS = 1
    monkeypatch.setattr(tasks, "LOOP_LIFETIME_SECONDS", 120)  # the baton ends them first


def test_a_loop_stops_at_its_next_cycle_once_a_newer_loop_takes_the_baton(
    sandbox, queued: Queued, cycles: list[str], looping: None
) -> None:
    due = account(sandbox, "due", next_sync_at=timezone.now() - timedelta(minutes=1))
    results: dict[str, int] = {}
    first = run_loop("first", results)
    wait_for(lambda: cycles.count("first") >= 2, timeout=60, what="the first loop's cycles")
    second = run_loop("second", results)
    wait_for(lambda: "second" in cycles, timeout=60, what="the second loop's first cycle")
    at_takeover = cycles.count("first")
    first.join(timeout=60)
    assert not first.is_alive()
    assert second.is_alive()  # it holds the baton and runs on
    assert cycles.count("first") <= at_takeover + 1
    # The next Schedule run would take it in turn.
    DispatchBaton.objects.filter(name=tasks.BATON).update(owner="the next loop")
    second.join(timeout=60)
    assert not second.is_alive()
    # Many cycles, one claim: the due account was queued once.
    assert queued == [("sweep", due.pk)]
    assert results["first"] + results["second"] == 1


def test_with_dispatch_seconds_zero_one_call_dispatches_once(
    sandbox, queued: Queued, cycles: list[str], looping: None, settings
) -> None:
    settings.JOBCENTER_DISPATCH_SECONDS = 0
    due = account(sandbox, "due", next_sync_at=timezone.now() - timedelta(minutes=1))
    assert tasks.dispatch_due_syncs() == 1
    assert cycles == [threading.current_thread().name]
    assert queued == [("sweep", due.pk)]
    assert not DispatchBaton.objects.exists()
