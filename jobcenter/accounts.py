"""Account services: where credentials may go, how typed ones meet the stored ones, and
a provider bound to an account.

Every path that creates or uses an account (admin, API, commands, sync) goes through
here, so the rule "credentials only to the provider's documented hosts" has one home.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from jobcenter.crypto import CredentialsUnreadable
from jobcenter.models import ProviderAccount, Team
from jobcenter.models.accounts import has_control_characters
from jobcenter.sync import ratelimit
from providers import PROVIDER_CLASSES, get_provider
from providers.base import Provider
from providers.errors import ProviderError
from providers.http import RateLimit, RetryPolicy
from providers.outbound import DEFAULT_PORTS, OutboundPolicy, Refused, check_url, parse_target
from providers.redaction import redact


def outbound_policy(*, allow_loopback: bool) -> OutboundPolicy:
    """The outbound policy (`providers.outbound`) under the current settings.

    Built per use, so settings changed since start-up (or by a test) count.
    """
    return OutboundPolicy(
        allow_loopback=allow_loopback,
        allowed_networks=tuple(settings.JOBCENTER_OUTBOUND_ALLOWED_NETWORKS),
        max_response_bytes=settings.JOBCENTER_MAX_RESPONSE_BYTES,
        deadline=settings.JOBCENTER_HTTP_DEADLINE,
    )


def provider_policy() -> OutboundPolicy:
    return outbound_policy(allow_loopback=settings.JOBCENTER_ALLOW_LOOPBACK_PROVIDERS)


def refusal_message(exc: Refused) -> str:
    """A policy refusal as a form error: one sentence."""
    return f"Refused: {exc.message}."


def provider_origins(provider: type[Provider]) -> set[tuple[str, str, int]]:
    """(scheme, host, port) credentials may go to: the documented hosts and the extra
    ones (`host` or `host:port`), https only."""
    hosts = [*provider.documented_hosts, *settings.JOBCENTER_EXTRA_PROVIDER_HOSTS]
    return {parse_target(f"https://{host.strip()}/").origin for host in hosts}


def validate_base_url(provider_slug: str, base_url: str) -> str:
    """The normalized base URL, or ValidationError saying why credentials may not go there.

    Allowed: blank (the provider's default); https on one of the provider's documented
    hosts, or on a host matching one of its host patterns (`Provider.host_allowed`: an
    organisation's own host under the provider's domain), or on a host listed in
    JOBCENTER_EXTRA_PROVIDER_HOSTS (its default port unless the entry names one);
    loopback (the sandbox) while JOBCENTER_ALLOW_LOOPBACK_PROVIDERS is on (it follows
    DEBUG by default). The URL must read one way only, and pass the outbound policy
    (`providers.outbound`); names are resolved when connecting.
    """
    base_url = (base_url or "").strip()
    if not base_url:
        return ""
    provider = get_provider(provider_slug)
    if urlsplit(base_url).scheme.lower() not in DEFAULT_PORTS or "://" not in base_url:
        raise ValidationError(
            f"Enter a full URL such as {provider.default_base_url()}.", code="invalid"
        )
    try:
        target = check_url(base_url, provider_policy())
    except Refused as exc:
        raise ValidationError(refusal_message(exc), code="refused") from None
    parts = urlsplit(base_url)
    if parts.query or parts.fragment:
        raise ValidationError("The base URL must not carry a query or a fragment.", code="invalid")
    if target.is_loopback:  # the policy allowed it: development, the sandbox
        return base_url.rstrip("/")
    on_pattern = target.origin[::2] == ("https", 443) and provider.host_allowed(target.host)
    if target.origin not in provider_origins(provider) and not on_pattern:
        hosts = sorted(provider.documented_hosts) + list(provider.host_patterns)
        raise ValidationError(
            f"{target.host_header} is not a {provider.label} host. Credentials are sent "
            f"only to {', '.join(hosts)} (https) or to hosts "
            "listed in JOBCENTER_EXTRA_PROVIDER_HOSTS.",
            code="host",
        )
    return base_url.rstrip("/")


def validate_credentials(provider_slug: str, credentials: Mapping[str, object]) -> dict[str, str]:
    """Credentials holding exactly the provider's declared fields, as strings.

    A value with a control character (a line break, a tab, NUL) is refused: pasted
    with a key by mistake, it would go into an HTTP header, where it breaks the request
    or adds a header of its own. Leading and trailing whitespace is trimmed first.
    """
    provider = get_provider(provider_slug)
    errors: dict[str, str] = {}
    cleaned: dict[str, str] = {}
    known = {f.name for f in provider.credential_fields}
    for name in credentials:
        if name not in known:
            errors[name] = f"{provider.label} has no credential named {name!r}."
    for field in provider.credential_fields:
        value = credentials.get(field.name)
        value = "" if value is None else str(value).strip()
        if not value and field.required:
            errors[field.name] = f"{field.label} is required."
        elif has_control_characters(value):
            errors[field.name] = (
                f"{field.label} must not contain line breaks, tabs or other control characters."
            )
        elif value:
            cleaned[field.name] = value
    if errors:
        raise ValidationError(errors)
    return cleaned


UNREADABLE_CREDENTIAL = (
    "The stored {label} cannot be decrypted with the keys in JOBCENTER_FERNET_KEYS "
    "(it was written with another key): type it again, or restore that key."
)


def merge_credentials(
    account: ProviderAccount | None, provider_slug: str, typed: Mapping[str, str]
) -> dict[str, str]:
    """Typed credentials over the account's stored ones, checked: the admin form's and the
    API's one rule, so an account edited either way ends up the same.

    A blank or missing typed value keeps the stored one, while the provider stays the same
    (another provider's stored fields mean nothing to the new one). Stored credentials that
    cannot be decrypted count as none stored: each required field left blank is then a
    field error saying why, never a crash, and typing them all again replaces the blob.
    Raises ValidationError mapping credential field names to messages.
    """
    provider = get_provider(provider_slug)
    stored: dict[str, str] = {}
    unreadable = False
    if account is not None and account.pk is not None and account.provider == provider_slug:
        try:
            stored = account.get_credentials()
        except CredentialsUnreadable:
            unreadable = True
    merged: dict[str, object] = {f.name: stored.get(f.name, "") for f in provider.credential_fields}
    merged.update({name: value for name, value in typed.items() if value and value.strip()})
    try:
        return validate_credentials(provider_slug, merged)
    except ValidationError as exc:
        errors = exc.message_dict
    if unreadable:
        for field in provider.credential_fields:
            if field.required and not str(merged[field.name]).strip():
                errors[field.name] = [UNREADABLE_CREDENTIAL.format(label=field.label)]
    raise ValidationError(errors)


def create_account(
    name: str,
    provider_slug: str,
    credentials: Mapping[str, object],
    *,
    base_url: str = "",
    sync_interval_minutes: int | None = None,
    team: Team | None = None,
) -> ProviderAccount:
    """Validate and save a new account with encrypted credentials (in `team`: its staff
    see it; without one, superusers only)."""
    if provider_slug not in PROVIDER_CLASSES:
        raise ValidationError(
            {
                "provider": f"Unknown provider {provider_slug!r}; known: {', '.join(PROVIDER_CLASSES)}."
            }
        )
    account = ProviderAccount(
        name=name,
        provider=provider_slug,
        base_url=validate_base_url(provider_slug, base_url),
        sync_interval_minutes=sync_interval_minutes or settings.JOBCENTER_DEFAULT_SYNC_MINUTES,
        team=team,
    )
    account.set_credentials(validate_credentials(provider_slug, credentials))
    account.full_clean()
    with transaction.atomic():
        account.save()
    return account


def build_provider(account: ProviderAccount) -> Provider:
    """The provider bound to this account, its rate limits shared across workers.

    The base URL is checked again here: settings may have changed since it was saved,
    and credentials must never follow a URL the current settings do not allow.
    """
    provider_class = get_provider(account.provider)
    base_url = validate_base_url(account.provider, account.base_url) or None
    credentials = account.get_credentials()
    return provider_class(
        credentials,
        base_url=base_url,
        options=settings.JOBCENTER_PROVIDER_OPTIONS.get(account.provider),
        bucket_store=ratelimit.bucket_store(),
        bucket_prefix=quota_key(account.provider, base_url or "", credentials),
        rate_limits=rate_limit_overrides(provider_class.rate_limits, account.rate_limits),
        timeout=settings.JOBCENTER_HTTP_TIMEOUT,
        retry=RetryPolicy(**settings.JOBCENTER_RETRY),
        outbound=provider_policy(),
    )


def quota_key(provider_slug: str, base_url: str, credentials: Mapping[str, str]) -> str:
    """Bucket key prefix for the provider-side quota these credentials draw on.

    Providers count requests per credential (per account key, or per store), not per
    row in our table: two accounts holding the same credentials share one budget. The
    key is a digest, so no secret is stored in it.
    """
    material = json.dumps([provider_slug, base_url, sorted(credentials.items())])
    return f"{provider_slug}:{hashlib.sha256(material.encode()).hexdigest()[:24]}:"


# Staff-set windows: from a millisecond (shorter ones make the bucket's arithmetic
# overflow) to a day (providers state theirs per second, minute or hour).
MIN_RATE_WINDOW_SECONDS = 0.001
MAX_RATE_WINDOW_SECONDS = 86_400.0


def clean_rate_limits(value: object) -> dict[str, RateLimit]:
    """Parse {"tier" or "*": [[requests, seconds], ...]}; ValidationError when malformed
    or unbounded.

    The HTTP client sleeps in the worker until its token is there, so a limit is refused
    when one request could wait longer than a task may run (JOBCENTER_TASK_TIMEOUT):
    `[[1, 1e9]]` would park a worker for good.
    """
    if not value:
        return {}
    if not isinstance(value, dict):
        raise ValidationError('Rate limits must be an object such as {"*": [[10, 1]]}.')
    return {str(tier): rate_limit(str(tier), windows) for tier, windows in value.items()}


def rate_limit(tier: str, windows: Any) -> RateLimit:
    """One tier's [[requests, seconds], ...], checked; ValidationError saying what is wrong."""
    try:
        pairs = [(finite(count), finite(seconds)) for count, seconds in windows]
    except (TypeError, ValueError, OverflowError):
        raise ValidationError(
            f"Rate limit {tier!r}: give [requests, seconds] pairs of finite numbers."
        ) from None
    if not pairs:
        raise ValidationError(f"Rate limit {tier!r}: give at least one [requests, seconds] pair.")
    for count, seconds in pairs:
        if count < 1 or count != int(count):
            raise ValidationError(f"Rate limit {tier!r}: requests >= 1, a whole number.")
        if not MIN_RATE_WINDOW_SECONDS <= seconds <= MAX_RATE_WINDOW_SECONDS:
            raise ValidationError(
                f"Rate limit {tier!r}: a window lasts from {MIN_RATE_WINDOW_SECONDS:g} to "
                f"{MAX_RATE_WINDOW_SECONDS:g} seconds (a day), not {seconds:g}."
            )
    limit = RateLimit(tuple((int(count), seconds) for count, seconds in pairs))
    wait = 1 / limit.token_bucket()[0]  # the longest one request waits for its token
    timeout = settings.Q_CLUSTER["timeout"]
    if wait > timeout:
        raise ValidationError(
            f"Rate limit {tier!r}: one request could wait {wait:,.0f} seconds for its turn, "
            f"longer than a task may run ({timeout} seconds, JOBCENTER_TASK_TIMEOUT)."
        )
    return limit


def finite(value: Any) -> float:
    """A finite number from JSON (not a boolean); ValueError otherwise."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def rate_limit_overrides(
    provider_limits: Mapping[str, RateLimit], account_value: object
) -> dict[str, RateLimit]:
    """The account's overrides, with "*" expanded to every tier the provider declares."""
    overrides = clean_rate_limits(account_value)
    expanded = dict.fromkeys(provider_limits, overrides["*"]) if "*" in overrides else {}
    expanded.update({tier: limit for tier, limit in overrides.items() if tier != "*"})
    return expanded


def refused_settings(exc: ValidationError) -> str:
    """What a sync or a connection test says when the stored base URL or rate limits no
    longer pass validation (rules tightened since they were saved)."""
    return "the account's stored settings were refused: " + "; ".join(exc.messages)


def check_connection(account: ProviderAccount) -> tuple[bool, str]:
    """Ask the provider whether the stored credentials work; never raises, never leaks."""
    secrets: list[str] = []
    try:
        provider = build_provider(account)
        secrets = provider.client.secrets
        provider.check_credentials()
    except ProviderError as exc:
        return False, redact(str(exc), secrets)
    except CredentialsUnreadable as exc:
        return False, f"credentials unreadable: {exc}"
    except ValidationError as exc:
        return False, refused_settings(exc)
    return True, "the provider accepted the credentials"
