"""`manage.py prune`: every table that grows loses exactly its old rows, keeps what is read.

Each test seeds a small Job Center with `bench.seed` (jobs, snapshots) and
`bench.seed_growth` (the other tables, over 400 days), works out in Python, from the rows
themselves, which rows the table's rule removes, then prunes and compares ids.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from django.utils.module_loading import import_string
from django_q.models import OrmQ, Schedule, Task

from bench.seed import SeedResult, seed
from bench.seed_growth import SILENT_DAYS, GrowthResult, seed_growth
from jobcenter.models import (
    AlertDelivery,
    AlertEvent,
    Job,
    JobError,
    JobSnapshot,
    ProviderAccount,
    SyncRun,
)
from jobcenter.models.audit import AppendOnlyError, AuditRecord
from jobcenter.sync.pruning import (
    PRUNE_SCHEDULE,
    PRUNE_TASK,
    TARGET_NAMES,
    Outcome,
    ensure_prune_schedule,
    prune,
)
from jobcenter.tasks import TASKS
from tests.test_retention import expected_survivors

DAYS = 400  # the seeded history
RETENTION = {  # the documented defaults; snapshots' is off by default
    "JOBCENTER_SNAPSHOT_RETENTION_DAYS": 120,
    "JOBCENTER_SYNC_RUN_RETENTION_DAYS": 30,
    "JOBCENTER_GONE_ERROR_RETENTION_DAYS": 30,
    "JOBCENTER_ALERT_RETENTION_DAYS": 90,
    "JOBCENTER_TASK_RETENTION_DAYS": 7,
    "JOBCENTER_AUDIT_RETENTION_DAYS": 365,
}
SUCCESSFUL = {"succeeded", "partial"}
LIVE = {"pending", "sending", "retrying"}
EVENT_STATES = {
    "job_failed": {"failed"},
    "job_partially_failed": {"partially_failed"},
    "job_stuck": {"queued", "running"},
}


@dataclass
class World:
    seeded: SeedResult
    growth: GrowthResult

    @property
    def now(self) -> datetime:
        return self.seeded.now

    def cutoff(self, setting: str) -> datetime:
        return self.now - timedelta(days=RETENTION[setting])


@pytest.fixture
def world(transactional_db: None) -> Iterator[World]:
    """A seeded database (bench.seed needs to commit itself: a transactional test)."""
    seeded = seed(300, accounts=4, small_jobs=20, days=DAYS, drop_indexes=False)
    growth = seed_growth(seeded, days=DAYS)
    with override_settings(**RETENTION, JOBCENTER_PRUNE_DAILY=False):
        yield World(seeded, growth)


def run(world: World, *only: str, **options: Any) -> dict[str, Outcome]:
    return {o.target.name: o for o in prune(only or None, now=world.now, **options)}


def ids(model: type, **filters: Any) -> set[Any]:
    return set(model.objects.filter(**filters).values_list("pk", flat=True))


def check(outcome: Outcome, before: set[Any], after: set[Any], goes: set[Any]) -> None:
    """Exactly `goes` went: the count reported, and every other row still there."""
    assert goes, "the seed gives this table something to prune"
    assert goes <= before
    assert outcome.result is not None
    assert outcome.result.deleted == len(goes)
    assert after == before - goes


# --- a test per table -----------------------------------------------------------------


def test_snapshots_keep_each_jobs_first_and_last(world: World) -> None:
    cutoff = world.cutoff("JOBCENTER_SNAPSHOT_RETENTION_DAYS")
    before = ids(JobSnapshot)
    keep = expected_survivors(cutoff)
    outcome = run(world, "snapshots")["snapshots"]
    check(outcome, before, ids(JobSnapshot), before - keep)
    old_kept = JobSnapshot.objects.filter(observed_at__lt=cutoff).count()
    assert old_kept  # ends of old jobs, kept whatever their age


def test_sync_runs_keep_each_accounts_latest_latest_success_and_running(world: World) -> None:
    cutoff = world.cutoff("JOBCENTER_SYNC_RUN_RETENTION_DAYS")
    runs = list(SyncRun.objects.values_list("id", "account_id", "started_at", "outcome"))
    latest: dict[int, tuple[datetime, int]] = {}
    latest_success: dict[int, int] = {}
    for pk, account, started, outcome in runs:
        latest[account] = max(latest.get(account, (started, pk)), (started, pk))
        if outcome in SUCCESSFUL:
            latest_success[account] = max(latest_success.get(account, 0), pk)
    protected = {key[1] for key in latest.values()} | set(latest_success.values())
    old = {pk for pk, _, started, _ in runs if started < cutoff}
    running = {pk for pk, *_, outcome in runs if outcome == "running"}
    before = {pk for pk, *_ in runs}

    outcome = run(world, "sync-runs")["sync-runs"]

    check(outcome, before, ids(SyncRun), old - protected - running)
    # What was protected is there, old as it is: the silent account's latest run (failed)
    # and its latest success, older still, and the run a dead worker left running.
    silent = SyncRun.objects.filter(account_id=world.growth.silent_account)
    latest_run, last_success = silent.order_by("-started_at", "-id")
    assert (latest_run.outcome, last_success.outcome in SUCCESSFUL) == ("failed", True)
    assert all(run.started_at < world.now - timedelta(days=SILENT_DAYS) for run in silent)
    assert SyncRun.objects.filter(outcome="running", started_at__lt=cutoff).count() == 1
    assert SyncRun.objects.filter(outcome="running", started_at__gte=cutoff).count() == 1


def test_error_records_go_only_with_jobs_gone_longer_than_the_age(world: World) -> None:
    cutoff = world.cutoff("JOBCENTER_GONE_ERROR_RETENTION_DAYS")
    gone_at = dict(Job.objects.values_list("id", "gone_at"))
    records = list(JobError.objects.values_list("id", "job_id", "fetched_at"))
    goes = {pk for pk, job, _ in records if gone_at[job] is not None and gone_at[job] < cutoff}
    before = {pk for pk, *_ in records}

    outcome = run(world, "error-records")["error-records"]

    check(outcome, before, ids(JobError), goes)
    # Kept: old records of jobs still there, and of jobs gone since the cutoff.
    assert JobError.objects.filter(job__gone_at__isnull=True, fetched_at__lt=cutoff).exists()
    assert JobError.objects.filter(job__gone_at__gte=cutoff, fetched_at__lt=cutoff).exists()


def events_that_go(cutoff: datetime) -> set[int]:
    """The ledger's rule worked out in Python: old, dispatched, delivery done, and either
    a later event of the same rule, event and job (or account), or the job left the state."""
    job_status = dict(Job.objects.values_list("id", "status"))
    delivery_status = dict(AlertDelivery.objects.values_list("id", "status"))
    events = list(
        AlertEvent.objects.values_list(
            "id", "rule_id", "account_id", "job_id", "event", "fired_at", "state", "delivery_id"
        )
    )

    def key(event: tuple) -> tuple:
        _, rule, account, job, name, *_ = event
        return (rule, name, "job", job) if job else (rule, name, "account", account)

    newest: dict[tuple, int] = {}
    for event in events:
        newest[key(event)] = max(newest.get(key(event), 0), event[0])
    goes = set()
    for event in events:
        pk, _, _, job, name, fired, state, delivery = event
        if fired >= cutoff or state != "dispatched":
            continue
        if delivery is not None and delivery_status[delivery] in LIVE:
            continue
        superseded = newest[key(event)] > pk
        if superseded or (job is not None and job_status[job] not in EVENT_STATES[name]):
            goes.add(pk)
    return goes


def test_alert_events_and_deliveries_keep_what_the_ledger_and_retries_need(
    world: World,
) -> None:
    cutoff = world.cutoff("JOBCENTER_ALERT_RETENTION_DAYS")
    events_before, deliveries_before = ids(AlertEvent), ids(AlertDelivery)
    events_go = events_that_go(cutoff)
    named_by_kept = set(
        AlertEvent.objects.exclude(pk__in=events_go)
        .filter(delivery__isnull=False)
        .values_list("delivery_id", flat=True)
    )
    deliveries_go = {
        pk
        for pk, created, status in AlertDelivery.objects.values_list("id", "created_at", "status")
        if created < cutoff and status in ("sent", "failed") and pk not in named_by_kept
    }

    silent = AlertEvent.objects.filter(job__isnull=True, account_id=world.growth.silent_account)
    newest_of_silent = silent.latest("id")
    assert newest_of_silent.fired_at < cutoff

    outcomes = run(world, "alert-events", "alert-deliveries")

    check(outcomes["alert-events"], events_before, ids(AlertEvent), events_go)
    check(outcomes["alert-deliveries"], deliveries_before, ids(AlertDelivery), deliveries_go)
    old = AlertEvent.objects.filter(fired_at__lt=cutoff)
    # Kept, old: the newest failed event of a job still failed (its alert is not sent
    # again), each account's newest, held and pending events, and retrying deliveries.
    assert old.filter(event="job_failed", job__status="failed").exists()
    assert silent.latest("id") == newest_of_silent
    assert old.filter(state__in=["held", "pending"]).exists()
    assert AlertDelivery.objects.filter(created_at__lt=cutoff, status="retrying").exists()
    assert AlertDelivery.objects.filter(created_at__lt=cutoff, status="pending").exists()
    assert not AlertEvent.objects.filter(
        delivery__isnull=True, state="dispatched", fired_at__lt=cutoff
    ).exists()  # no kept event lost its delivery


def test_task_rows_go_by_stopped_but_a_schedules_last_and_the_queue_stay(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    cutoff = world.cutoff("JOBCENTER_TASK_RETENTION_DAYS")
    queued_before = queue_length(monkeypatch)
    last_of_schedule = world.growth.schedule_task
    goes = ids(Task, stopped__lt=cutoff) - {last_of_schedule}
    before = ids(Task)

    outcome = run(world, "task-rows")["task-rows"]

    check(outcome, before, ids(Task), goes)
    kept = Task.objects.get(pk=last_of_schedule)
    assert kept.stopped < cutoff
    assert Task.objects.filter(success=False).exists()  # failures since the cutoff stay too
    assert queue_length(None) == queued_before


def queue_length(monkeypatch: pytest.MonkeyPatch | None) -> int:
    """Tasks waiting in the ORM broker's queue (one queued here when `monkeypatch`)."""
    if "redis" in settings.Q_CLUSTER:
        return 0  # the queue is in Redis, which the prune never reaches
    if monkeypatch is not None:
        from django_q.conf import Conf

        from jobcenter.tasks import enqueue_sync

        monkeypatch.setattr(Conf, "SYNC", False)  # queued, as in production
        enqueue_sync(SyncRun.objects.values_list("account_id", flat=True).first())
        assert OrmQ.objects.count() == 1
    return OrmQ.objects.count()


