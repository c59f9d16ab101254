"""The other tables that grow, seeded over `bench.seed`'s jobs: for the prune's tests.

`bench.seed.seed` writes accounts, jobs and snapshots. `seed_growth` adds, over the same
`days` and from the same ids (deterministic, nothing random), what a running Job Center
accumulates beside them: gone marks on a quarter of the terminal jobs (gone between now
and `days` ago), error records of the failed jobs, a sync run per account every
`run_hours` (one account stopped syncing 60 days ago, one run left "running" by a dead
worker long ago, one running now), alert events and deliveries (failed and stuck jobs,
failing accounts; some superseded by a later episode, some held or pending, some
deliveries still retrying, digests shared by two events, deliveries of no event),
django-q2 task rows (a schedule's last task among the old ones) and audit records.

Rows go through `bulk_create`: the sizes the tests use are small (a few thousand rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bench.seed import SeedResult

OUTCOMES = (
    # (outcome, share in 20)
    ("succeeded", 14),
    ("partial", 2),
    ("failed", 2),
    ("skipped", 1),
    ("deferred", 1),
)
SILENT_DAYS = 60  # the last account has not synced for this long


@dataclass
class GrowthResult:
    gone_jobs: int
    error_records: int
    sync_runs: int
    alert_events: int
    alert_deliveries: int
    task_rows: int
    audit_records: int
    silent_account: int
    schedule_task: str  # the id of a schedule's last task, an old one


def _mix(*values: int) -> int:
    mixed = 0
    for value in values:
        mixed = ((mixed ^ value) * 2_654_435_761) & 0xFFFFFFFF
    return mixed


def _outcome(mix: int) -> str:
    slot = mix % 20
    for outcome, share in OUTCOMES:
        if slot < share:
            return outcome
        slot -= share
    raise AssertionError("shares add up to 20")


def seed_growth(
    seeded: SeedResult,
    *,
    days: int = 365,
    run_hours: int = 12,
    task_hours: int = 6,
    audit_hours: int = 24,
) -> GrowthResult:
    """Fill the tables beside jobs and snapshots over the `days` before `seeded.now`."""
    from django_q.models import Schedule, Task

    from jobcenter.models import (
        AlertChannel,
        AlertDelivery,
        AlertEvent,
        AlertRule,
        Job,
        JobError,
        SyncRun,
    )
    from jobcenter.models.audit import AuditRecord

    now = seeded.now
    accounts = [*seeded.accounts, seeded.small_account]
    silent = seeded.accounts[-1]

    # Gone marks: a quarter of the terminal jobs, gone between now and `days` ago.
    gone = []
    for job in Job.objects.filter(is_terminal=True).only("id"):
        if job.pk % 4 == 0:
            job.gone_at = now - timedelta(days=(job.pk * 37) % days, hours=1)
            job.gone_reason = "not found"
            gone.append(job)
    Job.objects.bulk_update(gone, ["gone_at", "gone_reason"], batch_size=1000)

    failed = list(
        Job.objects.filter(status__in=["failed", "partially_failed"]).values_list(
            "id", "account_id", "status", "last_changed_at"
        )
    )
    errors = [
        JobError(
            job_id=job_id,
            position=n,
            code="invalid",
            message=f"record {n} of job {job_id} is invalid",
            fetched_at=changed,
        )
        for job_id, _, _, changed in failed
        for n in range(1 + job_id % 3)
    ]
    JobError.objects.bulk_create(errors, batch_size=1000)

    runs = []
    slots = days * 24 // run_hours
    for n, account in enumerate(accounts):
        for k in range(slots, -1, -1):  # oldest first: ids follow time
            started = now - timedelta(hours=k * run_hours, minutes=n)
            if account == silent and started > now - timedelta(days=SILENT_DAYS):
                continue
            outcome = _outcome(_mix(account, k))
            if account == silent and k * run_hours < (SILENT_DAYS + 1) * 24:
                outcome = "failed"  # its last runs failed: its last success is older
            if (n, k) in ((0, slots), (1, 0)):
                outcome = "running"  # a dead worker's run long ago; one running now
            finished = None if outcome == "running" else started + timedelta(seconds=30)
            runs.append(
                SyncRun(
                    account_id=account,
                    trigger="schedule" if k % 3 else "hot",
                    started_at=started,
                    finished_at=finished,
                    outcome=outcome,
                )
            )
    SyncRun.objects.bulk_create(runs, batch_size=1000)

    channel = AlertChannel.objects.create(
        name="bench email", kind="email", recipients="ops@example.com"
    )
    job_rule = AlertRule.objects.create(
        name="bench jobs",
        channel=channel,
        on_job_failed=True,
        on_job_partially_failed=True,
        stuck_after_minutes=120,
    )
    account_rule = AlertRule.objects.create(
        name="bench accounts", channel=channel, account_failures=3
    )
    # (rule, account, job, event, episode, fired)
    wanted: list[tuple[AlertRule, int, int | None, str, int, datetime]] = []
    for job_id, account, status, changed in failed:
        event = "job_failed" if status == "failed" else "job_partially_failed"
        if job_id % 3 == 0:  # failed, recovered, failed again: an earlier episode
            wanted.append((job_rule, account, job_id, event, 0, changed - timedelta(days=3)))
        wanted.append((job_rule, account, job_id, event, job_id, changed))
    for job_id, account, status, created in Job.objects.filter(
        status__in=["running", "queued", "succeeded"]
    ).values_list("id", "account_id", "status", "created_at"):
        if status != "succeeded" or job_id % 5 == 0:  # stuck once; some finished since
            wanted.append((job_rule, account, job_id, "job_stuck", 0, created + timedelta(hours=2)))
    for account in accounts:
        for episode in range(days // 20 + 1):
            fired = now - timedelta(days=days - 20 * episode, hours=2)
            if account == silent and fired > now - timedelta(days=SILENT_DAYS + 40):
                break  # failing since: no new episode
            wanted.append((account_rule, account, None, "account_failing", episode, fired))

    events, deliveries = [], []
    for n, (rule, account, job_id, event, episode, fired) in enumerate(wanted):
        state = ("held", "pending")[n % 2] if n % 17 == 0 else "dispatched"
        alert = AlertEvent(
            rule=rule,
            account_id=account,
            job_id=job_id,
            event=event,
            episode=episode,
            fired_at=fired,
            batch="seed",
            state=state,
        )
        if state == "dispatched":
            if n % 10 == 1 and deliveries and events[-1].delivery is not None:
                alert.delivery = events[-1].delivery  # a digest of two events
            else:
                status = ("retrying", "failed", "sent")[min(2, _mix(n) % 20)]
                alert.delivery = _delivery(AlertDelivery, rule, channel, fired, status)
                deliveries.append(alert.delivery)
        events.append(alert)
    for k in range(days // 5 + 1):  # deliveries of no event (a test message)
        status = "pending" if k % 7 == 0 else "sent"
        deliveries.append(
            _delivery(AlertDelivery, None, channel, now - timedelta(days=5 * k), status)
        )
    AlertDelivery.objects.bulk_create(deliveries, batch_size=1000)
    AlertEvent.objects.bulk_create(events, batch_size=1000)

    tasks = []
    for k in range(days * 24 // task_hours + 1):
        stopped = now - timedelta(hours=k * task_hours)
        tasks.append(
            Task(
                id=f"{k:032x}",
                name=f"seeded task {k}",
                func="jobcenter.tasks.run_sync",
                args=(accounts[k % len(accounts)],),
                started=stopped - timedelta(seconds=20),
                stopped=stopped,
                success=_mix(k) % 10 != 0,
            )
        )
    Task.objects.bulk_create(tasks, batch_size=1000)
    schedule_task = tasks[len(tasks) // 2].id  # an old task: a weekly schedule's last run
    Schedule.objects.create(
        name="bench: weekly sync",
        func="jobcenter.tasks.run_sync",
        args=str(accounts[0]),
        schedule_type=Schedule.WEEKLY,
        next_run=now + timedelta(days=7),
        task=schedule_task,
    )

    audit = [
        AuditRecord(
            at=now - timedelta(hours=k * audit_hours),
            actor="seed",
            action="change",
            model="jobcenter.provideraccount",
            object_id=str(accounts[k % len(accounts)]),
            object_repr=f"account {k}",
            changes={"enabled": {"old": k % 2 == 0, "new": k % 2 == 1}},
        )
        for k in range(days * 24 // audit_hours + 1)
    ]
    AuditRecord.objects.bulk_create(audit, batch_size=1000)
    return GrowthResult(
        gone_jobs=len(gone),
        error_records=len(errors),
        sync_runs=len(runs),
        alert_events=len(events),
        alert_deliveries=len(deliveries),
        task_rows=len(tasks),
        audit_records=len(audit),
        silent_account=silent,
        schedule_task=schedule_task,
    )


def _delivery(model: type[Any], rule: Any, channel: Any, created: datetime, status: str) -> Any:
    """One delivery (unsaved), sent or failed a minute after it was created unless live."""
    done = status in ("sent", "failed")
    return model(
        rule=rule,
        channel=channel,
        channel_kind="email",
        destination="ops@example.com",
        subject="[Job Center] seeded alert",
        text="seeded",
        status=status,
        attempts=1 if done else 0,
        sent_at=created + timedelta(minutes=1) if status == "sent" else None,
        created_at=created,
    )
