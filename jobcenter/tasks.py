"""django-q2 entry points. Task arguments are ids only: django-q2 stores them in its table.

`dispatch_due_syncs` runs every minute from one Schedule (`manage.py setup_schedules`).
It is the dispatcher loop: every `JOBCENTER_DISPATCH_SECONDS` it enqueues `run_sync` (a
sweep) for each enabled, unblocked, unleased account that is due, and `run_hot_pass`
for each account with unfinished jobs whose hot pass is due (`jobcenter.sync.hot`). Each
loop takes the dispatch baton from the one before, which stops at its next cycle, so
one loop dispatches at a time and the Schedule replaces a loop lost with its worker
(`JOBCENTER_DISPATCH_SECONDS=0`: one dispatch a minute, as before the loop). Admin and
API "sync now" enqueue `run_sync` too. A duplicate delivery is harmless: the second run
finds the account's lease taken and records itself as skipped. `deliver_alert` makes
one attempt at one alert delivery.

When an account is due: a queued sweep claims it for `JOBCENTER_LEASE_SECONDS` (a task
lost before it starts is queued again after that); a sweep that starts makes it due
again at once, but leased; one that ends sets the next sweep an interval after it
started, less half a dispatch cycle (`jobcenter.sync.lease`,
`jobcenter.sync.bookkeeping.next_sweep_at`). So a worker killed
mid-sync delays its account by the lease plus one dispatch cycle, not an interval.

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
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task

from jobcenter.alerts.delivery import deliver
from jobcenter.alerts.evaluation import evaluate_periodic
from jobcenter.audit.recorder import record
from jobcenter.models import DispatchBaton, Job, ProviderAccount, SyncTrigger
from jobcenter.models.audit import AuditAction
from jobcenter.sync.engine import sync_account
from jobcenter.sync.hot import hot_due, hot_pass
from jobcenter.sync.pruning import prune

SCHEDULE_NAME = "jobcenter: dispatch due syncs"
BATON = "dispatch"
# The longest a dispatcher loop runs: the Schedule starts a new one every minute anyway.
LOOP_LIFETIME_SECONDS = 600
# Every function a Schedule may run: Job Center's own tasks, defined below.
TASKS = (
    "jobcenter.tasks.dispatch_due_syncs",
    "jobcenter.tasks.run_sync",
    "jobcenter.tasks.run_hot_pass",
    "jobcenter.tasks.deliver_alert",
    "jobcenter.tasks.prune_old_rows",
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


def run_hot_pass(account_id: int) -> dict[str, object]:
    """The queued task: one hot pass over one account's unfinished jobs."""
    run = hot_pass(account_id)
    return {"sync_run": run.pk if run else None, "outcome": run.outcome if run else "unchanged"}


def dispatch_due_syncs() -> int:
    """The dispatcher: a loop dispatching every `JOBCENTER_DISPATCH_SECONDS` while it
    holds the baton (or one dispatch, with the setting 0); returns what it queued.

    Alerts' periodic evaluation runs once per call, that is once a minute.
    """
    try:  # account health, quiet hours ending, webhook retries: also when no sync runs
        evaluate_periodic()
    except Exception:
        logger.exception("periodic alert evaluation failed")
    cycle = settings.JOBCENTER_DISPATCH_SECONDS
    if cycle <= 0 or settings.Q_CLUSTER.get("workers", 1) < 2 or settings.Q_CLUSTER.get("sync"):
        # A loop would hold the only worker syncs have, or (tasks run inline) its caller.
        return dispatch_once()
    owner = uuid.uuid4().hex
    DispatchBaton.objects.update_or_create(
        name=BATON, defaults={"owner": owner, "taken_at": timezone.now()}
    )
    # Ends before django-q2's timeout would kill it; the Schedule starts the next loop.
    lifetime = min(LOOP_LIFETIME_SECONDS, settings.Q_CLUSTER["timeout"] - 2 * cycle)
    ends = time.monotonic() + lifetime
    queued = 0
    while True:
        started = time.monotonic()
        queued += dispatch_once()
        time.sleep(max(0.0, cycle - (time.monotonic() - started)))
        if time.monotonic() >= ends:
            return queued
        if not DispatchBaton.objects.filter(name=BATON, owner=owner).exists():
            return queued  # a newer loop took over


def free_accounts(now: datetime) -> Q:
    """Accounts a task may be queued for: enabled, not blocked, not leased."""
    return (
        Q(enabled=True)
        & (Q(blocked_until__isnull=True) | Q(blocked_until__lte=now))
        & (Q(lease_until__isnull=True) | Q(lease_until__lt=now))
    )


def sweep_due_accounts(now: datetime) -> Q:
    """Accounts whose sweep is due (with `free_accounts`: what the dispatcher queues;
    the oldest one's lag is a metric, `jobcenter.observability.collector`)."""
    return Q(next_sync_at__isnull=True) | Q(next_sync_at__lte=now)


def dispatch_once(now: datetime | None = None) -> int:
    """Queue a sweep for every due account and a hot pass for every account whose
    unfinished jobs are due; returns how many tasks it queued.

    Each account is claimed by a conditional UPDATE on the value read, so two
    dispatchers running at once queue it once. A constant number of queries, plus one
    UPDATE and one enqueue per task queued.
    """
    now = now or timezone.now()
    free, sweep_due = free_accounts(now), sweep_due_accounts(now)
    queued = 0
    for account_id, next_sync_at in ProviderAccount.objects.filter(free, sweep_due).values_list(
        "pk", "next_sync_at"
    ):
        claim = now + timedelta(seconds=settings.JOBCENTER_LEASE_SECONDS)
        # The sweep refreshes every job: no hot pass beside it (it would race the sweep
        # for the lease and have it skipped), the next one a hot interval on.
        hot_next = now + timedelta(seconds=settings.JOBCENTER_HOT_SECONDS)
        if ProviderAccount.objects.filter(pk=account_id, next_sync_at=next_sync_at).update(
            next_sync_at=claim, hot_next_at=hot_next
        ):
            enqueue_sync(account_id, SyncTrigger.SCHEDULE)
            queued += 1
    if settings.JOBCENTER_HOT_SECONDS <= 0:
        return queued
    moving = Job.objects.filter(account=OuterRef("pk"), is_terminal=False, gone_at__isnull=True)
    hot = (
        ProviderAccount.objects.filter(free, hot_due(now))
        .exclude(sweep_due)
        .filter(Exists(moving))
        .values_list("pk", "hot_next_at")
    )
    for account_id, hot_next_at in hot:
        if ProviderAccount.objects.filter(pk=account_id, hot_next_at=hot_next_at).update(
            hot_next_at=now + timedelta(seconds=settings.JOBCENTER_HOT_SECONDS)
        ):
            async_task(
                "jobcenter.tasks.run_hot_pass",
                account_id,
                task_name=f"hot pass of account {account_id}",
                group="hot",
            )
            queued += 1
    return queued


def deliver_alert(delivery_id: int) -> str:
    """The queued task: one attempt at one alert delivery (`alerts.delivery.deliver`).

    Queued by `alerts.delivery.enqueue_deliveries` under this dotted name; rows stored
    earlier as "jobcenter.alerts.deliver" still run (the alerts package re-exports it).
    """
    return deliver(delivery_id)


def prune_old_rows() -> dict[str, int]:
    """The daily prune (`setup_schedules` with JOBCENTER_PRUNE_DAILY): every table by its
    retention setting (`jobcenter.sync.pruning`); returns the rows deleted per table."""
    return {done.target.name: done.result.deleted for done in prune() if done.result}


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
