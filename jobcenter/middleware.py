"""Admin pages show times in the staff member's own zone.

The browser names its zone (IANA, e.g. "Europe/Paris") in a cookie set by
`jobcenter/static/jobcenter/timezone.js`; there is no per-user setting to keep. Only
admin pages are affected: the API keeps answering in the server's zone whatever cookie a
browser carries.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone

TIMEZONE_COOKIE = "jobcenter_tz"


def zone_from_cookie(value: str | None) -> ZoneInfo | None:
    """The zone the cookie names (URL-encoded by the script), or None when it names none
    (typos, tampering)."""
    value = unquote(value or "")
    if not value or len(value) > 64:
        return None
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return None


class StaffTimezoneMiddleware:
    """Activate the browser's zone for admin requests; the server's zone otherwise."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.admin_prefix: str | None = None

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self.admin_prefix is None:
            self.admin_prefix = reverse("admin:index")
        zone = None
        if request.path.startswith(self.admin_prefix):
            zone = zone_from_cookie(request.COOKIES.get(TIMEZONE_COOKIE))
        if zone is None:
            return self.get_response(request)
        # Template responses are rendered inside get_response, so within the override.
        with timezone.override(zone):
            return self.get_response(request)
