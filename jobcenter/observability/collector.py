"""The gauges read from the database when Prometheus scrapes: five queries, whatever the
number of accounts, jobs or deliveries.

- jobs by provider and status: one GROUP BY (an index-only scan with the (provider,
  status) index; a full scan of the job table without it);
- accounts by provider, status and enabled: one GROUP BY on a small table;
- the oldest due sweep's lag: one aggregate over the accounts the dispatcher would
  queue now (`jobcenter.tasks.free_accounts`, `sweep_due_accounts`);
- alert deliveries not sent yet, by status: one GROUP BY along the `alertdelivery_due`
  index;
- queue depth: the broker check of /healthz (a count of the ORM broker's queue, or the
  length of Redis's list).

A part that fails (the database away, Redis down) is left out of the answer and
`jobcenter_scrape_part_up{part}` says 0: the counters of the same scrape still go out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from django.db.models import Count, Min
from django.db.models.functions import Coalesce
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from jobcenter.health import check_broker
from jobcenter.models import AlertDelivery, AlertDeliveryStatus, Job, ProviderAccount
from jobcenter.tasks import free_accounts, sweep_due_accounts

logger = logging.getLogger("jobcenter.observability")

WAITING = (
    AlertDeliveryStatus.PENDING,
    AlertDeliveryStatus.SENDING,
    AlertDeliveryStatus.RETRYING,
)


def jobs() -> Iterator[Metric]:
    gauge = GaugeMetricFamily(
        "jobcenter_jobs",
        "Jobs Job Center keeps, by provider and status (jobs gone from the provider included).",
        labels=["provider", "status"],
    )
    rows = Job.objects.order_by().values_list("provider", "status").annotate(n=Count("*"))
    for provider, status, count in rows:
        gauge.add_metric([provider, status], count)
    yield gauge


def accounts() -> Iterator[Metric]:
    gauge = GaugeMetricFamily(
        "jobcenter_accounts",
        "Provider accounts by provider, last status (new, ok, failing) and enabled.",
        labels=["provider", "status", "enabled"],
    )
    rows = (
        ProviderAccount.objects.order_by()
        .values_list("provider", "last_status", "enabled")
        .annotate(n=Count("*"))
    )
    for provider, status, enabled, count in rows:
        gauge.add_metric([provider, status, "true" if enabled else "false"], count)
    yield gauge


def sweep_lag() -> Iterator[Metric]:
    now = timezone.now()
    oldest = (
        ProviderAccount.objects.filter(free_accounts(now), sweep_due_accounts(now))
        .order_by()
        .aggregate(due=Min(Coalesce("next_sync_at", "created_at")))["due"]
    )
    yield GaugeMetricFamily(
        "jobcenter_oldest_due_sweep_lag_seconds",
        "How long the account that has waited longest for its sweep has been due and not "
        "taken (0 when none waits): the dispatcher and the workers are keeping up when "
        "this stays within a dispatch cycle or two.",
        value=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
    )


def deliveries_waiting() -> Iterator[Metric]:
    gauge = GaugeMetricFamily(
        "jobcenter_alert_deliveries_waiting",
        "Alert deliveries not sent yet and not given up on, by status.",
        labels=["status"],
    )
    rows = dict(
        AlertDelivery.objects.filter(status__in=WAITING)
        .order_by()
        .values_list("status")
        .annotate(n=Count("*"))
    )
    for status in WAITING:
        gauge.add_metric([status.value], rows.get(status, 0))
    yield gauge


def queue_depth() -> Iterator[Metric]:
    broker = check_broker()
    gauge = GaugeMetricFamily(
        "jobcenter_queue_depth",
        "Tasks waiting in the django-q2 queue (sweeps, hot passes, alert deliveries).",
        labels=["broker"],
    )
    gauge.add_metric([broker["broker"]], broker["queued"])
    yield gauge


PARTS: dict[str, Callable[[], Iterator[Metric]]] = {
    "jobs": jobs,
    "accounts": accounts,
    "sweep_lag": sweep_lag,
    "deliveries": deliveries_waiting,
    "queue": queue_depth,
}


class DatabaseCollector:
    """A prometheus_client collector: each scrape runs every part once."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "jobcenter_scrape_part_up",
            "1 when this part of the scrape was read, 0 when it failed (see the web log).",
            labels=["part"],
        )
        for name, part in PARTS.items():
            try:
                found = list(part())
            except Exception:
                logger.exception("metrics: the %s part of the scrape failed", name)
                up.add_metric([name], 0)
                continue
            up.add_metric([name], 1)
            yield from found
        yield up

    def describe(self) -> Iterator[Any]:
        return iter(())  # nothing to check at registration: the families vary by scrape