def test_audit_log_goes_only_by_its_own_longer_age_and_records_its_pruning(world: World) -> None:
    cutoff = world.cutoff("JOBCENTER_AUDIT_RETENTION_DAYS")
    goes = ids(AuditRecord, at__lt=cutoff)
    before = ids(AuditRecord)

    outcome = run(world, "audit")["audit"]

    after = ids(AuditRecord)
    pruning = AuditRecord.objects.get(pk__in=after - before)
    check(outcome, before, after - {pruning.pk}, goes)
    assert (pruning.action, pruning.model) == ("delete", "jobcenter.auditrecord")
    assert pruning.changes["deleted"] == len(goes)
    assert AuditRecord.objects.filter(at__lt=world.now - timedelta(days=300)).exists()
    with pytest.raises(AppendOnlyError):  # the model's own ways stay refused
        AuditRecord.objects.filter(pk=pruning.pk).delete()


# --- the run as a whole ---------------------------------------------------------------


def counts() -> dict[str, int]:
    return {
        "snapshots": JobSnapshot.objects.count(),
        "sync-runs": SyncRun.objects.count(),
        "error-records": JobError.objects.count(),
        "alert-events": AlertEvent.objects.count(),
        "alert-deliveries": AlertDelivery.objects.count(),
        "task-rows": Task.objects.count(),
        "audit": AuditRecord.objects.count(),
    }


