"""The export throttle, shared by the API and the admin (the same counter per user)."""

from __future__ import annotations

from types import SimpleNamespace

from django.http import HttpRequest
from rest_framework.throttling import ScopedRateThrottle

EXPORT_SCOPE = "jobcenter-export"


def export_wait(request: HttpRequest) -> float | None:
    """None when this user may export now (the export is counted), else seconds to wait.

    DRF's own ScopedRateThrottle with the API's scope, so an export from the admin and
    one from the API count against the same limit (the cache key is the user's id).
    """
    throttle = ScopedRateThrottle()
    if throttle.allow_request(request, SimpleNamespace(throttle_scope=EXPORT_SCOPE)):
        return None
    return throttle.wait() or 0.0
