"""Provider accounts (credentials encrypted, sync state) and rate-limit buckets."""

from __future__ import annotations

import unicodedata
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

from jobcenter import crypto
from jobcenter.models.teams import team_field
from providers import get_provider, provider_choices


def _provider_choices() -> list[tuple[str, str]]:
    return provider_choices()


def has_control_characters(text: str) -> bool:
    """Whether `text` holds a control character (Unicode Cc: CR, LF, TAB, NUL, ...) or a
    line or paragraph separator."""
    return any(unicodedata.category(char) in ("Cc", "Zl", "Zp") for char in text)


def refuse_control_characters(value: str) -> None:
    """A field error for line breaks, tabs, NUL and other control characters.

    An account's name goes into mail subjects and log lines, where a line break starts
    a header or a line of its own. The message never repeats the value (it may be a
    credential).
    """
    if has_control_characters(value):
        raise ValidationError(
            "Must not contain line breaks, tabs or other control characters.",
            code="control_characters",
        )


class AccountStatus(models.TextChoices):
    NEW = "new", "Not synced yet"
    OK = "ok", "Syncing"
    FAILING = "failing", "Failing"


class ProviderAccount(models.Model):
    """One set of credentials at one provider, synced on its own schedule."""

    name = models.CharField(max_length=100, unique=True, validators=[refuse_control_characters])
    provider = models.CharField(max_length=40, choices=_provider_choices)
    team = team_field(
        "accounts",
        "Staff of this team see the account and everything synced from it. Blank: superusers only.",
    )
    base_url = models.CharField(
        "base URL",
        max_length=300,
        blank=True,
        help_text="Blank for the provider's default host.",
    )
    credentials_encrypted = models.TextField(default="", editable=False)
    credentials_hint = models.CharField(max_length=40, blank=True, editable=False)
    enabled = models.BooleanField(default=True)
    sync_interval_minutes = models.PositiveIntegerField(default=1)
    next_sync_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # When the hot lane next refreshes this account's unfinished jobs (jobcenter.sync.hot).
    hot_next_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_sync_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_status = models.CharField(
        max_length=20, choices=AccountStatus.choices, default=AccountStatus.NEW
    )
    last_error = models.TextField(blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    blocked_until = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=64, blank=True, editable=False)
    lease_until = models.DateTimeField(null=True, blank=True, editable=False)
    sync_state = models.JSONField(default=dict, blank=True, editable=False)
    rate_limits = models.JSONField(
        "rate-limit overrides",
        default=dict,
        blank=True,
        help_text='Per provider tier (or "*" for all): a list of [requests, seconds] '
        'windows, e.g. {"*": [[10, 1], [150, 60]]}. Blank keeps the provider\'s limits.',
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def provider_class(self) -> Any:
        return get_provider(self.provider)

    @property
    def provider_label(self) -> str:
        return self.provider_class.label

    def get_credentials(self) -> dict[str, str]:
        """Decrypted credentials; raises crypto.CredentialsUnreadable on a wrong key."""
        return crypto.decrypt_json(self.credentials_encrypted)

    def set_credentials(self, credentials: dict[str, str]) -> None:
        """Encrypt and store `credentials`, keeping a non-secret hint for display."""
        self.credentials_encrypted = crypto.encrypt_json(credentials)
        secrets = self.provider_class.secret_values(credentials)
        self.credentials_hint = crypto.hint(secrets[0]) if secrets else ""

    @property
    def has_credentials(self) -> bool:
        return bool(self.credentials_encrypted)


class RateLimitBucket(models.Model):
    """A token bucket shared by every worker process (jobcenter.sync.ratelimit)."""

    key = models.CharField(max_length=200, unique=True)
    tokens = models.FloatField()
    updated = models.FloatField(help_text="Unix time of the last take.")

    def __str__(self) -> str:
        return f"{self.key}: {self.tokens:.1f}"


class DispatchBaton(models.Model):
    """Which dispatcher loop is the live one (jobcenter.tasks.dispatch_due_syncs).

    Each loop the Schedule starts takes the baton; the loop it took it from stops at its
    next cycle. One loop dispatches at a time, and a loop lost with its worker is
    replaced by the Schedule's next run.
    """

    name = models.CharField(max_length=50, primary_key=True)
    owner = models.CharField(max_length=64)
    taken_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name}: {self.owner}"


# --- alerts (issue #10; evaluation and delivery live in jobcenter.alerts) ------------------
