"""The event ledger: which jobs and accounts meet a rule, recorded in one statement each.

One `INSERT INTO alertevent ... SELECT ... ON CONFLICT DO NOTHING` per event type
records every job (or account) that meets the rule. AlertEvent is unique on (rule, job
or account, event, episode), so only alerts never recorded before are inserted; they
carry this evaluation's batch id, which is how it reads back its own.

The episode (see AlertEvent) makes "once per job and event" survive recovery: a job that
stays failed keeps its episode and alerts once; one that recovers and fails again has a
new episode and alerts again. Nothing depends on wall time.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import connection
from django.db.models import (
    BigIntegerField,
    CharField,
    DateTimeField,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Cast, Coalesce

from jobcenter.models import (
    AlertEvent,
    AlertEventType,
    AlertRule,
    Job,
    JobSnapshot,
    ProviderAccount,
    SyncOutcome,
    SyncRun,
)
from jobcenter.queries.dashboard import running_since
from providers.base import Status

# The states an event is about: its episode starts when the job last entered them.
JOB_EVENT_STATES: dict[str, list[str]] = {
    AlertEventType.JOB_FAILED: [Status.FAILED.value],
    AlertEventType.JOB_PARTIALLY_FAILED: [Status.PARTIALLY_FAILED.value],
    AlertEventType.JOB_STUCK: [Status.QUEUED.value, Status.RUNNING.value],
}
SUCCESSFUL_RUNS = [SyncOutcome.SUCCEEDED, SyncOutcome.PARTIAL]
# A failed job alerts once its error records are stored (the message quotes the first),
# or after this long without them (the provider may never give them).
ERROR_WAIT = timedelta(minutes=15)


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
        jobs = jobs.alias(running_since=running_since()).filter(
            is_terminal=False, running_since__lt=limit
        )
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
