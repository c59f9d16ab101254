"""django-q2 entry points. Task arguments are ids only: django-q2 stores them in its table.

`dispatch_due_syncs` runs every minute from one Schedule (`manage.py setup_schedules`)
and enqueues `run_sync` for each enabled, unblocked account that is due. Admin and API
"sync now" enqueue the same task. A duplicate delivery is harmless: the second run finds
the account's lease taken and records itself as skipped. `deliver_alert` makes one
attempt at one alert delivery.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task

from jobcenter.alerts.delivery import deliver
from jobcenter.alerts.evaluation import evaluate_periodic
from jobcenter.models import ProviderAccount, SyncTrigger
from jobcenter.sync.engine import sync_account

SCHEDULE_NAME = "jobcenter: dispatch due syncs"
logger = logging.getLogger("jobcenter.tasks")


def run_sync(account_id: int, trigger: str = SyncTrigger.SCHEDULE) -> dict[str, object]:
    """The queued task: one sync of one account."""
    run = sync_account(account_id, trigger=trigger)
    return {"sync_run": run.pk, "outcome": run.outcome}


def enqueue_sync(account_id: int, trigger: str = SyncTrigger.MANUAL) -> str:
    """Queue a sync now; returns the django-q2 task id."""
    return async_task(
        "jobcenter.tasks.run_sync",
        account_id,
        trigger,
        task_name=f"sync account {account_id} ({trigger})",
        group="sync",
    )


def dispatch_due_syncs() -> int:
    """Enqueue a sync for every due account and move its next_sync_at on.

    Moving next_sync_at is a conditional UPDATE on the value read, so two dispatchers
    running at once enqueue each account once.
    """
    now = timezone.now()
    due = (
        ProviderAccount.objects.filter(enabled=True)
        .filter(Q(next_sync_at__isnull=True) | Q(next_sync_at__lte=now))
        .filter(Q(blocked_until__isnull=True) | Q(blocked_until__lte=now))
        .values_list("pk", "next_sync_at", "sync_interval_minutes")
    )
    queued = 0
    for account_id, next_sync_at, interval in due:
        moved = ProviderAccount.objects.filter(pk=account_id, next_sync_at=next_sync_at).update(
            next_sync_at=now + timedelta(minutes=max(1, interval))
        )
        if moved:
            enqueue_sync(account_id, SyncTrigger.SCHEDULE)
            queued += 1
    try:  # account health, quiet hours ending, webhook retries: also when no sync runs
        evaluate_periodic()
    except Exception:
        logger.exception("periodic alert evaluation failed")
    return queued


def deliver_alert(delivery_id: int) -> str:
    """The queued task: one attempt at one alert delivery (`alerts.delivery.deliver`).

    Queued by `alerts.delivery.enqueue_deliveries` under this dotted name; rows stored
    earlier as "jobcenter.alerts.deliver" still run (the alerts package re-exports it).
    """
    return deliver(delivery_id)


def ensure_schedule() -> Schedule:
    """The one every-minute Schedule, created or corrected idempotently."""
    schedule, _ = Schedule.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": "jobcenter.tasks.dispatch_due_syncs",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
    )
    return schedule