def test_dry_run_deletes_nothing_and_counts_what_the_run_deletes(world: World) -> None:
    before = counts()
    dry = run(world, dry_run=True)
    assert counts() == before
    real = run(world)
    assert list(dry) == list(real) == list(TARGET_NAMES)
    deleted = {name: outcome.result.deleted for name, outcome in real.items() if outcome.result}
    assert {name: o.result.deleted for name, o in dry.items() if o.result} == deleted
    assert all(deleted.values())
    after = counts()
    after["audit"] -= 1  # the record of the audit log's own pruning
    assert after == {name: before[name] - deleted[name] for name in before}
    assert all(o.result.deleted == 0 for o in run(world).values() if o.result)


def test_batches_hold_at_most_batch_size_rows_each_in_its_own_transaction(world: World) -> None:
    deletes: list[tuple[str, bool]] = []

    def watch(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
        if sql.lstrip().upper().startswith("DELETE"):
            deletes.append((sql, connection.in_atomic_block))
        return execute(sql, *args)

    dry = run(world, "sync-runs", "task-rows", dry_run=True, batch_size=7)
    with connection.execute_wrapper(watch):
        real = run(world, "sync-runs", "task-rows", batch_size=7)
    for name, table in (("sync-runs", SyncRun), ("task-rows", Task)):
        result = real[name].result
        assert result is not None and result.deleted > 7
        assert result.batches == math.ceil(result.deleted / 7) == dry[name].result.batches
        own = [in_atomic for sql, in_atomic in deletes if table._meta.db_table in sql]
        assert own == [True] * result.batches  # one DELETE per batch, in a transaction


def test_zero_days_turns_a_table_off_and_only_picks_tables(world: World) -> None:
    before = counts()
    with override_settings(JOBCENTER_SYNC_RUN_RETENTION_DAYS=0):
        outcomes = run(world, "sync-runs", "error-records")
    assert outcomes["sync-runs"].result is None
    assert set(outcomes) == {"sync-runs", "error-records"}
    after = counts()
    assert after["sync-runs"] == before["sync-runs"]
    assert after["error-records"] < before["error-records"]
    assert {k: v for k, v in after.items() if k != "error-records"} == {
        k: v for k, v in before.items() if k != "error-records"
    }
    with pytest.raises(ValueError, match="unknown tables"):
        prune(["jobs"])


def test_command_reports_each_table_and_shows_progress_only_when_asked(world: World) -> None:
    out = StringIO()
    with override_settings(JOBCENTER_AUDIT_RETENTION_DAYS=0):
        call_command("prune", "--dry-run", "--batch-size", "50", stdout=out)
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == list(TARGET_NAMES)  # no progress lines
    assert lines[-1] == "audit: off (JOBCENTER_AUDIT_RETENTION_DAYS is 0)"
    assert lines[1].startswith("sync-runs: would delete ")
    assert "kept whatever their age: each account's latest run" in lines[1]
    assert counts()["sync-runs"] == world.growth.sync_runs

    out = StringIO()
    call_command("prune", "--only", "sync-runs", "--batch-size", "50", "-v", "2", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("  sync-runs: 1 batches, 50 deleted")  # progress, then the sum
    assert lines[-1].startswith("sync-runs: deleted ")
    assert counts()["sync-runs"] < world.growth.sync_runs


# --- the daily schedule ---------------------------------------------------------------


@pytest.mark.django_db
def test_setup_schedules_keeps_a_daily_prune_while_the_setting_is_on() -> None:
    with override_settings(JOBCENTER_PRUNE_DAILY=True):
        call_command("setup_schedules", stdout=StringIO())
        schedule = Schedule.objects.get(name=PRUNE_SCHEDULE)
        assert (schedule.func, schedule.schedule_type, schedule.repeats) == (
            PRUNE_TASK,
            Schedule.DAILY,
            -1,
        )
        assert PRUNE_TASK in TASKS
        now = timezone.now()
        assert now < schedule.next_run <= now + timedelta(days=1)
        assert (schedule.next_run.hour, schedule.next_run.minute) == (3, 0)
        moved = now + timedelta(hours=5)  # staff moved it: a second run keeps the time
        Schedule.objects.filter(pk=schedule.pk).update(next_run=moved)
        out = StringIO()
        call_command("setup_schedules", stdout=out)
        assert Schedule.objects.get(name=PRUNE_SCHEDULE).next_run == moved
        assert f"schedule {PRUNE_SCHEDULE!r}: daily" in out.getvalue()

    out = StringIO()
    call_command("setup_schedules", stdout=out)  # the setting off: the schedule goes
    assert not Schedule.objects.filter(name=PRUNE_SCHEDULE).exists()
    assert f"schedule {PRUNE_SCHEDULE!r}: off" in out.getvalue()
    removed = AuditRecord.objects.filter(model="django_q.schedule", action="delete")
    assert removed.get().actor == "command:setup_schedules"


@pytest.mark.django_db
def test_the_scheduled_task_prunes_by_the_settings() -> None:
    """The schedule's function, as django-q2's scheduler runs it (tasks run inline here)."""
    from django_q.brokers import get_broker
    from django_q.scheduler import scheduler

    account = ProviderAccount.objects.create(name="prune", provider="klaviyo", enabled=False)
    old = timezone.now() - timedelta(days=60)
    runs = [
        SyncRun.objects.create(account=account, trigger="schedule", started_at=old + timedelta(n))
        for n in range(3)
    ]
    SyncRun.objects.filter(pk__in=[r.pk for r in runs]).update(outcome="failed")
    with override_settings(JOBCENTER_PRUNE_DAILY=True, JOBCENTER_SYNC_RUN_RETENTION_DAYS=30):
        ensure_prune_schedule()
        Schedule.objects.filter(name=PRUNE_SCHEDULE).update(next_run=timezone.now())
        scheduler(broker=get_broker())
        assert import_string(PRUNE_TASK)()["sync-runs"] == 0  # the scheduler's run took them
    assert list(SyncRun.objects.filter(account=account)) == [runs[-1]]  # the latest stays
