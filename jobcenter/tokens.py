"""API token services: the one way a token is made and the one way it is revoked.

The command (`create_api_token`) and the admin both come here, so what every creation
and revocation does (and what the audit log records of them) has one home. A token's
key exists only in the return value of `create_token`: the database holds its digest.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError

from jobcenter.models import ApiToken


def token_days_range() -> tuple[int, int]:
    """A token's lifetime bounds, in days: no token lives for ever (a leaked key stops
    working on its own, and its owner renews it on a date they can see)."""
    return 1, settings.JOBCENTER_API_TOKEN_MAX_DAYS


def check_token_request(user: AbstractBaseUser, name: str, days: int) -> dict[str, list[str]]:
    """Field errors of a token request (empty when it is fine), for forms and the command."""
    errors: dict[str, list[str]] = {}
    if not (user.is_active and user.is_staff):
        errors["user"] = [f"{user} is not active staff: only active staff can use the API."]
    if not name.strip():
        errors["name"] = ["Give the token a name (what it is for)."]
    elif len(name.strip()) > ApiToken._meta.get_field("name").max_length:
        errors["name"] = ["At most 100 characters."]
    low, high = token_days_range()
    if not low <= days <= high:
        errors["days"] = [f"From {low} to {high} days."]
    return errors


def create_token(user: AbstractBaseUser, name: str, days: int) -> tuple[ApiToken, str]:
    """A new token for `user`, valid `days` days: (the stored row, the key, shown once).

    Raises ValidationError (with field errors) for a user who is not active staff, a
    blank or long name, or a lifetime outside `token_days_range()`.
    """
    errors = check_token_request(user, name, days)
    if errors:
        raise ValidationError(errors)
    token, key = ApiToken.objects.create(user=user, expiry=timedelta(days=days), name=name.strip())
    return token, key


def revoke_token(token: ApiToken, by: AbstractBaseUser | None) -> None:
    """Revoke a token: its row goes, and the key stops working at once.

    `by` is who revoked it (None for a command or the system), for the audit log.
    """
    token.delete()
