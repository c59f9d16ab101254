"""The counters and the histogram, added to where sync runs and alert deliveries end.

`observe_run` is called once per sync run or hot pass when it ends (`RunBook.finish`,
`skip_run`, and the hot pass that changed nothing and so leaves no SyncRun row),
`observe_delivery` once per delivery attempt, `observe_response` once per web answer
(`views.MetricsMiddleware`). They never raise: a metric must not fail a sync.

The instruments are made at their first use, not at import: prometheus_client picks
multiprocess mode from `PROMETHEUS_MULTIPROC_DIR` when a metric is made, and the demo
sets that variable only once it runs. Without it they live in this process's memory
(one process: the tests, `runserver`); with it, in the node's directory (`files`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.utils import timezone

from jobcenter.models import SyncOutcome, SyncRun
from jobcenter.observability import files
from providers.http import HttpCounters

logger = logging.getLogger("jobcenter.observability")

# Seconds: a hot pass takes a second or two, a first sweep of a large account many minutes.
DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600)
# Web answers are counted under the first segment of their path when it is one of these.
AREAS = frozenset({"admin", "api", "static"})
# The fault name the HTTP client keeps for a "slow down" answer it waited out.
RATE_LIMITED_FAULT = "RateLimited"


@dataclass(frozen=True)
class Instruments:
    registry: Any  # the process's own CollectorRegistry (one-process mode)
    sync_runs: Any
    sync_duration: Any
    requests: Any
    retries: Any
    rate_limited: Any
    waited: Any
    deliveries: Any
    responses: Any


@cache
def instruments() -> Instruments:
    """Made once per process, in multiprocess mode when the environment asks for it."""
    from prometheus_client import (
        CollectorRegistry,
        Counter,
        Histogram,
        disable_created_metrics,
        values,
    )

    path = files.directory()
    if path is not None:
        files.prepare(path)
    # Chosen now rather than when prometheus_client was first imported (see module doc).
    values.ValueClass = values.get_value_class()
    # No `_created` series: multiprocess mode has none, and one process should read alike.
    disable_created_metrics()
    registry = CollectorRegistry(auto_describe=True)
    provider = ["provider"]
    return Instruments(
        registry=registry,
        sync_runs=Counter(
            "jobcenter_sync_runs",
            "Sync runs and hot passes that ended, by provider, trigger and outcome (hot "
            "passes that changed nothing included, though they leave no SyncRun row).",
            ["provider", "trigger", "outcome"],
            registry=registry,
        ),
        sync_duration=Histogram(
            "jobcenter_sync_duration_seconds",
            "How long sync runs and hot passes took, from start to end.",
            ["provider", "trigger"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        ),
        requests=Counter(
            "jobcenter_provider_requests",
            "Requests sent to providers by syncs and hot passes (every attempt).",
            provider,
            registry=registry,
        ),
        retries=Counter(
            "jobcenter_provider_retries",
            "Provider requests tried again after a transient failure or a rate limit.",
            provider,
            registry=registry,
        ),
        rate_limited=Counter(
            "jobcenter_provider_rate_limited",
            "Provider answers asking to slow down (HTTP 429, or a provider's own form): "
            "those waited out and those that deferred a run.",
            provider,
            registry=registry,
        ),
        waited=Counter(
            "jobcenter_provider_wait_seconds",
            "Seconds provider requests waited: for a rate-limit token, a Retry-After, or "
            "a retry's backoff.",
            provider,
            registry=registry,
        ),
        deliveries=Counter(
            "jobcenter_alert_deliveries",
            "Alert delivery attempts, by channel kind and the status each left the "
            "delivery in (sent, retrying, failed).",
            ["channel_kind", "status"],
            registry=registry,
        ),
        responses=Counter(
            "jobcenter_http_responses",
            "Web answers by area (admin, api, static, other) and HTTP status; /healthz and "
            "/metrics are not counted.",
            ["area", "status"],
            registry=registry,
        ),
    )


def observe_run(run: SyncRun, outcome: str, counters: HttpCounters | None) -> None:
    """Count one run or pass that ended, with its HTTP client's counters if it had one."""
    try:
        metrics = instruments()
        provider = run.account.provider
        ended = run.finished_at or timezone.now()
        metrics.sync_runs.labels(provider, run.trigger, outcome).inc()
        metrics.sync_duration.labels(provider, run.trigger).observe(
            max(0.0, (ended - run.started_at).total_seconds())
        )
        deferred = outcome == SyncOutcome.DEFERRED  # the answer that stopped it: one more
        if counters is None:
            if deferred:
                metrics.rate_limited.labels(provider).inc()
            return
        metrics.requests.labels(provider).inc(counters.requests)
        metrics.retries.labels(provider).inc(counters.retries)
        metrics.rate_limited.labels(provider).inc(
            counters.faults.count(RATE_LIMITED_FAULT) + deferred
        )
        metrics.waited.labels(provider).inc(counters.waited_seconds)
    except Exception:  # a metric must never fail a sync
        logger.exception("metrics: sync run %s not counted", run.pk)


def observe_delivery(channel_kind: str, status: str) -> None:
    """Count one delivery attempt by the status it left the delivery in."""
    try:
        instruments().deliveries.labels(channel_kind, status).inc()
    except Exception:
        logger.exception("metrics: alert delivery attempt not counted")


def observe_response(path: str, status: int) -> None:
    """Count one web answer under its area and status."""
    try:
        area = path.lstrip("/").split("/", 1)[0]
        instruments().responses.labels(area if area in AREAS else "other", str(status)).inc()
    except Exception:
        logger.exception("metrics: web answer not counted")
