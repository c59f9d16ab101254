"""Alerts: rules evaluated after every sync and every minute, delivered by email or webhook.

Why here and not in each provider's console: one place sees every provider's jobs, so one
place can say "a product import failed", "an export has waited two hours" or "this
account has not synced since its key was revoked".

Evaluation (`evaluate_after_sync`, `evaluate_periodic`) costs a constant number of
queries per rule, whatever the number of jobs:

- one `INSERT INTO alertevent ... SELECT ... ON CONFLICT DO NOTHING` per event type
  records every job (or account) that meets the rule. AlertEvent is unique on
  (rule, job or account, event, episode), so only alerts never recorded before are
  inserted; they carry this evaluation's batch id, which is how it reads back its own;
- one UPDATE claims events that quiet hours held back, once those hours are over;
- one SELECT reads the batch (a digest lists at most DIGEST_LIST_LIMIT of them), one the
  first error of each job listed, one writes the deliveries and one links the events.

The episode (see AlertEvent) makes "once per job and event" survive recovery: a job that
stays failed keeps its episode and alerts once; one that recovers and fails again has a
new episode and alerts again. Nothing depends on wall time.

Delivery runs in its own django-q2 task (`deliver`), queued when the evaluation commits:
a slow or dead receiver never holds a sync. Each task makes one attempt; a failed attempt
that may succeed later (timeout, connection error, 5xx, 408, 429) is retried from the
every-minute schedule after a backoff that doubles, up to JOBCENTER_ALERT_DELIVERY_ATTEMPTS
attempts. Every attempt is logged on the AlertDelivery row staff read in admin.

Webhook requests: `POST` of JSON `{"text": "...", "event": {...}}` (`text` is what Slack
shows; `event` the structured alert, or for a digest `{"type": "digest", "events": [...]}`)
with these headers:

- `X-JobCenter-Timestamp`: Unix seconds when the attempt was made;
- `X-JobCenter-Signature`: `sha256=` + hex HMAC-SHA256, keyed with the channel's secret,
  of the bytes `<timestamp>.<raw body>`. A receiver recomputes it over the raw body it
  received, compares in constant time (`verify_signature`), and refuses timestamps more
  than five minutes old, so a captured request cannot be replayed later;
- `X-JobCenter-Delivery`: the delivery id, the same on every retry (a dedupe key).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.core.validators import validate_email
from django.db import connection, transaction
from django.db.models import (
    BigIntegerField,
    CharField,
    DateTimeField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Cast, Coalesce
from django.urls import reverse
from django.utils import timezone
from django_q.tasks import async_task

from jobcenter.crypto import CredentialsUnreadable
from jobcenter.models import (
    AlertChannel,
    AlertChannelKind,
    AlertDelivery,
    AlertDeliveryStatus,
    AlertEvent,
    AlertEventState,
    AlertEventType,
    AlertRule,
    Job,
    JobError,
    JobSnapshot,
    ProviderAccount,
    SyncOutcome,
    SyncRun,
)
from providers import PROVIDER_CLASSES, get_provider
from providers.base import Status

logger = logging.getLogger("jobcenter.alerts")

# The states an event is about: its episode starts when the job last entered them.
JOB_EVENT_STATES: dict[str, list[str]] = {
    AlertEventType.JOB_FAILED: [Status.FAILED.value],
    AlertEventType.JOB_PARTIALLY_FAILED: [Status.PARTIALLY_FAILED.value],
    AlertEventType.JOB_STUCK: [Status.QUEUED.value, Status.RUNNING.value],
}
SUCCESSFUL_RUNS = [SyncOutcome.SUCCEEDED, SyncOutcome.PARTIAL]
# A sync looks back this far for failed jobs, so alerts an interrupted evaluation missed
# are still sent by the next one (the ledger keeps them from being sent twice).
LOOKBACK = timedelta(hours=1)
# A failed job alerts once its error records are stored (the message quotes the first),
# or after this long without them (the provider may never give them).
ERROR_WAIT = timedelta(minutes=15)
DIGEST_LIST_LIMIT = 50
FIRST_ERROR_CHARS = 500
SIGNATURE_TOLERANCE_SECONDS = 300
MAX_BACKOFF_SECONDS = 3600.0
RETRY_BATCH = 100


@dataclass
class Evaluation:
    """One evaluation: its batch id (the events it inserted carry it) and what it did."""

    now: datetime = field(default_factory=timezone.now)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    fired: int = 0
    held: int = 0
    deliveries: list[int] = field(default_factory=list)


# --- entry points -------------------------------------------------------------------


def evaluate_after_sync(run: SyncRun) -> Evaluation:
    """Alerts for the jobs and the account of one finished sync run.

    Called by `sync.sync_account` after the lease is released; its caller logs and
    swallows any exception, so an alert can never fail a sync.
    """
    evaluation = Evaluation()
    if run.outcome in (SyncOutcome.SKIPPED, SyncOutcome.RUNNING):
        return evaluation
    account = run.account
    since = (run.started_at or evaluation.now) - LOOKBACK
    for rule in active_rules(account):
        providers = rule.provider_list()
        if providers and account.provider not in providers:
            continue
        try:
            evaluate_rule(
                rule,
                evaluation,
                job_account_id=account.pk,
                since=since,
                accounts=ProviderAccount.objects.filter(pk=account.pk),
            )
        except Exception:  # one broken rule must not silence the others
            logger.exception("alert rule %s could not be evaluated after run %s", rule.pk, run.pk)
    return evaluation


def evaluate_periodic(now: datetime | None = None) -> Evaluation:
    """Every minute (from `tasks.dispatch_due_syncs`): account health, quiet hours, retries.

    "Not synced for N minutes" must be noticed when no sync runs at all, and events held
    by quiet hours must go out when those end even if nothing else happens.
    """
    evaluation = Evaluation(now=now or timezone.now())
    for rule in active_rules(None):
        try:
            evaluate_rule(
                rule, evaluation, job_account_id=None, since=None, accounts=scoped_accounts(rule)
            )
        except Exception:  # one broken rule must not silence the others
            logger.exception("alert rule %s could not be evaluated", rule.pk)
    retry_due_deliveries(evaluation.now)
    return evaluation


def active_rules(account: ProviderAccount | None) -> list[AlertRule]:
    """Enabled rules with a channel (one query); with `account`, only rules covering it."""
    through = AlertRule.accounts.through
    rules = AlertRule.objects.filter(enabled=True, channel__isnull=False).select_related("channel")
    if account is not None:
        rules = rules.annotate(
            scoped=Exists(through.objects.filter(alertrule_id=OuterRef("pk"))),
            covers=Exists(
                through.objects.filter(alertrule_id=OuterRef("pk"), provideraccount_id=account.pk)
            ),
        ).filter(Q(scoped=False) | Q(covers=True))
    return list(rules.order_by("id"))


def scoped_accounts(rule: AlertRule) -> QuerySet[ProviderAccount]:
    """The accounts a rule watches, as a lazy queryset (a subquery, not a query)."""
    accounts = ProviderAccount.objects.all()
    through = AlertRule.accounts.through
    accounts = accounts.filter(
        Q(~Exists(through.objects.filter(alertrule_id=rule.pk)))
        | Q(pk__in=through.objects.filter(alertrule_id=rule.pk).values("provideraccount_id"))
    )
    providers = rule.provider_list()
    if providers:
        accounts = accounts.filter(provider__in=providers)
    return accounts


# --- one rule -----------------------------------------------------------------------


def evaluate_rule(
    rule: AlertRule,
    evaluation: Evaluation,
    *,
    job_account_id: int | None,
    since: datetime | None,
    accounts: QuerySet[ProviderAccount] | None,
) -> None:
    """Record what `rule` newly sees, then hand its unsent events to deliveries.

    One transaction: a crash records nothing, and the next evaluation finds it all again.
    """
    now = evaluation.now
    quiet = in_quiet_hours(rule, now)
    state = AlertEventState.HELD if quiet else AlertEventState.PENDING
    with transaction.atomic():
        fired = 0
        if job_account_id is not None and since is not None:
            for event in job_events(rule):
                rows = job_rows(rule, event, job_account_id, since, now)
                fired += insert_events(rows, rule, event, evaluation.token, state, now)
        if accounts is not None:
            for event in account_events(rule):
                rows = account_rows(rule, event, accounts, now)
                fired += insert_events(rows, rule, event, evaluation.token, state, now)
        evaluation.fired += fired
        if quiet:
            evaluation.held += fired
            return
        released = AlertEvent.objects.filter(rule=rule, state=AlertEventState.HELD).update(
            state=AlertEventState.PENDING, batch=evaluation.token
        )
        if fired + released:
            dispatch(rule, evaluation, fired + released)


def job_events(rule: AlertRule) -> list[str]:
    events = []
    if rule.on_job_failed:
        events.append(AlertEventType.JOB_FAILED)
    if rule.on_job_partially_failed:
        events.append(AlertEventType.JOB_PARTIALLY_FAILED)
    if rule.stuck_after_minutes:
        events.append(AlertEventType.JOB_STUCK)
    return events


def account_events(rule: AlertRule) -> list[str]:
    events = []
    if rule.account_failures:
        events.append(AlertEventType.ACCOUNT_FAILING)
    if rule.account_silent_minutes:
        events.append(AlertEventType.ACCOUNT_NOT_SYNCED)
    return events


def job_rows(
    rule: AlertRule, event: str, account_id: int, since: datetime, now: datetime
) -> QuerySet[Job]:
    """The jobs of one account for which `rule` raises `event`, filtered in SQL."""
    states = JOB_EVENT_STATES[event]
    jobs = Job.objects.filter(account_id=account_id, status__in=states, gone_at__isnull=True)
    kinds = rule.kind_list()
    if kinds:
        jobs = jobs.filter(kind__in=kinds)
    if event == AlertEventType.JOB_STUCK:
        limit = now - timedelta(minutes=rule.stuck_after_minutes or 0)
        jobs = jobs.alias(
            running_since=Coalesce("started_at", "created_at", "first_seen_at")
        ).filter(is_terminal=False, running_since__lt=limit)
    else:
        # Failed in (or since shortly before) this run; and its first error is known, or
        # it is not coming.
        jobs = jobs.filter(Q(last_changed_at__gte=since) | Q(errors_fetched_at__gte=since))
        jobs = jobs.filter(
            Q(errors_fetched_at__isnull=False) | Q(last_changed_at__lt=now - ERROR_WAIT)
        )
    if event == AlertEventType.JOB_PARTIALLY_FAILED and rule.partial_min_percent > 0:
        # failed / total > percent / 100, in integers: failed * 10000 > basis points * total.
        basis_points = round(rule.partial_min_percent * 100)
        jobs = jobs.alias(
            failed_scaled=ExpressionWrapper(
                F("failed_count") * 10000, output_field=BigIntegerField()
            ),
            total_scaled=ExpressionWrapper(
                F("total_count") * basis_points, output_field=BigIntegerField()
            ),
        ).filter(total_count__gt=0, failed_scaled__gt=F("total_scaled"))
    last_outside = (
        JobSnapshot.objects.filter(job_id=OuterRef("pk"))
        .exclude(status__in=states)
        .order_by("-id")
        .values("id")[:1]
    )
    return jobs.annotate(
        ev_account=F("account_id"),
        ev_job=F("pk"),
        ev_episode=Coalesce(Subquery(last_outside), Value(0), output_field=BigIntegerField()),
    )


def account_rows(
    rule: AlertRule, event: str, accounts: QuerySet[ProviderAccount], now: datetime
) -> QuerySet[ProviderAccount]:
    """The enabled accounts for which `rule` raises `event`, filtered in SQL."""
    accounts = accounts.filter(enabled=True)
    if event == AlertEventType.ACCOUNT_FAILING:
        accounts = accounts.filter(consecutive_failures__gte=rule.account_failures or 1)
    else:
        limit = now - timedelta(minutes=rule.account_silent_minutes or 0)
        accounts = accounts.alias(synced=Coalesce("last_success_at", "created_at")).filter(
            synced__lt=limit
        )
    last_success = (
        SyncRun.objects.filter(account_id=OuterRef("pk"), outcome__in=SUCCESSFUL_RUNS)
        .order_by("-id")
        .values("id")[:1]
    )
    return accounts.annotate(
        ev_account=F("pk"),
        ev_job=Cast(Value(None), output_field=BigIntegerField()),  # typed NULL for PostgreSQL
        ev_episode=Coalesce(Subquery(last_success), Value(0), output_field=BigIntegerField()),
    )


def insert_events(
    rows: QuerySet, rule: AlertRule, event: str, token: str, state: str, now: datetime
) -> int:
    """Record the rows' alerts not recorded before, in one statement; returns how many.

    INSERT ... SELECT ... ON CONFLICT DO NOTHING (SQLite and PostgreSQL alike) against the
    ledger's unique constraints: no row travels to Python, and two workers evaluating at
    once insert each alert once.
    """
    select = rows.order_by().annotate(
        ev_rule=Value(rule.pk, output_field=BigIntegerField()),
        ev_event=Value(event, output_field=CharField()),
        ev_fired_at=Value(now, output_field=DateTimeField()),
        ev_batch=Value(token, output_field=CharField()),
        ev_state=Value(state, output_field=CharField()),
    )
    names = ["rule", "account", "job", "event", "episode", "fired_at", "batch", "state"]
    select = select.values_list(*(f"ev_{name}" for name in names))
    sql, params = select.query.sql_with_params()
    quote = connection.ops.quote_name
    columns = ", ".join(quote(AlertEvent._meta.get_field(name).column) for name in names)
    statement = (
        f"INSERT INTO {quote(AlertEvent._meta.db_table)} ({columns}) "  # noqa: S608
        f"SELECT * FROM ({sql}) AS candidates WHERE 1 = 1 ON CONFLICT DO NOTHING"
    )
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return max(cursor.rowcount, 0)


# --- from events to deliveries ------------------------------------------------------


def dispatch(rule: AlertRule, evaluation: Evaluation, count: int) -> None:
    """Turn this evaluation's pending events of `rule` into deliveries (inside its atomic).

    More than JOBCENTER_ALERT_DIGEST_THRESHOLD events make one digest instead of one
    message each. The deliveries are queued as tasks once the transaction commits.
    """
    channel = rule.channel
    assert channel is not None
    pending = AlertEvent.objects.filter(
        rule=rule, batch=evaluation.token, state=AlertEventState.PENDING
    )
    threshold = max(1, settings.JOBCENTER_ALERT_DIGEST_THRESHOLD)
    digest = count > threshold
    events = list(
        pending.select_related("job", "account")
        .defer("job__payload", "job__digest", "account__sync_state", "account__rate_limits")
        .order_by("id")[: DIGEST_LIST_LIMIT if digest else threshold]
    )
    if not events:
        return
    errors = first_errors([event.job_id for event in events if event.job_id])
    data = [
        event_data(event, rule, errors.get(event.job_id or 0), evaluation.now) for event in events
    ]
    if digest:
        count = max(count, len(events))
        delivery = new_delivery(
            rule,
            channel,
            subject=f"[Job Center] {count:,} alerts: {rule.name}",
            text=digest_text(rule, data, count),
            payload={
                "text": "",
                "event": {
                    "type": "digest",
                    "rule": {"id": rule.pk, "name": rule.name},
                    "count": count,
                    "events": data,
                    "omitted": count - len(data),
                },
            },
            event_count=count,
        )
        delivery.is_digest = True
        delivery.payload["text"] = delivery.text
        delivery.save()
        pending.update(state=AlertEventState.DISPATCHED, delivery=delivery)
        deliveries = [delivery]
    else:
        deliveries = []
        for item in data:
            text = event_text(item)
            deliveries.append(
                new_delivery(
                    rule,
                    channel,
                    subject=f"[Job Center] {item['headline']}"[:300],
                    text=text,
                    payload={"text": text, "event": item},
                    event_count=1,
                )
            )
        AlertDelivery.objects.bulk_create(deliveries)
        for event, delivery in zip(events, deliveries, strict=True):
            event.delivery = delivery
            event.state = AlertEventState.DISPATCHED
        AlertEvent.objects.bulk_update(events, ["delivery", "state"])
    ids = [delivery.pk for delivery in deliveries]
    evaluation.deliveries.extend(ids)
    transaction.on_commit(lambda: enqueue_deliveries(ids), robust=True)


def new_delivery(
    rule: AlertRule,
    channel: AlertChannel,
    *,
    subject: str,
    text: str,
    payload: dict[str, Any],
    event_count: int,
) -> AlertDelivery:
    now = timezone.now()
    return AlertDelivery(
        rule=rule,
        channel=channel,
        channel_kind=channel.kind,
        destination=channel_destination(channel),
        subject=subject[:300],
        text=text,
        payload=payload,
        event_count=event_count,
        status=AlertDeliveryStatus.PENDING,
        # If the queued task is lost, the every-minute retry picks the delivery up then.
        next_attempt_at=now + sending_lease(),
        created_at=now,
    )


def enqueue_deliveries(ids: list[int]) -> None:
    for delivery_id in ids:
        async_task(
            "jobcenter.alerts.deliver",
            delivery_id,
            task_name=f"alert delivery {delivery_id}",
            group="alerts",
        )


def first_errors(job_ids: list[int]) -> dict[int, str]:
    """The first stored error text of each job, in one query."""
    if not job_ids:
        return {}
    rows = JobError.objects.filter(job_id__in=job_ids, position=0).values_list(
        "job_id", "code", "title", "message"
    )
    texts = {}
    for job_id, code, title, message in rows:
        text = message or title or code
        if code and text != code:
            text = f"{code}: {text}"
        texts[job_id] = " ".join(text.split())[:FIRST_ERROR_CHARS]
    return texts


# --- message text -------------------------------------------------------------------


def site_link(path: str) -> str:
    return f"{settings.JOBCENTER_SITE_URL}{path}"


def provider_label(slug: str) -> str:
    try:
        return get_provider(slug).label
    except KeyError:
        return slug


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def event_data(
    event: AlertEvent, rule: AlertRule, first_error: str | None, now: datetime
) -> dict[str, Any]:
    """The structured alert: what webhooks receive and what the text is built from."""
    account = event.account
    label = provider_label(account.provider)
    data: dict[str, Any] = {
        "id": event.pk,
        "type": event.event,
        "title": AlertEventType(event.event).label,
        "fired_at": iso(event.fired_at),
        "rule": {"id": rule.pk, "name": rule.name},
        "provider": account.provider,
        "provider_label": label,
        "account": {
            "id": account.pk,
            "name": account.name,
            "url": site_link(reverse("admin:jobcenter_provideraccount_change", args=[account.pk])),
        },
    }
    job = event.job
    if job is not None:
        failed_percent = (
            round(100 * (job.failed_count or 0) / job.total_count, 2) if job.total_count else None
        )
        running_since = job.started_at or job.created_at or job.first_seen_at
        data["kind"] = job.kind
        data["job"] = {
            "id": job.pk,
            "external_id": job.external_id,
            "kind": job.kind,
            "status": job.status,
            "provider_status": job.provider_status,
            "total_count": job.total_count,
            "completed_count": job.completed_count,
            "failed_count": job.failed_count,
            "failed_percent": failed_percent,
            "error_count": job.error_count,
            "created_at": iso(job.created_at),
            "started_at": iso(job.started_at),
            "completed_at": iso(job.completed_at),
            "url": site_link(reverse("admin:jobcenter_job_change", args=[job.pk])),
        }
        if event.event == AlertEventType.JOB_STUCK and running_since:
            data["job"]["waiting_minutes"] = int((now - running_since).total_seconds() // 60)
        data["first_error"] = first_error
        data["headline"] = (
            f"{data['title']}: {label} {job.kind} {job.external_id} (account {account.name})"
        )
    else:
        data["account"] |= {
            "consecutive_failures": account.consecutive_failures,
            "last_error": account.last_error[:FIRST_ERROR_CHARS],
            "last_success_at": iso(account.last_success_at),
            "last_sync_at": iso(account.last_sync_at),
        }
        data["headline"] = f"{data['title']}: {account.name} ({label})"
    return data


def counts_text(job: dict[str, Any]) -> str:
    def number(value: int | None) -> str:
        return "?" if value is None else f"{value:,}"

    if (
        job["total_count"] is None
        and job["completed_count"] is None
        and job["failed_count"] is None
    ):
        return "no counts reported by the provider"
    text = (
        f"total {number(job['total_count'])}, completed {number(job['completed_count'])}, "
        f"failed {number(job['failed_count'])}"
    )
    if job["failed_percent"] is not None and job["failed_count"]:
        text += f" ({job['failed_percent']:g}% failed)"
    return text


def event_text(data: dict[str, Any]) -> str:
    """The message of one alert: a few lines a person can act on without opening anything."""
    lines = [data["headline"]]
    job = data.get("job")
    if job is not None:
        shown = job["provider_status"] and job["provider_status"] != job["status"]
        status = job["status"] + (f" (provider: {job['provider_status']})" if shown else "")
        lines.append(f"Status: {status}; {counts_text(job)}")
        if "waiting_minutes" in job:
            lines.append(f"Not ended after {job['waiting_minutes']} minutes")
        errors = job["error_count"]
        label = f"First error (of {errors:,})" if errors > 1 else "First error"
        lines.append(f"{label}: {data.get('first_error') or '(none reported)'}")
        lines.append(f"Link: {job['url']}")
    else:
        account = data["account"]
        lines.append(f"Failed syncs in a row: {account['consecutive_failures']}")
        lines.append(f"Last successful sync: {account['last_success_at'] or 'never'}")
        if account["last_error"]:
            lines.append(f"Last error: {account['last_error']}")
        lines.append(f"Link: {account['url']}")
    lines.append(f"Rule: {data['rule']['name']}")
    return "\n".join(lines)


def digest_line(data: dict[str, Any]) -> str:
    job = data.get("job")
    if job is None:
        account = data["account"]
        return (
            f"- {data['headline']} — {account['consecutive_failures']} failed syncs in a row"
            f" — {account['url']}"
        )
    error = data.get("first_error")
    return (
        f"- {data['headline']} — {counts_text(job)}"
        + (f" — not ended after {job['waiting_minutes']} min" if "waiting_minutes" in job else "")
        + (f" — first error: {error[:160]}" if error else "")
        + f" — {job['url']}"
    )


def digest_text(rule: AlertRule, data: list[dict[str, Any]], count: int) -> str:
    lines = [f"{count:,} alerts from rule “{rule.name}”:", *(digest_line(d) for d in data)]
    if count > len(data):
        lines.append(
            f"…and {count - len(data):,} more: "
            + site_link(reverse("admin:jobcenter_alertevent_changelist"))
            + f"?rule__id__exact={rule.pk}"
        )
    return "\n".join(lines)


# --- quiet hours --------------------------------------------------------------------


def in_quiet_hours(rule: AlertRule, now: datetime) -> bool:
    """Whether `now` falls in the rule's quiet hours (which may span midnight)."""
    start, end = rule.quiet_start, rule.quiet_end
    if start is None or end is None or start == end:
        return False
    try:
        zone = ZoneInfo(rule.quiet_timezone or settings.TIME_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    local = now.astimezone(zone).time().replace(tzinfo=None)
    if start < end:
        return start <= local < end
    return local >= start or local < end


# --- delivery -----------------------------------------------------------------------


@dataclass
class Attempt:
    ok: bool
    retryable: bool = False
    response_code: int | None = None
    error: str = ""


def sending_lease() -> timedelta:
    """How long a delivery counts as being sent before another worker may try again."""
    return timedelta(seconds=2 * settings.JOBCENTER_ALERT_WEBHOOK_TIMEOUT + 60)


def backoff_seconds(attempts: int) -> float:
    base = settings.JOBCENTER_ALERT_RETRY_BACKOFF
    return min(MAX_BACKOFF_SECONDS, base * 2 ** max(0, attempts - 1))


def deliver(delivery_id: int) -> str:
    """The django-q2 task: one attempt at one delivery, recorded on its row.

    Claimed with one conditional UPDATE, so a duplicate task (or the retry schedule
    racing the first task) never sends twice at once.
    """
    now = timezone.now()
    claimed = (
        AlertDelivery.objects.filter(pk=delivery_id)
        .filter(
            Q(status=AlertDeliveryStatus.PENDING)
            | Q(
                status__in=[AlertDeliveryStatus.RETRYING, AlertDeliveryStatus.SENDING],
                next_attempt_at__lte=now,
            )
        )
        .update(
            status=AlertDeliveryStatus.SENDING,
            attempts=F("attempts") + 1,
            last_attempt_at=now,
            next_attempt_at=now + sending_lease(),
        )
    )
    if not claimed:
        return "not due"
    delivery = AlertDelivery.objects.select_related("channel").get(pk=delivery_id)
    started = time.monotonic()
    try:
        attempt = send(delivery)
    except Exception as exc:  # a bug must not leave the delivery claimed forever
        logger.exception("alert delivery %s failed unexpectedly", delivery_id)
        attempt = Attempt(ok=False, retryable=True, error=f"internal error ({type(exc).__name__})")
    record_attempt(delivery, attempt, now, time.monotonic() - started)
    return delivery.status


def send(delivery: AlertDelivery) -> Attempt:
    channel = delivery.channel
    if channel is None:
        return Attempt(ok=False, error="the channel was deleted")
    if channel.kind == AlertChannelKind.WEBHOOK:
        return send_webhook(delivery, channel)
    return send_email(delivery, channel)


def record_attempt(
    delivery: AlertDelivery, attempt: Attempt, started_at: datetime, seconds: float
) -> None:
    now = timezone.now()
    delivery.attempt_log = [
        *(delivery.attempt_log or []),
        {
            "attempt": delivery.attempts,
            "at": started_at.isoformat(),
            "ok": attempt.ok,
            "response_code": attempt.response_code,
            "error": attempt.error,
            "seconds": round(seconds, 3),
        },
    ][-20:]
    delivery.response_code = attempt.response_code
    if attempt.ok:
        delivery.status = AlertDeliveryStatus.SENT
        delivery.sent_at = now
        delivery.next_attempt_at = None
        delivery.last_error = ""
    else:
        delivery.last_error = attempt.error[:2000]
        max_attempts = max(1, settings.JOBCENTER_ALERT_DELIVERY_ATTEMPTS)
        if attempt.retryable and delivery.attempts < max_attempts:
            delivery.status = AlertDeliveryStatus.RETRYING
            delivery.next_attempt_at = now + timedelta(seconds=backoff_seconds(delivery.attempts))
        else:
            delivery.status = AlertDeliveryStatus.FAILED
            delivery.next_attempt_at = None
            logger.warning(
                "alert delivery %s failed after %s attempts: %s",
                delivery.pk,
                delivery.attempts,
                delivery.last_error,
            )
    delivery.save(
        update_fields=[
            "attempt_log",
            "response_code",
            "status",
            "sent_at",
            "next_attempt_at",
            "last_error",
        ]
    )


def retry_due_deliveries(now: datetime | None = None, limit: int = RETRY_BATCH) -> int:
    """Queue an attempt for every delivery whose retry (or lost first attempt) is due."""
    now = now or timezone.now()
    due = list(
        AlertDelivery.objects.filter(
            status__in=[
                AlertDeliveryStatus.PENDING,
                AlertDeliveryStatus.RETRYING,
                AlertDeliveryStatus.SENDING,
            ],
            next_attempt_at__lte=now,
        )
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    if due:
        # Pending ones need the claim to see them as due: mark them retrying first.
        AlertDelivery.objects.filter(pk__in=due, status=AlertDeliveryStatus.PENDING).update(
            status=AlertDeliveryStatus.RETRYING
        )
        enqueue_deliveries(due)
    return len(due)


def deliver_pending_now(limit: int = RETRY_BATCH) -> int:
    """Send every not-yet-sent delivery in this process (the demo has no cluster to)."""
    ids = list(
        AlertDelivery.objects.filter(status=AlertDeliveryStatus.PENDING)
        .order_by("id")
        .values_list("pk", flat=True)[:limit]
    )
    for delivery_id in ids:
        deliver(delivery_id)
    return len(ids)


# -- email ---------------------------------------------------------------------------------


def send_email(delivery: AlertDelivery, channel: AlertChannel) -> Attempt:
    recipients = channel.recipient_list()
    if not recipients:
        return Attempt(ok=False, error="the channel has no email recipients")
    message = EmailMessage(
        subject=delivery.subject,
        body=delivery.text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=recipients,
        headers={"X-JobCenter-Delivery": str(delivery.pk)},
    )
    try:
        message.send(fail_silently=False)
    except smtplib.SMTPRecipientsRefused as exc:
        return Attempt(ok=False, error=f"recipients refused: {', '.join(exc.recipients)}")
    except (smtplib.SMTPException, OSError) as exc:
        return Attempt(ok=False, retryable=True, error=f"{type(exc).__name__}: {exc}"[:500])
    return Attempt(ok=True)


# -- webhook -------------------------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`: the signature header's value."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float | None = None,
    tolerance: float = SIGNATURE_TOLERANCE_SECONDS,
) -> bool:
    """What a receiver does: recompute the signature and refuse stale timestamps."""
    try:
        age = (time.time() if now is None else now) - int(timestamp)
    except ValueError:
        return False
    if abs(age) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def channel_destination(channel: AlertChannel) -> str:
    """Where a channel sends, safe to display: addresses, or a webhook's origin only.

    A webhook URL's path can be a credential (Slack's incoming webhooks are), so neither
    delivery records nor logs carry it.
    """
    if channel.kind == AlertChannelKind.WEBHOOK:
        parts = urlsplit(channel.url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…" if parts.netloc else ""
    return ", ".join(channel.recipient_list())[:500]


def without_url(text: str, url: str) -> str:
    """`text` with the webhook URL's path and query removed (requests' errors quote them)."""
    parts = urlsplit(url)
    for part in (url, parts.path + ("?" + parts.query if parts.query else ""), parts.path):
        if len(part) > 1:
            text = text.replace(part, "/…")
    return text


def send_webhook(delivery: AlertDelivery, channel: AlertChannel) -> Attempt:
    try:
        url = validate_webhook_url(channel.url)
        secret = channel.get_secret()
    except ValidationError as exc:
        return Attempt(ok=False, error="; ".join(exc.messages))
    except CredentialsUnreadable as exc:
        return Attempt(ok=False, error=f"signing secret unreadable: {exc}")
    if not secret:
        return Attempt(ok=False, error="the channel has no signing secret")
    body = json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "JobCenter-Alerts/1",
        "X-JobCenter-Delivery": str(delivery.pk),
        "X-JobCenter-Timestamp": timestamp,
        "X-JobCenter-Signature": sign(secret, timestamp, body),
    }
    timeout = settings.JOBCENTER_ALERT_WEBHOOK_TIMEOUT
    try:
        response = requests.post(
            url, data=body, headers=headers, timeout=(timeout, timeout), allow_redirects=False
        )
    except requests.Timeout:
        return Attempt(ok=False, retryable=True, error=f"timed out after {timeout:g}s")
    except requests.RequestException as exc:
        error = without_url(f"{type(exc).__name__}: {exc}", url)
        return Attempt(ok=False, retryable=True, error=error[:500])
    code = response.status_code
    if 200 <= code < 300:
        return Attempt(ok=True, response_code=code)
    excerpt = " ".join(response.text[:200].split())
    return Attempt(
        ok=False,
        retryable=code >= 500 or code in (408, 429),
        response_code=code,
        error=f"HTTP {code}" + (f": {excerpt}" if excerpt else ""),
    )


# --- validation (admin forms and model clean) ---------------------------------------


def validate_webhook_url(url: str) -> str:
    """An http(s) URL without credentials; loopback only in development."""
    from jobcenter.accounts import is_loopback

    url = (url or "").strip()
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise ValidationError("Enter a full http(s) URL.", code="invalid")
    if parts.username or parts.password:
        raise ValidationError("The URL must not carry a user or password.", code="invalid")
    if is_loopback(host) and not settings.JOBCENTER_ALERT_ALLOW_LOOPBACK_WEBHOOKS:
        raise ValidationError(
            "Loopback webhook URLs are allowed only in development "
            "(JOBCENTER_ALERT_ALLOW_LOOPBACK_WEBHOOKS).",
            code="loopback",
        )
    return url


def validate_channel(channel: AlertChannel, secret: str = "") -> dict[str, list[str]]:
    """Field errors of a channel; `secret` is a newly typed one (blank keeps the stored)."""
    errors: dict[str, list[str]] = {}
    if channel.kind == AlertChannelKind.EMAIL:
        recipients = channel.recipient_list()
        if not recipients:
            errors["recipients"] = ["Enter at least one email address."]
        for address in recipients:
            try:
                validate_email(address)
            except ValidationError:
                errors.setdefault("recipients", []).append(f"{address} is not an email address.")
    elif channel.kind == AlertChannelKind.WEBHOOK:
        try:
            channel.url = validate_webhook_url(channel.url)
        except ValidationError as exc:
            errors["url"] = exc.messages
        if not secret and not channel.has_secret:
            errors["secret"] = ["A webhook needs a signing secret."]
        elif secret and len(secret) < 16:
            errors["secret"] = ["Use at least 16 characters."]
    return errors


def validate_rule(rule: AlertRule) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if not (job_events(rule) or account_events(rule)):
        errors["__all__"] = ["Choose at least one event."]
    unknown = [p for p in rule.provider_list() if p not in PROVIDER_CLASSES]
    if unknown:
        errors["providers"] = [
            f"Unknown provider {', '.join(unknown)}; known: {', '.join(PROVIDER_CLASSES)}."
        ]
    if not 0 <= rule.partial_min_percent < 100:
        errors["partial_min_percent"] = ["Enter a share from 0 up to (not including) 100."]
    if (rule.quiet_start is None) != (rule.quiet_end is None):
        errors["quiet_end"] = ["Give both ends of the quiet hours, or neither."]
    try:
        ZoneInfo(rule.quiet_timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        errors["quiet_timezone"] = [f"{rule.quiet_timezone} is not a known time zone."]
    return errors


# --- default rules ------------------------------------------------------------------

DEFAULT_RULES: dict[str, dict[str, Any]] = {
    "all-failures": {
        "name": "All job failures",
        "on_job_failed": True,
        "on_job_partially_failed": True,
    },
    "account-failing": {"name": "Accounts failing 3 syncs in a row", "account_failures": 3},
}


def ensure_default_rules() -> list[AlertRule]:
    """The sensible rules, created once (staff edits are kept); inactive until given a channel."""
    rules = []
    for key, fields in DEFAULT_RULES.items():
        rule, _ = AlertRule.objects.get_or_create(default_key=key, defaults=fields)
        rules.append(rule)
    return rules


def use_channel_for_default_rules(channel: AlertChannel) -> int:
    """Give the default rules that have no channel yet this one (the demo's console email)."""
    ensure_default_rules()
    return (
        AlertRule.objects.exclude(default_key="")
        .filter(channel__isnull=True)
        .update(channel=channel)
    )
