"""Scheduling and concurrency with real processes: qcluster, leases, SIGKILL, rate limits."""

from __future__ import annotations

import os
import signal
import threading
from datetime import timedelta

import pytest
from django.db import close_old_connections
from django.utils import timezone
from django_q.tasks import async_task

from jobcenter.models import Job, ProviderAccount, SyncRun
from jobcenter.sync.engine import sync_account
from jobcenter.tasks import dispatch_due_syncs, ensure_schedule
from tests.factories import local_jobs, sandbox_account
from tests.processes import start_command, stop, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_real_qcluster_runs_the_schedule_for_due_accounts_only(sandbox) -> None:
    now = timezone.now()
    due, _ = sandbox_account(sandbox, "klaviyo", seed=1, jobs_per_kind=2, name="due")
    later, _ = sandbox_account(sandbox, "elasticpath", seed=1, jobs_per_kind=2, name="later")
    off, _ = sandbox_account(sandbox, "klaviyo", seed=2, jobs_per_kind=2, name="off")
    ProviderAccount.objects.filter(pk=due.pk).update(next_sync_at=now - timedelta(minutes=1))
    ProviderAccount.objects.filter(pk=later.pk).update(next_sync_at=now + timedelta(hours=1))
    ProviderAccount.objects.filter(pk=off.pk).update(
        enabled=False, next_sync_at=now - timedelta(minutes=1)
    )
    ensure_schedule()
    ensure_schedule()  # idempotent: still one schedule

    cluster = start_command("qcluster", JOBCENTER_Q_WORKERS="1")
    try:
        # django-q2's scheduler first looks at schedules about 30 s after start.
        wait_for(
            lambda: SyncRun.objects.filter(account=due, outcome="succeeded").exists(),
            timeout=90,
            what="the scheduled sync of the due account",
        )
    finally:
        output = stop(cluster)
    assert Job.objects.filter(account=due).count() == 26, output[-2000:]
    assert not SyncRun.objects.filter(account__in=[later, off]).exists()
    due.refresh_from_db()
    assert due.next_sync_at > now  # moved on by the dispatcher
    run = SyncRun.objects.get(account=due)
    assert run.trigger == "schedule"


def test_blocked_and_disabled_accounts_are_not_dispatched(sandbox) -> None:
    now = timezone.now()
    ok, _ = sandbox_account(sandbox, "klaviyo", seed=3, jobs_per_kind=1, name="ok")
    blocked, _ = sandbox_account(sandbox, "klaviyo", seed=4, jobs_per_kind=1, name="blocked")
    ProviderAccount.objects.filter(pk=blocked.pk).update(blocked_until=now + timedelta(minutes=5))
    assert dispatch_due_syncs() == 1  # tests run tasks inline (sync: True)
    dispatch_due_syncs()  # may queue a hot pass of ok's unfinished jobs, not a sweep
    assert SyncRun.objects.filter(account=ok).exclude(trigger="hot").count() == 1
    assert not SyncRun.objects.filter(account=blocked).exists()


def test_four_syncs_started_together_one_works_three_are_skipped(sandbox) -> None:
    account, _ = sandbox_account(sandbox, "klaviyo", seed=5, jobs_per_kind=60)
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def worker() -> None:
        barrier.wait()
        try:
            run = sync_account(account.pk)
            outcomes.append(f"{run.outcome}:{run.error}")
        finally:
            close_old_connections()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == sorted(["succeeded:"] + ["skipped:skipped: already running"] * 3), (
        outcomes
    )
    assert Job.objects.filter(account=account).count() == 13 * 60


def test_a_worker_killed_mid_sync_loses_nothing_and_the_next_run_finishes(sandbox) -> None:
    account, described = sandbox_account(sandbox, "klaviyo", seed=6, jobs_per_kind=300)
    # Slow enough to be caught half-way on a busy machine too: 4 requests a second (one
    # page of 100 each), so the 39 pages take about 10 s and the kill, sent once three
    # pages are in, has seconds to spare.
    fast = account.rate_limits
    ProviderAccount.objects.filter(pk=account.pk).update(rate_limits={"*": [[4, 1]]})
    worker = start_command("sync_jobs", "--account", account.name, JOBCENTER_LEASE_SECONDS="3")
    try:
        wait_for(
            lambda: Job.objects.filter(account=account).count() >= 300,
            timeout=60,
            what="the first pages to be written",
            interval=0.05,
        )
    finally:
        stop(worker, signal.SIGKILL)
    written = Job.objects.filter(account=account).count()
    assert 0 < written < 13 * 300, "the kill did not land mid-sync"
    ProviderAccount.objects.filter(pk=account.pk).update(rate_limits=fast)
    killed = SyncRun.objects.get(account=account)
    assert killed.outcome == "running"  # nothing closed it: the worker died

    # The lease it held runs out after 3 s; then the next run resumes from the saved page.
    wait_for(
        lambda: ProviderAccount.objects.get(pk=account.pk).lease_until < timezone.now(),
        timeout=60,
        what="the dead worker's lease to expire",
    )
    run = sync_account(account.pk)
    assert run.outcome == "succeeded", run.error
    assert run.jobs_created == 13 * 300 - written  # resumed, not started over
    killed.refresh_from_db()
    assert killed.outcome == "failed"
    assert killed.error.startswith("interrupted")
    state = sandbox.state(described["id"])
    assert set(local_jobs(account)) == {(j["kind"], j["id"]) for j in state["jobs"]}


