"""Selectors behind the admin's dashboard and job page: plain functions, few queries.

The job figures come from one GROUP BY over a bounded window (jobs created in the last
30 days, on the created-time index), never a query per row, so the dashboard costs the
same three queries with ten jobs or ten million.
Days are the staff member's days: their boundaries are computed in the active zone.
Figures are the staff member's teams' (`jobcenter.queries.scoping`): `build_dashboard`
narrows the jobs and accounts it reads, and the selectors take those querysets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.db.models import (
    Case,
    Count,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from jobcenter.models import AccountStatus, Job, JobSnapshot, ProviderAccount, SyncRun
from jobcenter.queries.scoping import scoped
from providers import PROVIDER_CLASSES, get_provider
from providers.base import FAILED_STATUSES, TERMINAL_STATUSES, Status

WINDOW_DAYS = 30
STUCK_LIST_LIMIT = 20
FAILED_VALUES = frozenset(s.value for s in FAILED_STATUSES)
TERMINAL_VALUES = frozenset(s.value for s in TERMINAL_STATUSES)
# Order the statuses are shown in: the live ones first, then the outcomes.
STATUS_ORDER = [
    Status.QUEUED,
    Status.RUNNING,
    Status.SUCCEEDED,
    Status.PARTIALLY_FAILED,
    Status.FAILED,
    Status.CANCELLED,
    Status.EXPIRED,
    Status.UNKNOWN,
]


# --- stuck jobs ---------------------------------------------------------------------------


def stuck_thresholds() -> dict[str, int]:
    """Minutes per kind after which a job that has not ended is stuck; "*" for the rest."""
    configured = dict(getattr(settings, "JOBCENTER_STUCK_MINUTES", {}) or {})
    configured.setdefault("*", 120)
    return {kind: int(minutes) for kind, minutes in configured.items()}


def stuck_threshold(kind: str) -> int:
    thresholds = stuck_thresholds()
    return thresholds.get(kind, thresholds["*"])


def running_since(path: str = "") -> Coalesce:
    """When a job started running: the provider's start time, else its creation time,
    else when Job Center first saw it (a tracked id not fetched yet).

    The one definition the dashboard, the stuck-job alerts and their messages share;
    `path` reaches the job from a related model ("job__" from an alert event).
    """
    return Coalesce(f"{path}started_at", f"{path}created_at", f"{path}first_seen_at")


def with_running_since(queryset: QuerySet[Job]) -> QuerySet[Job]:
    """Annotate `running_since` (see `running_since`) on each job."""
    return queryset.annotate(running_since=running_since())


def stuck_condition(now: datetime) -> Q:
    """Jobs (annotated by `with_running_since`) not ended, not gone, past their kind's
    threshold. One OR-ed condition, so the filter stays one query whatever the kinds."""
    thresholds = stuck_thresholds()
    default = thresholds.pop("*")
    too_long = Q(running_since__lt=now - timedelta(minutes=default)) & ~Q(kind__in=thresholds)
    for kind, minutes in thresholds.items():
        too_long |= Q(kind=kind, running_since__lt=now - timedelta(minutes=minutes))
    return Q(is_terminal=False, gone_at__isnull=True) & too_long


def stuck_jobs(queryset: QuerySet[Job], now: datetime) -> QuerySet[Job]:
    return with_running_since(queryset).filter(stuck_condition(now))


# --- dashboard figures ----------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderStatusRow:
    provider: str
    label: str
    counts: list[tuple[str, int]]  # (status, count) in STATUS_ORDER

    @property
    def total(self) -> int:
        return sum(n for _, n in self.counts)


@dataclass(frozen=True)
class DayCount:
    day: date
    created: int
    failed: int


@dataclass(frozen=True)
class KindFailureRate:
    provider: str
    kind: str
    ended: int
    failed: int

    @property
    def rate(self) -> float:
        return self.failed / self.ended if self.ended else 0.0


@dataclass
class Dashboard:
    now: datetime
    since: datetime
    status_rows: list[ProviderStatusRow]
    days: list[DayCount]
    failure_rates: list[KindFailureRate]
    accounts: list[ProviderAccount]
    stuck: list[Job]
    more_stuck: bool
    thresholds: dict[str, int] = field(default_factory=dict)
    show_errors: bool = True  # accounts' last errors: for staff who may view accounts


def window_days(now: datetime, days: int = WINDOW_DAYS) -> list[tuple[date, datetime, datetime]]:
    """(day, start, end) of the last `days` days in the active zone, today last.

    Computed with the zone's own rules, so a day with a DST change is 23 or 25 hours.
    """
    zone = timezone.get_current_timezone()
    today = timezone.localtime(now, zone).date()
    first = today - timedelta(days=days - 1)
    bounds = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        start = datetime.combine(day, time.min, tzinfo=zone)
        end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone)
        bounds.append((day, start, end))
    return bounds


@dataclass(frozen=True)
class Tally:
    """Jobs created in the window, counted by (provider, kind, status, day index)."""

    days: list[tuple[date, datetime, datetime]]
    rows: list[tuple[str, str, str, int, int]]


def day_bucket(days: list[tuple[date, datetime, datetime]], lo: int, hi: int) -> Case | Value:
    """The index of the day a row's created_at falls in, as a binary search of CASEs.

    Five comparisons a row for thirty days, where a flat CASE makes fifteen on average;
    the same SQL on SQLite and PostgreSQL, and no per-row time-zone conversion (the day
    boundaries are computed here, in the staff member's zone).
    """
    if hi - lo == 1:
        return Value(lo)
    mid = (lo + hi) // 2
    return Case(
        When(created_at__lt=days[mid][1], then=day_bucket(days, lo, mid)),
        default=day_bucket(days, mid, hi),
        output_field=IntegerField(),
    )


def window_tally(
    now: datetime, days: int = WINDOW_DAYS, jobs: QuerySet[Job] | None = None
) -> Tally:
    """One GROUP BY over the jobs created in the last `days` days, on the created index.

    Every dashboard figure about jobs (status per provider, created and failed per day,
    failure rate per kind) is a sum over these few hundred rows, so the jobs table is
    read once however many figures there are.
    """
    bounds = window_days(now, days)
    rows = (
        (Job.objects.all() if jobs is None else jobs)
        .filter(created_at__gte=bounds[0][1], created_at__lt=bounds[-1][2])
        .order_by()
        .annotate(day=day_bucket(bounds, 0, len(bounds)))
        .values_list("provider", "kind", "status", "day")
        .annotate(n=Count("pk"))
    )
    return Tally(days=bounds, rows=list(rows))


def status_counts(tally: Tally) -> list[ProviderStatusRow]:
    """Jobs of the window by current status, for every registered provider."""
    counts: dict[str, dict[str, int]] = {slug: {} for slug in PROVIDER_CLASSES}
    for provider, _kind, status, _day, n in tally.rows:
        by_status = counts.setdefault(provider, {})
        by_status[status] = by_status.get(status, 0) + n
    return [
        ProviderStatusRow(
            provider=slug,
            label=get_provider(slug).label if slug in PROVIDER_CLASSES else slug,
            counts=[(s.value, by_status.get(s.value, 0)) for s in STATUS_ORDER],
        )
        for slug, by_status in counts.items()
    ]


def daily_counts(tally: Tally) -> list[DayCount]:
    """Jobs created per day of the window, and of them those failed wholly or in part."""
    created = [0] * len(tally.days)
    failed = [0] * len(tally.days)
    for _provider, _kind, status, day, n in tally.rows:
        created[day] += n
        if status in FAILED_VALUES:
            failed[day] += n
    return [DayCount(day, created[i], failed[i]) for i, (day, _, _) in enumerate(tally.days)]


def failure_rates(tally: Tally) -> list[KindFailureRate]:
    """Of the window's jobs that ended, the share that failed (wholly or in part), per
    kind, worst first."""
    ended: dict[tuple[str, str], int] = {}
    failed: dict[tuple[str, str], int] = {}
    for provider, kind, status, _day, n in tally.rows:
        if status not in TERMINAL_VALUES:
            continue
        ended[provider, kind] = ended.get((provider, kind), 0) + n
        if status in FAILED_VALUES:
            failed[provider, kind] = failed.get((provider, kind), 0) + n
    rates = [KindFailureRate(p, k, n, failed.get((p, k), 0)) for (p, k), n in ended.items()]
    return sorted(rates, key=lambda r: (-r.rate, -r.failed, r.provider, r.kind))


def sync_health(
    accounts: QuerySet[ProviderAccount] | None = None, *, with_errors: bool = True
) -> list[ProviderAccount]:
    """Every account, failing ones first, then the longest since a success: one query.

    Each carries `last_run_outcome` (its latest SyncRun's), read by a correlated subquery
    on the (account, started) index. Without `with_errors` the accounts' last errors are
    not read at all (they may quote what a provider said about the account's data).
    """
    latest = SyncRun.objects.filter(account=OuterRef("pk")).order_by("-started_at", "-id")
    hidden = ["credentials_encrypted", "sync_state", "rate_limits"]
    if not with_errors:
        hidden.append("last_error")
    return list(
        (ProviderAccount.objects.all() if accounts is None else accounts)
        .annotate(
            last_run_outcome=Subquery(latest.values("outcome")[:1]),
            health_rank=Case(
                When(last_status=AccountStatus.FAILING, then=Value(0)),
                When(enabled=False, then=Value(2)),
                default=Value(1),
                output_field=IntegerField(),
            ),
        )
        .defer(*hidden)
        .order_by("health_rank", F("last_success_at").asc(nulls_first=True), "name")
    )


def stuck_list(
    now: datetime, limit: int = STUCK_LIST_LIMIT, jobs: QuerySet[Job] | None = None
) -> tuple[list[Job], bool]:
    """The longest-stuck jobs (at most `limit`) and whether there are more: one query."""
    found = list(
        stuck_jobs((Job.objects.all() if jobs is None else jobs).select_related("account"), now)
        .defer("payload", "account__credentials_encrypted", "account__sync_state")
        .order_by("running_since", "pk")[: limit + 1]
    )
    return found[:limit], len(found) > limit


def build_dashboard(user: Any, now: datetime | None = None) -> Dashboard:
    """Every figure of the admin index for `user` (their teams' jobs and accounts), in
    three queries: the window's tally, the accounts with their latest run, the stuck
    jobs. Accounts' last errors only for staff who may view accounts."""
    now = now or timezone.now()
    jobs = scoped(Job.objects.all(), user)
    show_errors = user.has_perm(f"{ProviderAccount._meta.app_label}.view_provideraccount")
    tally = window_tally(now, jobs=jobs)
    stuck, more_stuck = stuck_list(now, jobs=jobs)
    return Dashboard(
        now=now,
        since=tally.days[0][1],
        status_rows=status_counts(tally),
        days=daily_counts(tally),
        failure_rates=failure_rates(tally),
        accounts=sync_health(scoped(ProviderAccount.objects.all(), user), with_errors=show_errors),
        stuck=stuck,
        more_stuck=more_stuck,
        thresholds=stuck_thresholds(),
        show_errors=show_errors,
    )


# --- job page ---------------------------------------------------------------------------

TIMELINE_LIMIT = 100


@dataclass(frozen=True)
class TimelineEntry:
    snapshot: JobSnapshot
    previous_status: str | None  # None on the first observation
    completed_delta: int | None
    failed_delta: int | None
    total_delta: int | None

    @property
    def status_changed(self) -> bool:
        return self.previous_status is not None and self.previous_status != self.snapshot.status


def _delta(now: int | None, before: int | None) -> int | None:
    if now is None or before is None:
        return None
    return now - before


def job_timeline(job: Job, limit: int = TIMELINE_LIMIT) -> tuple[list[TimelineEntry], bool]:
    """The latest `limit` observed changes of a job, oldest first, each with its count
    deltas against the one before; and whether older ones were left out. One query."""
    newest_first = list(
        JobSnapshot.objects.filter(job=job)
        .defer("payload")
        .order_by("-observed_at", "-id")[: limit + 1]
    )
    truncated = len(newest_first) > limit
    ordered = list(reversed(newest_first))
    entries = []
    for before, snapshot in zip([None, *ordered], ordered, strict=False):
        if truncated and before is None:
            continue  # the extra row only serves as the baseline of the next one
        entries.append(
            TimelineEntry(
                snapshot=snapshot,
                previous_status=before.status if before else None,
                completed_delta=_delta(
                    snapshot.completed_count, before.completed_count if before else None
                ),
                failed_delta=_delta(snapshot.failed_count, before.failed_count if before else None),
                total_delta=_delta(snapshot.total_count, before.total_count if before else None),
            )
        )
    return entries, truncated
