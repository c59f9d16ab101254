"""GET /healthz: is this node able to do its work? For load balancers and monitors.

Three checks, each reported on its own so the one that fails is named:
- database: one `SELECT 1`;
- broker: the django-q2 queue (a query on its table for the ORM broker, PING for Redis),
  with the number of queued tasks;
- sync: the age of the newest successful sync of any enabled account. Stale syncs mean
  the clusters are down or every provider is failing; it fails only past
  JOBCENTER_HEALTH_MAX_SYNC_AGE_MINUTES (0: reported, never failing).

200 with JSON when every check passes, 503 with the same JSON otherwise. No auth (a load
balancer has none) and so nothing secret: errors are reported by exception class only,
never by message (a driver's message can carry a host, a user or a URL).

`HealthCheckMiddleware` answers /healthz ahead of the rest of the stack: a load balancer
probes each backend by IP over plain HTTP, which the Host check (ALLOWED_HOSTS) and the
HTTPS redirect would otherwise turn into 400 and 301.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from functools import cache
from typing import Any

from django.conf import settings
from django.db import connections
from django.db.models import Count, Max, Min
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

HEALTH_PATHS = frozenset({"/healthz", "/healthz/"})
REDIS_TIMEOUT_SECONDS = 2.0

Check = dict[str, Any]


def _timed(check: Callable[[], Check]) -> Check:
    """Run one check; any exception is a failure named by its class only."""
    started = time.perf_counter()
    try:
        result = check()
    except Exception as exc:  # a health check reports failures, it does not raise them
        result = {"ok": False, "error": type(exc).__name__}
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


def check_database() -> Check:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"ok": True}


@cache
def _redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(
        url,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
    )


def check_broker() -> Check:
    """The queue the clusters read: PING on Redis, a count on the ORM broker's table."""
    from django_q.conf import Conf

    if settings.REDIS_URL:
        client = _redis_client(settings.REDIS_URL)
        client.ping()
        return {
            "ok": True,
            "broker": "redis",
            "queued": client.llen(f"django_q:{Conf.CLUSTER_NAME}:q"),
        }
    from django_q.models import OrmQ

    queued = OrmQ.objects.using(Conf.ORM or "default").filter(key=Conf.CLUSTER_NAME).count()
    return {"ok": True, "broker": "orm", "queued": queued}


def check_sync() -> Check:
    """Age of the newest successful sync of any enabled account."""
    from jobcenter.models import ProviderAccount

    max_minutes = settings.JOBCENTER_HEALTH_MAX_SYNC_AGE_MINUTES
    found = ProviderAccount.objects.filter(enabled=True).aggregate(
        accounts=Count("id"), last=Max("last_success_at"), oldest=Min("created_at")
    )
    now = timezone.now()
    result: Check = {
        "ok": True,
        "enabled_accounts": found["accounts"],
        "last_success_age_seconds": (
            round((now - found["last"]).total_seconds()) if found["last"] else None
        ),
        "max_age_seconds": max_minutes * 60 or None,
    }
    if not found["accounts"] or not max_minutes:
        return result
    limit = timedelta(minutes=max_minutes)
    # Never synced: fail only once the oldest enabled account has had the time to sync.
    since = found["last"] or found["oldest"]
    result["ok"] = now - since <= limit
    return result


def health() -> tuple[bool, dict[str, Check]]:
    """Run every check; the sync check needs the database, so it follows it."""
    checks = {"database": _timed(check_database), "broker": _timed(check_broker)}
    if checks["database"]["ok"]:
        checks["sync"] = _timed(check_sync)
    else:
        checks["sync"] = {"ok": False, "error": "database unavailable"}
    return all(check["ok"] for check in checks.values()), checks


def healthz(request: HttpRequest) -> HttpResponse:
    """200 when healthy, 503 naming the failing checks; never cached."""
    if request.method not in ("GET", "HEAD"):
        response: HttpResponse = JsonResponse({"detail": "Use GET."}, status=405)
        response["Allow"] = "GET, HEAD"
        return response
    ok, checks = health()
    body: dict[str, Any] = {"status": "ok" if ok else "fail", "checks": checks}
    if not ok:
        body["failing"] = [name for name, check in checks.items() if not check["ok"]]
    response = JsonResponse(body, status=200 if ok else 503)
    response["Cache-Control"] = "no-store"
    return response


class HealthCheckMiddleware:
    """Answers /healthz before the Host check and the HTTPS redirect (see module doc)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info in HEALTH_PATHS:
            return healthz(request)
        return self.get_response(request)
