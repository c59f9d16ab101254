"""`Authorization: Token <key>`: django-rest-knox's hashed tokens, checked without writes.

knox's own check deletes expired tokens (the user's other ones too, one more query per
request) and fails with a server error on a key that is not UTF-8. Here a request
costs one query, the user's permissions included (a correlated subquery that fills
ModelBackend's cache: Django would take two more queries), an expired token is refused
but stays listed (its owner sees why their client stopped), and a use is recorded at
most once a minute.
"""

from __future__ import annotations

import binascii
from hmac import compare_digest
from typing import Any

from django.db.models import OuterRef
from django.utils import timezone
from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.crypto import hash_token
from knox.models import get_token_model
from knox.settings import CONSTANTS
from rest_framework import exceptions

from jobcenter.api.permissions import SEPARATOR, permission_names, remember_permissions


class TokenAuthentication(KnoxTokenAuthentication):
    """knox's header parsing and `WWW-Authenticate: Token`; the lookup below."""

    def authenticate_credentials(self, token: bytes) -> tuple[Any, Any]:
        invalid = exceptions.AuthenticationFailed("Invalid or expired token.")
        try:
            key = token.decode("utf-8")
            digest = hash_token(key)
        except (UnicodeError, TypeError, binascii.Error):
            raise invalid from None
        now = timezone.now()
        tokens = get_token_model().objects
        candidates = tokens.filter(token_key=key[: CONSTANTS.TOKEN_KEY_LENGTH])
        names = permission_names(OuterRef("user_id"), tokens.db)
        if names is not None:
            candidates = candidates.annotate(permission_names=names)
        for auth_token in candidates.select_related("user"):
            if compare_digest(digest, auth_token.digest):
                if auth_token.is_expired(now):
                    raise invalid
                user, auth_token = self.validate_user(auth_token)
                if names is not None:
                    joined = auth_token.permission_names
                    remember_permissions(user, set(joined.split(SEPARATOR)) if joined else set())
                auth_token.touch(now)
                return user, auth_token
        raise invalid


class TokenScheme(KnoxTokenScheme):
    """The schema's `tokenAuth` (as under DRF's tokens): `Authorization: Token <key>`.

    Defined here, beside the class, so that it is registered before any schema is made.
    """

    target_class = TokenAuthentication
    name = "tokenAuth"
