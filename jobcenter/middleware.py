"""What wraps each request: the staff member's time zone, and who may log in how often.

Admin pages show times in the staff member's own zone. The browser names its zone (IANA,
e.g. "Europe/Paris") in a cookie set by `jobcenter/static/jobcenter/timezone.js`; there is
no per-user setting to keep. Only admin pages are affected: the API keeps answering in the
server's zone whatever cookie a browser carries.

Logins (the admin's and the API's login pages) go through django-axes (settings
`AXES_*`): `LockoutBackend` refuses a username or a client address that failed too often,
`client_address` says whose address a request is (the proxy's forwarded one behind the
load balancer), and `lockout_response` is the page a locked-out login gets.

Every answer carries the Content-Security-Policy of settings.CONTENT_SECURITY_POLICY
(`ContentSecurityPolicyMiddleware`, django-csp's with DRF's pages' style attributes, and
the identity provider's origin as a form target when sign-in with OpenID Connect is on).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from axes.backends import AxesStandaloneBackend
from axes.helpers import get_cool_off
from csp.constants import UNSAFE_INLINE
from csp.middleware import CSPMiddleware, PolicyParts
from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from jobcenter.oidc.config import issuer_origin

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


class LockoutBackend(AxesStandaloneBackend):
    """django-axes' check, first of the authentication backends, for web logins only.

    A call without a request (the test client's `login`, a shell) is no web login: axes
    counts no failure without a request either, so it passes on to the next backend
    instead of raising axes' "request required".
    """

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)


def client_address(request: HttpRequest) -> str | None:
    """The client's address for axes' per-address count.

    Behind the load balancer (JOBCENTER_BEHIND_TLS_PROXY) REMOTE_ADDR is the proxy's, and
    each proxy appends the address it saw to X-Forwarded-For: the entry
    JOBCENTER_PROXY_COUNT from the right is the client's (entries left of it are the
    client's own claims). Without the proxy the header is the client's to forge: ignored.
    """
    remote = request.META.get("REMOTE_ADDR")
    if not settings.JOBCENTER_BEHIND_TLS_PROXY:
        return remote
    forwarded = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [hop for hop in forwarded if hop]
    if not forwarded:
        return remote
    candidate = forwarded[-min(settings.JOBCENTER_PROXY_COUNT, len(forwarded))]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return remote


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: Any = None
) -> HttpResponse:
    """A 429 page that says why and for how long, with Retry-After (axes' lockout callable)."""
    seconds = int(get_cool_off(request).total_seconds())
    response = render(
        request,
        "admin/lockout.html",
        {
            "title": "Too many failed logins",
            "site_header": admin.site.site_header,
            "site_title": admin.site.site_title,
            "failure_limit": settings.AXES_FAILURE_LIMIT,
            "cooloff_minutes": max(1, seconds // 60),
        },
        status=429,
    )
    response["Retry-After"] = str(seconds)
    return response


# DRF's pages: the browsable API (jobcenter.api) and its login page (jobcenter.urls).
BROWSABLE_API_PREFIXES = ("/api/v1/", "/api/auth/")


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's policy (settings.CONTENT_SECURITY_POLICY), with style attributes allowed
    on DRF's pages only.

    DRF's Bootstrap 3 templates lay out with `style="..."` attributes (its login box, its
    forms, the filter button), which `style-src 'self'` refuses; the admin, the dashboard
    and Swagger UI need none, so they keep the strict policy.
    """

    def get_policy_parts(
        self, request: HttpRequest, response: HttpResponseBase, report_only: bool = False
    ) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        if request.path_info.startswith(BROWSABLE_API_PREFIXES):
            parts.update = {**(parts.update or {}), "style-src-attr": [UNSAFE_INLINE]}
        if settings.JOBCENTER_OIDC_ISSUER:
            # "Log out" posts here and is redirected to the identity provider's sign-out,
            # which form-action governs too (jobcenter.oidc.views.SignOut).
            origin = issuer_origin(settings.JOBCENTER_OIDC_ISSUER)
            parts.update = {**(parts.update or {}), "form-action": [origin]}
        return parts
