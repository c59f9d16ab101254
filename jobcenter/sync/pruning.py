"""Retention of every table that grows: one prune, each table with its own age.

Each table is a `Target`: its setting (days; 0 keeps the table whole) and the rows that
go, older than the cutoff but not what Job Center still reads, which is kept whatever
its age (each target says what, `protects`):

- snapshots: each job's first and last, and its last before each alerting state (the
  episode of its alerts: without it a job still failed would alert again;
  `jobcenter.sync.retention`);
- sync runs: each account's latest run (the dashboard's sync health), its latest
  successful run (the episode of its account alerts: without it an account still
  failing would alert again), and runs still running;
- error records: only those of jobs gone from their provider longer than the age; a job
  still there (or back) keeps its records whatever their age. Its `error_count` stays;
- alert events: not yet dispatched ones (held for quiet hours, pending), those whose
  delivery is still being tried, and the newest event of each rule and job while the
  job is still in the event's state (failed, partly failed, stuck), or of each rule and
  account: the ledger is unique on them, and it is what stops the same alert being sent
  again (`jobcenter.alerts.ledger`);
- alert deliveries: pending, sending or retrying ones, and those a kept event names;
- task rows (django-q2's `Task`: successes and failures, by `stopped`): the last task of
  each schedule (its admin page shows it). The queue (`OrmQ`, Redis) is never touched;
  django-q2's `save_limit` (250) already caps successes, not failures;
- the audit log: nothing beyond its age, a longer one. Its model refuses deletes
  (`jobcenter.models.audit`); this prune is the one path that deletes records, through a
  plain QuerySet, and it leaves a record of its own saying how many went and before when.

No foreign key points at a sync run, an error record, a task row or an audit record, so
their deletes cascade nowhere; an event names its delivery (SET_NULL), hence the
deliveries of kept events stay.

Each table is deleted in short transactions (`delete_in_batches`): the snapshots by id
ranges as before, the others by `key_batches` of the rows that go. Alert events go
before deliveries, so a delivery whose events went can go in the same prune.
`jobcenter.tasks.prune_old_rows` runs `prune` daily from the schedule `setup_schedules`
keeps while JOBCENTER_PRUNE_DAILY is on (`ensure_prune_schedule`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from django_q.models import Schedule, Task

from jobcenter.alerts.ledger import JOB_EVENT_STATES, SUCCESSFUL_RUNS
from jobcenter.audit.context import current_actor
from jobcenter.models import (
    AlertDelivery,
    AlertDeliveryStatus,
    AlertEvent,
    AlertEventState,
    Job,
    JobError,
    SyncOutcome,
    SyncRun,
)
from jobcenter.models.audit import AuditAction, AuditRecord
from jobcenter.sync.retention import (
    PruneResult,
    delete_in_batches,
    id_ranges,
    key_batches,
    old_snapshots,
    snapshots_that_go,
)

PRUNE_TASK = "jobcenter.tasks.prune_old_rows"
PRUNE_SCHEDULE = "jobcenter: prune old rows"
PRUNE_HOUR_UTC = 3  # a new daily schedule's first run; staff may move it in the admin
LIVE_DELIVERIES = [
    AlertDeliveryStatus.PENDING,
    AlertDeliveryStatus.SENDING,
    AlertDeliveryStatus.RETRYING,
]


@dataclass(frozen=True)
class Target:
    """One table that grows: how old is old, and what goes of the old rows."""

    name: str  # what `--only` takes
    setting: str  # its age in days (0: off)
    rows: str  # what the rows are, for the report: "sync runs started"
    protects: str  # what stays whatever its age, for the report
    goes: Callable[[datetime], QuerySet]  # the rows to delete
    # Batches of id ranges over these rows' ids (older than the cutoff), else of the keys
    # of the rows that go.
    id_ranges_over: Callable[[datetime], QuerySet] | None = None

    @property
    def days(self) -> int:
        return int(getattr(settings, self.setting))

    def windows(self, cutoff: datetime, batch_size: int) -> Iterator[Q]:
        if self.id_ranges_over is not None:
            return id_ranges(self.id_ranges_over(cutoff), batch_size)
        return key_batches(self.goes(cutoff), batch_size)


# --- what goes, per table -----------------------------------------------------------------


def sync_runs_that_go(cutoff: datetime) -> QuerySet[SyncRun]:
    """Old finished runs with a later run of their account, and a later successful one
    when they succeeded (the ledger's episode of account alerts is the latest success)."""
    same_account = SyncRun.objects.filter(account_id=OuterRef("account_id"))
    later = same_account.filter(  # the dashboard's order: started, then id
        Q(started_at__gt=OuterRef("started_at"))
        | Q(started_at=OuterRef("started_at"), id__gt=OuterRef("id"))
    )
    later_success = same_account.filter(outcome__in=SUCCESSFUL_RUNS, id__gt=OuterRef("id"))
    return (
        SyncRun.objects.filter(started_at__lt=cutoff)
        .exclude(outcome=SyncOutcome.RUNNING)
        .filter(Exists(later))
        .filter(~Q(outcome__in=SUCCESSFUL_RUNS) | Exists(later_success))
    )


def alert_events_that_go(cutoff: datetime) -> QuerySet[AlertEvent]:
    """Old dispatched events whose delivery is done and that the ledger no longer needs:
    a later event of the same rule, event and job (or account) exists, or the job left
    the event's state (a return to it is a new episode)."""
    same_key = AlertEvent.objects.filter(
        rule_id=OuterRef("rule_id"), event=OuterRef("event"), id__gt=OuterRef("id")
    )
    later_for_job = same_key.filter(job_id=OuterRef("job_id"))
    later_for_account = same_key.filter(job__isnull=True, account_id=OuterRef("account_id"))
    still_in_state = Q()
    for event, states in JOB_EVENT_STATES.items():
        in_state = Job.objects.filter(pk=OuterRef("job_id"), status__in=states)
        still_in_state |= Q(event=event) & Exists(in_state)
    delivery_live = AlertDelivery.objects.filter(
        pk=OuterRef("delivery_id"), status__in=LIVE_DELIVERIES
    )
    return (
        AlertEvent.objects.filter(fired_at__lt=cutoff, state=AlertEventState.DISPATCHED)
        .exclude(Exists(delivery_live))
        .filter(
            Q(job__isnull=False) & (Exists(later_for_job) | ~still_in_state)
            | Q(job__isnull=True) & Exists(later_for_account)
        )
    )


def alert_deliveries_that_go(cutoff: datetime) -> QuerySet[AlertDelivery]:
    """Old deliveries that ended (sent, or failed for good) that no event kept names.

    Events that go do not count: a dry run then counts what the run deletes after the
    events, and a prune of deliveries alone leaves such events without theirs.
    """
    going = alert_events_that_go(cutoff).values("pk")
    named = AlertEvent.objects.filter(delivery_id=OuterRef("pk")).exclude(pk__in=going)
    return AlertDelivery.objects.filter(
        created_at__lt=cutoff,
        status__in=[AlertDeliveryStatus.SENT, AlertDeliveryStatus.FAILED],
    ).exclude(Exists(named))


def task_rows_that_go(cutoff: datetime) -> QuerySet[Task]:
    """django-q2's finished tasks stopped before the cutoff, but a schedule's last one."""
    last_of_schedules = Schedule.objects.filter(task__isnull=False).values("task")
    return Task.objects.filter(stopped__lt=cutoff).exclude(id__in=last_of_schedules)


def audit_records(cutoff: datetime) -> QuerySet[AuditRecord]:
    """Audit records written before the cutoff, through a plain QuerySet: the model's own
    refuses deletes, and this is the one path that may."""
    return models.QuerySet(model=AuditRecord).filter(at__lt=cutoff)


TARGETS: tuple[Target, ...] = (
    Target(
        "snapshots",
        "JOBCENTER_SNAPSHOT_RETENTION_DAYS",
        "snapshots observed",
        "each job's first and last, and its last before each alerting state (the "
        "episode of its alerts)",
        snapshots_that_go,
        id_ranges_over=old_snapshots,
    ),
    Target(
        "sync-runs",
        "JOBCENTER_SYNC_RUN_RETENTION_DAYS",
        "sync runs started",
        "each account's latest run and latest successful run, runs still running",
        sync_runs_that_go,
    ),
    Target(
        "error-records",
        "JOBCENTER_GONE_ERROR_RETENTION_DAYS",
        "error records of jobs gone",
        "the records of every job not gone this long",
        lambda cutoff: JobError.objects.filter(job__gone_at__lt=cutoff),
    ),
    Target(
        "alert-events",
        "JOBCENTER_ALERT_RETENTION_DAYS",
        "alert events fired",
        "events not yet delivered, and the newest of each rule and job still in its "
        "state (or account), which stops the alert being sent again",
        alert_events_that_go,
    ),
    Target(
        "alert-deliveries",
        "JOBCENTER_ALERT_RETENTION_DAYS",
        "alert deliveries created",
        "deliveries still being tried, and those a kept event names",
        alert_deliveries_that_go,
    ),
    Target(
        "task-rows",
        "JOBCENTER_TASK_RETENTION_DAYS",
        "django-q2 task results stopped",
        "each schedule's last task; the queue itself is never touched",
        task_rows_that_go,
    ),
    Target(
        "audit",
        "JOBCENTER_AUDIT_RETENTION_DAYS",
        "audit records written",
        "none older (this pruning adds a record of its own)",
        audit_records,
    ),
)
TARGET_NAMES = tuple(target.name for target in TARGETS)


# --- running them -------------------------------------------------------------------------


@dataclass
class Outcome:
    """One target's part of a prune: off (days 0), or what it did."""

    target: Target
    days: int
    result: PruneResult | None  # None: off


def prune(
    only: Iterable[str] | None = None,
    *,
    batch_size: int | None = None,
    pause: float = 0.0,
    now: datetime | None = None,
    dry_run: bool = False,
    progress: Callable[[PruneResult], None] | None = None,
) -> list[Outcome]:
    """Prune every target (or those named in `only`), in TARGETS' order, each against its
    own cutoff from one `now`; `batch_size` rows (snapshots: ids) per transaction."""
    names = set(TARGET_NAMES if only is None else only)
    unknown = names - set(TARGET_NAMES)
    if unknown:
        raise ValueError(f"unknown tables {sorted(unknown)}; known: {', '.join(TARGET_NAMES)}")
    batch_size = batch_size or settings.JOBCENTER_RETENTION_BATCH_SIZE
    if batch_size < 1:
        raise ValueError("batch size must be positive")
    now = now or timezone.now()
    outcomes = []
    for target in TARGETS:
        if target.name not in names:
            continue
        days = target.days
        if days < 1:
            outcomes.append(Outcome(target, days, None))
            continue
        cutoff = now - timedelta(days=days)
        result = PruneResult(cutoff=cutoff, batch_size=batch_size, target=target.name)
        delete_in_batches(
            target.goes(cutoff),
            target.windows(cutoff, batch_size),
            result,
            dry_run=dry_run,
            pause=pause,
            progress=progress,
        )
        if target.name == "audit" and result.deleted and not dry_run:
            record_audit_prune(result)
        outcomes.append(Outcome(target, days, result))
    return outcomes


def record_audit_prune(result: PruneResult) -> AuditRecord:
    """The audit log's own record of losing its older records: who, when, how many."""
    actor = current_actor()
    return AuditRecord.objects.create(
        actor_id=actor.user_id,
        actor=actor.name[:200],
        address=(actor.address or "")[:255],
        action=AuditAction.DELETE,
        model=AuditRecord._meta.label_lower,
        object_id=f"before {result.cutoff:%Y-%m-%dT%H:%M:%SZ}",
        object_repr=f"{result.deleted:,} audit records written before {result.cutoff:%Y-%m-%d}",
        changes={"deleted": result.deleted, "before": result.cutoff},
    )


def ensure_prune_schedule() -> Schedule | None:
    """The daily prune schedule, created or corrected when JOBCENTER_PRUNE_DAILY is on
    (a new one first runs at the next PRUNE_HOUR_UTC; a stored one keeps its time);
    removed when it is off. Returns the schedule, or None."""
    if not settings.JOBCENTER_PRUNE_DAILY:
        for schedule in Schedule.objects.filter(name=PRUNE_SCHEDULE):
            schedule.delete()  # one by one: the audit log records each
        return None
    now = timezone.now().astimezone(UTC)
    first = now.replace(hour=PRUNE_HOUR_UTC, minute=0, second=0, microsecond=0)
    if first <= now:
        first += timedelta(days=1)
    schedule, _ = Schedule.objects.update_or_create(
        name=PRUNE_SCHEDULE,
        defaults={
            "func": PRUNE_TASK,
            "schedule_type": Schedule.DAILY,
            "repeats": -1,
            "hook": None,
            "args": None,
            "kwargs": None,
        },
        create_defaults={
            "func": PRUNE_TASK,
            "schedule_type": Schedule.DAILY,
            "repeats": -1,
            "next_run": first,
        },
    )
    return schedule
