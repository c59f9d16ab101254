"""Evaluation: after every sync and every minute, each rule's new alerts become deliveries.

`evaluate_after_sync` and `evaluate_periodic` cost a constant number of queries per
rule, whatever the number of jobs:

- one INSERT ... SELECT per event type records every job (or account) that meets the
  rule and was never recorded before (see `ledger`);
- one UPDATE claims events that quiet hours held back, once those hours are over;
- one SELECT reads the batch (a digest lists at most DIGEST_LIST_LIMIT of them), one the
  first error of each job listed, one writes the deliveries and one links the events.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from jobcenter.alerts.channels import channel_destination
from jobcenter.alerts.delivery import enqueue_deliveries, retry_due_deliveries, sending_lease
from jobcenter.alerts.ledger import account_rows, insert_events, job_rows
from jobcenter.alerts.messages import digest_text, event_data, event_text, first_errors
from jobcenter.alerts.rules import active_rules, in_quiet_hours, scoped_accounts
from jobcenter.models import (
    AlertChannel,
    AlertDelivery,
    AlertDeliveryStatus,
    AlertEvent,
    AlertEventState,
    AlertRule,
    ProviderAccount,
    SyncOutcome,
    SyncRun,
)
from jobcenter.queries.dashboard import running_since

logger = logging.getLogger("jobcenter.alerts")

# A sync looks back this far for failed jobs, so alerts an interrupted evaluation missed
# are still sent by the next one (the ledger keeps them from being sent twice).
LOOKBACK = timedelta(hours=1)
DIGEST_LIST_LIMIT = 50


@dataclass
class Evaluation:
    """One evaluation: its batch id (the events it inserted carry it) and what it did."""

    now: datetime = field(default_factory=timezone.now)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    fired: int = 0
    held: int = 0
    deliveries: list[int] = field(default_factory=list)


def evaluate_after_sync(run: SyncRun) -> Evaluation:
    """Alerts for the jobs and the account of one finished sync run.

    Called by `sync.engine.sync_account` after the lease is released; its caller logs and
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
            for event in rule.job_events():
                rows = job_rows(rule, event, job_account_id, since, now)
                fired += insert_events(rows, rule, event, evaluation.token, state, now)
        if accounts is not None:
            for event in rule.account_events():
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
        .annotate(job_running_since=running_since("job__"))
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
    """An unsaved pending delivery whose text and payload are fixed now, for every retry."""
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
