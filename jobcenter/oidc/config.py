"""The identity provider's settings and endpoints.

mozilla-django-oidc reads each endpoint from a setting of its own; Job Center asks for the
issuer alone and reads the endpoints from the issuer's discovery document
(`/.well-known/openid-configuration`), fetched on first use and kept for the process.
`setting` answers the library's `get_settings` with them, so its views, backend and
middleware work unchanged.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

# The library's setting names, and the discovery document's key for each.
ENDPOINTS = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
}
DISCOVERY_TIMEOUT = 10  # seconds


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def group_map(raw: str | None) -> dict[str, list[str]]:
    """JOBCENTER_OIDC_GROUP_MAP read and checked (settings): group name to its roles."""
    try:
        value = json.loads(raw or "{}")
    except ValueError as exc:
        raise ImproperlyConfigured(f"JOBCENTER_OIDC_GROUP_MAP is not JSON: {exc}") from None
    if not isinstance(value, dict) or not all(isinstance(r, list) for r in value.values()):
        raise ImproperlyConfigured("JOBCENTER_OIDC_GROUP_MAP is a JSON object of lists of roles.")
    for group, roles in value.items():
        for role in roles:
            named = str(role).startswith(("team:", "group:")) and str(role).split(":", 1)[1]
            if role not in {"staff", "superuser"} and not (named and named.strip()):
                raise ImproperlyConfigured(
                    f"JOBCENTER_OIDC_GROUP_MAP[{group!r}]: {role!r} is none of staff, "
                    "superuser, team:<name>, group:<name>."
                )
    return value


def check(
    issuer: str, client_id: str, secret: str, *, password_login: bool, break_glass: list[str]
) -> None:
    """Start-up checks of the sign-in settings (settings): what is missing, said plainly."""
    if issuer:
        parts = urlsplit(issuer)
        if parts.scheme != "https" and parts.hostname not in LOOPBACK:
            raise ImproperlyConfigured("JOBCENTER_OIDC_ISSUER must be an https URL.")
        if not (client_id and secret):
            raise ImproperlyConfigured(
                "JOBCENTER_OIDC_ISSUER is set: set JOBCENTER_OIDC_CLIENT_ID and "
                "JOBCENTER_OIDC_CLIENT_SECRET too."
            )
    if not password_login and not (issuer and break_glass):
        raise ImproperlyConfigured(
            "JOBCENTER_PASSWORD_LOGIN is off: set JOBCENTER_OIDC_ISSUER (how staff sign in) "
            "and JOBCENTER_BREAK_GLASS_USERS (the superusers who may still use a password)."
        )


class ProviderUnreachable(Exception):
    """The discovery document could not be read (or names another issuer)."""


def enabled() -> bool:
    """Whether sign-in with OpenID Connect is configured."""
    return bool(settings.JOBCENTER_OIDC_ISSUER)


def issuer_origin(issuer: str) -> str:
    """`https://idp.example.com` of an issuer URL: the origin forms may post to (logout)."""
    parts = urlsplit(issuer)
    return f"{parts.scheme}://{parts.netloc}"


@functools.lru_cache(maxsize=4)
def discovery(issuer: str) -> dict[str, Any]:
    """The issuer's discovery document; its `issuer` must be the one configured."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=DISCOVERY_TIMEOUT)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise ProviderUnreachable(f"{url}: {exc.__class__.__name__}") from None
    if str(document.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        raise ProviderUnreachable(f"{url} names issuer {document.get('issuer')!r}")
    return document


def endpoint(key: str) -> str | None:
    """One endpoint of the configured issuer (`end_session_endpoint` may be None)."""
    return discovery(settings.JOBCENTER_OIDC_ISSUER).get(key)


def setting(name: str, *default: Any) -> Any:
    """The library's `get_settings`: endpoints from discovery, the rest from settings."""
    if name in ENDPOINTS:
        return endpoint(ENDPOINTS[name])
    if default:
        return getattr(settings, name, default[0])
    return getattr(settings, name)
