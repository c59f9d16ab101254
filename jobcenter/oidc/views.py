"""Sign-in, callback and sign-out, and the periodic check with the identity provider.

mozilla-django-oidc's views with Job Center's answers: 404 while OpenID Connect is not
configured; a refusal, an unreachable provider or an expired sign-in land on the admin's
login page with a message saying so, signed out. Signing out of a session begun at the
identity provider ends it there too (its `end_session_endpoint`, back to the login page).

`SessionRecheck` (mozilla-django-oidc's `SessionRefresh`) sends a browser whose sign-in is
older than `JOBCENTER_OIDC_RECHECK_SECONDS` back to the provider without a prompt: a
session still open there comes straight back, with the groups mapped again; one that
ended there comes back as `login_required` and is signed out here too.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, auth, messages
from django.contrib.auth import BACKEND_SESSION_KEY
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.deprecation import MiddlewareMixin
from django.views import View
from mozilla_django_oidc.middleware import SessionRefresh
from mozilla_django_oidc.views import (
    OIDCAuthenticationCallbackView,
    OIDCAuthenticationRequestView,
)

from jobcenter.oidc import config

logger = logging.getLogger(__name__)

BACKEND = "jobcenter.oidc.backends.OIDCBackend"
EXPIRED = "Your sign-in has expired: sign in again."
UNREACHABLE = "The identity provider does not answer: try again later."
# What a provider answers a prompt-less request when its own session has ended.
SIGNED_OUT_THERE = {"login_required", "interaction_required", "consent_required"}


def login_page(request: HttpRequest, text: str | None = None) -> HttpResponseRedirect:
    """The admin's login page, with `text` as an error message on it."""
    if text:
        messages.error(request, text)
    return HttpResponseRedirect(reverse("admin:login"))


def signed_in_here(request: HttpRequest) -> bool:
    """Whether the request's session was begun at the identity provider."""
    return request.session.get(BACKEND_SESSION_KEY) == BACKEND


class SignIn(OIDCAuthenticationRequestView):
    """Off to the identity provider (state, nonce and PKCE kept in the session)."""

    get_settings = staticmethod(config.setting)

    def __init__(self, **kwargs: Any) -> None:
        View.__init__(self, **kwargs)  # the endpoint is read in get(), not per instance

    def get(self, request: HttpRequest) -> HttpResponse:
        if not config.enabled():
            raise Http404("Sign-in with OpenID Connect is not configured.")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = config.endpoint("authorization_endpoint")
        except config.ProviderUnreachable as exc:
            logger.warning("OIDC discovery failed: %s", exc)
            return login_page(request, UNREACHABLE)
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        return super().get(request)


class Callback(OIDCAuthenticationCallbackView):
    """Back from the identity provider: signed in, or on the login page saying why."""

    get_settings = staticmethod(config.setting)

    @property
    def failure_url(self) -> str:
        return reverse("admin:login")

    @property
    def success_url(self) -> str:
        return self.request.session.get("oidc_login_next") or reverse("admin:index")

    def get(self, request: HttpRequest) -> HttpResponse:
        if not config.enabled():
            raise Http404("Sign-in with OpenID Connect is not configured.")
        error = request.GET.get("error")
        if error in SIGNED_OUT_THERE:
            messages.error(request, EXPIRED)
        elif error:
            description = request.GET.get("error_description", "")[:200]
            messages.error(request, f"The identity provider refused the sign-in: {description}")
        return super().get(request)

    def login_failure(self) -> HttpResponse:
        # The library leaves a session being re-checked signed in: not here.
        if self.request.user.is_authenticated:
            auth.logout(self.request)
        return HttpResponseRedirect(self.failure_url)


class SignOut(View):
    """The admin's "Log out": ends a session begun at the provider there too."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        if not (config.enabled() and signed_in_here(request)):
            return admin.site.logout(request)
        id_token = request.session.get("oidc_id_token")
        auth.logout(request)
        try:
            end_session = config.endpoint("end_session_endpoint")
        except config.ProviderUnreachable:
            end_session = None
        if not end_session:
            return login_page(request)
        query = {
            "client_id": settings.OIDC_RP_CLIENT_ID,
            "post_logout_redirect_uri": request.build_absolute_uri(reverse("admin:login")),
        }
        if id_token:
            query["id_token_hint"] = id_token
        return HttpResponseRedirect(f"{end_session}?{urlencode(query)}")


class SessionRecheck(SessionRefresh):
    """The library's session refresh, off while OpenID Connect is not configured."""

    get_settings = staticmethod(config.setting)

    def __init__(self, get_response: Any) -> None:
        MiddlewareMixin.__init__(self, get_response)  # settings are read per request

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        if not (config.enabled() and signed_in_here(request)):
            return None
        try:
            self.OIDC_OP_AUTHORIZATION_ENDPOINT = config.endpoint("authorization_endpoint")
        except config.ProviderUnreachable as exc:
            logger.warning("OIDC discovery failed, sign-in not re-checked: %s", exc)
            return None
        for name, default in (
            ("OIDC_EXEMPT_URLS", []),
            ("OIDC_RP_CLIENT_ID", None),
            ("OIDC_STATE_SIZE", 32),
            ("OIDC_AUTHENTICATION_CALLBACK_URL", "oidc_authentication_callback"),
            ("OIDC_RP_SCOPES", "openid email"),
            ("OIDC_USE_NONCE", True),
            ("OIDC_NONCE_SIZE", 32),
        ):
            setattr(self, name, config.setting(name, default))
        return super().process_request(request)
