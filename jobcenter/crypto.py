"""Encryption of stored provider credentials.

One encrypted JSON blob per account, MultiFernet over JOBCENTER_FERNET_KEYS (newest key
first), independent of SECRET_KEY so rotating one does not lose the other. A key that
cannot read a blob raises `CredentialsUnreadable` with a message that says what to do,
never a silent ciphertext.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class CredentialsUnreadable(Exception):
    """Stored credentials could not be decrypted with the configured keys."""


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            "JOBCENTER_FERNET_KEYS holds a value that is not a Fernet key (32 url-safe "
            "base64-encoded bytes). Generate one with Fernet.generate_key()."
        ) from exc


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.JOBCENTER_FERNET_KEYS))


def encrypt_json(data: dict[str, Any]) -> str:
    return fernet().encrypt(json.dumps(data, sort_keys=True).encode()).decode()


def decrypt_json(token: str) -> dict[str, Any]:
    if not token:
        return {}
    try:
        return json.loads(fernet().decrypt(token.encode()))
    except InvalidToken:
        raise CredentialsUnreadable(
            "the stored credentials cannot be decrypted with any key in "
            "JOBCENTER_FERNET_KEYS; restore the key they were written with (keep old keys "
            "after the new one until `manage.py rotate_credential_keys` has run)"
        ) from None


def rotate(token: str) -> str:
    """Re-encrypt `token` under the newest key."""
    try:
        return fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise CredentialsUnreadable(
            "credentials encrypted with a key that is no longer in JOBCENTER_FERNET_KEYS"
        ) from None


def hint(value: str) -> str:
    """A non-secret reminder of a secret: its last four characters."""
    return f"…{value[-4:]}" if len(value) >= 8 else "…"
