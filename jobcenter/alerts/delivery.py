"""Delivery: one attempt per task, every attempt logged, retries with a doubling backoff.

Delivery runs in its own django-q2 task (`jobcenter.tasks.deliver_alert`, which calls
`deliver`), queued when the evaluation commits: a slow or dead receiver never holds a
sync. Each task makes one attempt; a failed attempt that may succeed later (timeout,
connection error, 5xx, 408, 429) is retried from the every-minute schedule after a
backoff that doubles, up to JOBCENTER_ALERT_DELIVERY_ATTEMPTS attempts. Every attempt is
logged on the AlertDelivery row staff read in admin.

The task is queued by its dotted name, never imported: `jobcenter.tasks` imports the
alerts, so the alerts must not import it back.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone
from django_q.tasks import async_task

from jobcenter.alerts.channels import Attempt, send_email
from jobcenter.alerts.webhooks import send_webhook
from jobcenter.models import AlertChannelKind, AlertDelivery, AlertDeliveryStatus
from jobcenter.observability.metrics import observe_delivery

logger = logging.getLogger("jobcenter.alerts")

# The django-q2 task that makes one attempt. Rows queued before it moved to
# `jobcenter.tasks` name "jobcenter.alerts.deliver", which still imports (the package
# re-exports `deliver`).
DELIVER_TASK = "jobcenter.tasks.deliver_alert"
MAX_BACKOFF_SECONDS = 3600.0
RETRY_BATCH = 100
ATTEMPT_LOG_LENGTH = 20


def sending_lease() -> timedelta:
    """How long a delivery counts as being sent before another worker may try again."""
    return timedelta(seconds=2 * settings.JOBCENTER_ALERT_WEBHOOK_TIMEOUT + 60)


def backoff_seconds(attempts: int) -> float:
    """The wait after the `attempts`-th failed attempt: doubling, capped at an hour."""
    base = settings.JOBCENTER_ALERT_RETRY_BACKOFF
    return min(MAX_BACKOFF_SECONDS, base * 2 ** max(0, attempts - 1))


def enqueue_deliveries(ids: list[int]) -> None:
    """Queue one attempt for each delivery (ids only: django-q2 stores the arguments)."""
    for delivery_id in ids:
        async_task(
            DELIVER_TASK,
            delivery_id,
            task_name=f"alert delivery {delivery_id}",
            group="alerts",
        )


def deliver(delivery_id: int) -> str:
    """One attempt at one delivery, recorded on its row; returns the delivery's status.

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
    """Send by the channel's kind."""
    channel = delivery.channel
    if channel is None:
        return Attempt(ok=False, error="the channel was deleted")
    if channel.kind == AlertChannelKind.WEBHOOK:
        return send_webhook(delivery, channel)
    return send_email(delivery, channel)


def record_attempt(
    delivery: AlertDelivery, attempt: Attempt, started_at: datetime, seconds: float
) -> None:
    """Log the attempt on the row and set what comes next: sent, a retry, or failed."""
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
    ][-ATTEMPT_LOG_LENGTH:]
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
    observe_delivery(delivery.channel_kind, delivery.status)  # for /metrics


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
