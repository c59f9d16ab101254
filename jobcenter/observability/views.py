"""GET /metrics: Prometheus's text format, for a scraper on the network or on the node.

Who may read it: a request with `Authorization: Bearer <JOBCENTER_METRICS_TOKEN>`
(compared in constant time); with DEBUG on, any request from loopback too. Anyone else
is passed on to the rest of the stack, which answers as for a path that does not exist
(a 404; no token set and DEBUG off: the endpoint is off). The socket's peer decides "loopback", never a forwarded header.

`MetricsMiddleware` answers ahead of the Host check and the HTTPS redirect, as
/healthz's does: Prometheus scrapes each node by address over plain HTTP. It also counts
every other answer of the web process by area and status.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from jobcenter.observability import files
from jobcenter.observability.collector import DatabaseCollector
from jobcenter.observability.metrics import instruments, observe_response

METRICS_PATHS = frozenset({"/metrics", "/metrics/"})


def from_loopback(request: HttpRequest) -> bool:
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def allowed(request: HttpRequest) -> bool:
    """A matching bearer token; or DEBUG and loopback."""
    token = settings.JOBCENTER_METRICS_TOKEN
    if token:
        scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            return True
    return settings.DEBUG and from_loopback(request)


def exposition() -> tuple[bytes, str]:
    """The scrape's body and content type: this node's counters and the database's gauges."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    path = files.directory()
    if path is None:
        registry.register(instruments().registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    instruments()  # the node's fresh start, if this process is its first
    files.compact(path)
    MultiProcessCollector(registry, path=str(path))
    with files.locked(path, exclusive=False):  # no compaction halfway through the read
        return generate_latest(registry), CONTENT_TYPE_LATEST


def metrics(request: HttpRequest) -> HttpResponse:
    """The scrape, for a caller `allowed` to read it."""
    if request.method not in ("GET", "HEAD"):
        response = HttpResponse("Use GET.\n", status=405, content_type="text/plain")
        response["Allow"] = "GET, HEAD"
        return response
    body, content_type = exposition()
    response = HttpResponse(body, content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response


class MetricsMiddleware:
    """Answers /metrics before the Host check and the HTTPS redirect (see module doc)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info in METRICS_PATHS and allowed(request):
            return metrics(request)
        # No URL of its own: a refused scrape goes on, to the 404 of an unknown path.
        response = self.get_response(request)
        observe_response(request.path_info, response.status_code)
        return response
