"""django-q2 entry points. Task arguments are ids only: django-q2 stores them in its table.

`dispatch_due_syncs` runs every minute from one Schedule (`manage.py setup_schedules`)
and enqueues `run_sync` for each enabled, unblocked account that is due. Admin and API
"sync now" enqueue the same task. A duplicate delivery is harmless: the second run finds
the account's lease taken and records itself as skipped. `deliver_alert` makes one
attempt at one alert delivery.

The task queue is not a console: a Schedule may name only one of `TASKS` and no hook
(`check_schedule`, run on every save by `jobcenter.apps` and by the admin's form), since a
worker imports and calls whatever dotted path a Schedule holds, with the worker's secrets.
The queue itself is the second line (`guard_enqueue`, on django-q2's `pre_enqueue`): a task
naming anything else, from a row that slipped past the first line or from code, is queued
as `refuse_foreign_task`, which fails with the name; it never runs.
"""

from __future__ import annotations

import ast
import logging
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task

from jobcenter.alerts.delivery import deliver
from jobcenter.alerts.evaluation import evaluate_periodic
from jobcenter.audit.recorder import record
from jobcenter.models import ProviderAccount, SyncTrigger
from jobcenter.models.audit import AuditAction
from jobcenter.sync.engine import sync_account

SCHEDULE_NAME = "jobcenter: dispatch due syncs"
# Every function a Schedule may run: Job Center's own tasks, defined below.
TASKS = (
    "jobcenter.tasks.dispatch_due_syncs",
    "jobcenter.tasks.run_sync",
    "jobcenter.tasks.deliver_alert",
)
# What may be queued: the tasks, and the name `deliver_alert` had when it lived in alerts
# (rows queued before it moved still name it).
QUEUEABLE = (*TASKS, "jobcenter.alerts.deliver")
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
            "hook": None,
            "args": None,
            "kwargs": None,
        },
    )
    return schedule


def _schedule_kwargs(text: str) -> Any:
    """The keyword arguments django-q2's scheduler reads from a Schedule's text.

    Exactly its parse (`django_q.scheduler`): a literal, else the keywords of the first
    statement of `f(<text>)`. Only parsed, never run. Raises what the scheduler would.
    """
    try:
        return ast.literal_eval(text)
    except (SyntaxError, ValueError):
        try:
            keywords = ast.parse(f"f({text})").body[0].value.keywords  # type: ignore[attr-defined]
            return {keyword.arg: ast.literal_eval(keyword.value) for keyword in keywords}
        except (SyntaxError, ValueError):
            return {}


def check_schedule(func: str, hook: str | None = None, kwargs: str | None = None) -> None:
    """Refuse a Schedule that would run anything but one of Job Center's `TASKS`.

    A hook is a second function the worker calls (with the finished task), named by the
    hook field or by `q_options` in the keyword arguments: Job Center's tasks need none.
    Raises a ValidationError keyed by the Schedule's fields.
    """
    errors: dict[str, str] = {}
    if func not in TASKS:
        errors["func"] = f"Not a Job Center task. A schedule may run only: {', '.join(TASKS)}."
    if hook:
        errors["hook"] = "Schedules of Job Center's tasks take no hook."
    if kwargs:
        try:
            options = _schedule_kwargs(kwargs)
        except Exception:
            errors["kwargs"] = "Not keyword arguments: a dict, or name=value pairs of literals."
        else:
            q_options = options.get("q_options") if isinstance(options, dict) else None
            if isinstance(q_options, dict) and q_options.get("hook"):
                errors["kwargs"] = "Schedules of Job Center's tasks take no hook (q_options)."
    if errors:
        raise ValidationError(errors)


def check_schedule_on_save(sender: type, instance: Schedule, **kwargs: Any) -> None:
    """pre_save of django-q2's Schedule (connected in `jobcenter.apps`): the ORM, a shell,
    django-q2's own `schedule()` and the admin all save through here.

    A row stored before the check (or behind its back) that the scheduler saves unchanged
    after its round is not refused: that would roll the whole round back, Job Center's
    own dispatch included. It is stopped instead (repeats 0; the audit sees the change),
    and the queue guard has already neutralised the task it queued.
    """
    try:
        check_schedule(instance.func, instance.hook, instance.kwargs)
    except ValidationError:
        # Only a refused save reads the stored row: the scheduler saves every due row
        # each round, and the audit's pre_save reads it once already.
        fields = ("func", "hook", "kwargs")
        stored = Schedule.objects.filter(pk=instance.pk).values(*fields).first()
        if stored is None or any(stored[f] != getattr(instance, f) for f in fields):
            raise
        logger.error(
            "stopped schedule %r: it runs %r, not a Job Center task", instance.name, instance.func
        )
        instance.repeats = 0


def refuse_foreign_task(func: str) -> None:
    """What a worker runs in place of a queued function that is not Job Center's."""
    raise PermissionError(f"refused to run {func!r}: not a Job Center task")


def guard_enqueue(sender: str, task: dict[str, Any], **kwargs: Any) -> None:
    """pre_enqueue of django-q2 (connected in `jobcenter.apps`): whatever queues a task, a
    foreign function or any hook is replaced by `refuse_foreign_task` before it is stored."""
    func = task.get("func")
    name = func if isinstance(func, str) else f"{func.__module__}.{func.__qualname__}"
    if name in QUEUEABLE and not task.get("hook"):
        return
    logger.error("refused to queue %r (hook %r): not a Job Center task", name, task.get("hook"))
    task.pop("hook", None)
    task.update(func="jobcenter.tasks.refuse_foreign_task", args=(name,), kwargs={})


def stop_foreign_schedules() -> list[Schedule]:
    """Stop (repeats=0, kept for inspection) stored Schedules that `check_schedule`
    refuses: rows saved before the check existed. An UPDATE, since saving them is refused."""
    foreign = []
    for schedule in Schedule.objects.exclude(repeats=0):
        try:
            check_schedule(schedule.func, schedule.hook, schedule.kwargs)
        except ValidationError:
            foreign.append(schedule)
    Schedule.objects.filter(pk__in=[s.pk for s in foreign]).update(repeats=0)
    for schedule in foreign:  # update() sends no signal: the audit is told here
        record(schedule, AuditAction.CHANGE, {"repeats": {"old": schedule.repeats, "new": 0}})
    return foreign