def test_two_clusters_share_one_provider_quota_and_never_exceed_it(sandbox) -> None:
    # Two accounts holding the same Elastic Path store's credentials draw on one quota.
    first, described = sandbox_account(
        sandbox, "elasticpath", seed=7, jobs_per_kind=250, rate_limits=True, requests_per_second=25
    )
    second, _ = sandbox_account(
        sandbox, "elasticpath", name="same store", credentials=described["credentials"]
    )
    # The clients keep to 18 a second of the store's 25 (a token bucket of 16.2 a second
    # and a burst of 1: at most 18 tokens in any second). A request may reach the store
    # later than its token said, but each of the four threads that send (a listing and
    # an error fetcher per sync) has one request in flight at a time: at most 4 late in
    # any second, 22 in all. One quota can never be exceeded, whatever the load; two
    # quotas would offer 36 a second.
    ProviderAccount.objects.filter(pk__in=[first.pk, second.pk]).update(
        rate_limits={"*": [[18, 1]]}
    )
    since = sandbox.requests(described["id"])[-1]["seq"] if sandbox.requests(described["id"]) else 0
    violations_before = sandbox.stats()["accounts"][described["id"]]["rate_limit_violations"]

    clusters = [start_command("qcluster", JOBCENTER_Q_WORKERS="1") for _ in range(2)]
    try:
        # Through the broker for real (the test settings would run a task inline).
        for account in (first, second):
            async_task("jobcenter.tasks.run_sync", account.pk, "api", sync=False)
        wait_for(
            lambda: (
                SyncRun.objects.filter(account__in=[first, second], outcome="succeeded").count()
                == 2
            ),
            timeout=120,
            what="both syncs",
        )
    finally:
        for cluster in clusters:
            stop(cluster)

    stats = sandbox.stats()["accounts"][described["id"]]
    assert stats["rate_limit_violations"] == violations_before == 0
    log = [
        e for e in sandbox.requests(described["id"], since=since) if e["path"].startswith("/pcm")
    ]
    assert len(log) >= 60
    runs = SyncRun.objects.filter(account__in=[first, second])
    assert {r.outcome for r in runs} == {"succeeded"}


def test_a_worker_killed_mid_sync_delays_its_account_by_the_lease_plus_one_dispatch_cycle(
    sandbox,
) -> None:
    """The dispatcher loop in a real cluster: the sweep's worker is SIGKILLed; the next
    sweep of its account starts once the lease expires, within a dispatch cycle, though
    its interval is ten minutes (before the loop, the kill cost the whole interval)."""
    lease, cycle = 5, 2
    account, _ = sandbox_account(sandbox, "klaviyo", seed=8, jobs_per_kind=300)
    fast = account.rate_limits
    # 4 requests a second: the 39 pages take about 10 s, so the kill lands mid-sync.
    ProviderAccount.objects.filter(pk=account.pk).update(
        sync_interval_minutes=10, next_sync_at=None, rate_limits={"*": [[4, 1]]}
    )
    ensure_schedule()
    cluster = start_command(
        "qcluster",
        JOBCENTER_Q_WORKERS="3",
        JOBCENTER_DISPATCH_SECONDS=str(cycle),
        JOBCENTER_LEASE_SECONDS=str(lease),
        JOBCENTER_HOT_SECONDS="0",
    )
    try:
        # django-q2's scheduler first looks at schedules about 30 s after start.
        wait_for(
            lambda: Job.objects.filter(account=account).count() >= 300,
            timeout=120,
            what="the first scheduled sweep's first pages",
            interval=0.05,
        )
        killed = SyncRun.objects.get(account=account, outcome="running")
        os.kill(killed.detail["pid"], signal.SIGKILL)
        killed_at = timezone.now()
        ProviderAccount.objects.filter(pk=account.pk).update(rate_limits=fast)
        held = ProviderAccount.objects.get(pk=account.pk)
        # Due at once, but behind the dead worker's lease: no duplicate while it holds.
        assert held.next_sync_at <= killed_at < held.lease_until
        wait_for(
            lambda: SyncRun.objects.filter(account=account, pk__gt=killed.pk).exists(),
            timeout=120,
            what="the next sweep of the account",
        )
    finally:
        output = stop(cluster)
    following = SyncRun.objects.filter(account=account, pk__gt=killed.pk).earliest("pk")
    assert following.trigger == "schedule", output[-2000:]
    assert following.started_at >= held.lease_until  # the lease kept it from a duplicate
    # The lease plus one cycle, with room for a loaded machine's worker to pick it up:
    # far from the ten-minute interval the kill used to cost.
    assert following.started_at - killed_at <= timedelta(seconds=lease + cycle + 20), output[-2000:]
    assert Job.objects.filter(account=account).count() >= 300
