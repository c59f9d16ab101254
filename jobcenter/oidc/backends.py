"""Who may sign in, and how: the OpenID Connect backend and the password gate.

`OIDCBackend` is mozilla-django-oidc's backend with Job Center's rules: the email must be
verified by the identity provider and in an allowed domain, the user must be in a mapped
group (`jobcenter.oidc.mapping`), and a break-glass account is never signed in this way.
A refusal says why on the login page. Users are matched by email and created with the
email as username and no usable password.

`PasswordLoginGate` sits before Django's `ModelBackend`: with `JOBCENTER_PASSWORD_LOGIN`
off it refuses every password login but those of the break-glass superusers
(`JOBCENTER_BREAK_GLASS_USERS`), so a refused try still counts for the login lockout.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.db.models import QuerySet
from django.http import HttpRequest
from mozilla_django_oidc.auth import OIDCAuthenticationBackend, default_username_algo

from jobcenter.audit.context import acting_as
from jobcenter.audit.recorder import record
from jobcenter.middleware import client_address
from jobcenter.models.audit import AuditAction
from jobcenter.oidc import config, mapping

logger = logging.getLogger(__name__)

PASSWORD_LOGIN_OFF = "Password sign-in is turned off: sign in with your company account."  # noqa: S105


def break_glass(username: str | None) -> bool:
    """Whether `username` is one of the break-glass accounts (password sign-in only)."""
    return username is not None and username in settings.JOBCENTER_BREAK_GLASS_USERS


class PasswordLoginGate:
    """Refuses password logins while they are turned off, but for break-glass superusers.

    Not a `BaseBackend`: with no `get_user` it is never the backend a session (or the
    test client's `force_login`) is tied to.
    """

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if settings.JOBCENTER_PASSWORD_LOGIN or username is None or password is None:
            return None
        users = get_user_model()._default_manager
        if break_glass(username) and users.filter(username=username, is_superuser=True).exists():
            return None  # on to ModelBackend, which checks the password
        if request is not None:
            messages.error(request, PASSWORD_LOGIN_OFF)
        raise PermissionDenied(PASSWORD_LOGIN_OFF)


class Refused(SuspiciousOperation):
    """A sign-in the rules refuse (the library logs it and answers no user)."""


class OIDCBackend(OIDCAuthenticationBackend):
    """mozilla-django-oidc's backend, its endpoints from discovery, with Job Center's rules."""

    get_settings = staticmethod(config.setting)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Django makes a backend per request (the session's user): no discovery here.
        self.UserModel = get_user_model()
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = settings.OIDC_RP_SIGN_ALGO
        self.OIDC_RP_IDP_SIGN_KEY = None

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> Any:
        # Only the callback view passes a nonce: a password login never reaches the provider.
        if request is None or "nonce" not in kwargs or not config.enabled():
            return None
        self.OIDC_OP_TOKEN_ENDPOINT = config.setting("OIDC_OP_TOKEN_ENDPOINT")
        self.OIDC_OP_USER_ENDPOINT = config.setting("OIDC_OP_USER_ENDPOINT")
        self.OIDC_OP_JWKS_ENDPOINT = config.setting("OIDC_OP_JWKS_ENDPOINT")
        return super().authenticate(request, **kwargs)

    def get_user(self, user_id: Any) -> Any:
        """The session's user, as ModelBackend's: none once deactivated."""
        user = super().get_user(user_id)
        return user if user is not None and user.is_active else None

    def refuse(self, text: str) -> None:
        """Say why on the login page, log it, and stop the sign-in."""
        messages.error(self.request, text)
        logger.warning("OIDC sign-in refused: %s", text)
        raise Refused(text)

    def get_userinfo(self, access_token: str, id_token: str, payload: dict) -> dict:
        """The userinfo answer over the ID token's claims (some providers put groups only
        in the ID token)."""
        return {**payload, **super().get_userinfo(access_token, id_token, payload)}

    def verify_claims(self, claims: dict) -> bool:
        email = str(claims.get("email") or "")
        if not email:
            self.refuse("The identity provider sent no email address.")
        if claims.get("email_verified") not in (True, "true"):
            self.refuse(f"The address {email} is not verified at the identity provider.")
        domain = email.rpartition("@")[2].lower()
        allowed = settings.JOBCENTER_OIDC_ALLOWED_DOMAINS
        if allowed and domain not in allowed:
            self.refuse(f"The address {email} is not in a domain allowed to sign in here.")
        return True

    def filter_users_by_claims(self, claims: dict) -> QuerySet:
        users = super().filter_users_by_claims(claims)
        if any(break_glass(user.get_username()) for user in users):
            self.refuse(
                f"The address {claims.get('email')} is a break-glass account's: it signs in "
                "with its password."
            )
        return users

    def acting(self, claims: dict) -> AbstractContextManager[None]:
        """Changes made by a sign-in are recorded as the identity provider's, for this
        email, from the client's address."""
        email = str(claims.get("email") or "unknown")
        return acting_as(f"oidc:{email}", client_address(self.request) or "")

    def create_user(self, claims: dict) -> Any:
        access = self._access(claims)  # refused before any user is created
        email = claims["email"]
        username = email.lower()
        if self.UserModel._default_manager.filter(username=username).exists():
            username = default_username_algo(email, claims)
        with self.acting(claims):
            user = self.UserModel._default_manager.create_user(
                username,
                email=email,
                first_name=str(claims.get("given_name") or "")[:150],
                last_name=str(claims.get("family_name") or "")[:150],
            )
            mapping.apply(user, access)
            return self._signed_in(user, claims)

    def update_user(self, user: Any, claims: dict) -> Any:
        with self.acting(claims):
            # Applied before any refusal: a group removed at the provider goes here too.
            mapping.apply(user, mapping.access_for(mapping.group_names(claims)))
            self._access(claims)
            if not user.is_active:
                self.refuse(f"The user {user.get_username()} is deactivated in Job Center.")
            return self._signed_in(user, claims)

    def _access(self, claims: dict) -> mapping.Access:
        access = mapping.access_for(mapping.group_names(claims))
        if not access.staff:
            self.refuse(
                f"The address {claims.get('email')} is in no group of the identity provider "
                "that gives access to Job Center."
            )
        return access

    def _signed_in(self, user: Any, claims: dict) -> Any:
        """One audit record of the sign-in, with the groups it came with."""
        record(
            user,
            AuditAction.CHANGE,
            {"sign_in": {"via": "OpenID Connect", "groups": mapping.group_names(claims)}},
        )
        return user
