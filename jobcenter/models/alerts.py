"""Alert channels, rules, the event ledger and delivery records."""

from __future__ import annotations

import uuid
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from jobcenter import crypto
from jobcenter.models.accounts import ProviderAccount
from jobcenter.models.jobs import Job
from jobcenter.models.teams import team_field
from providers import PROVIDER_CLASSES


class AlertChannelKind(models.TextChoices):
    EMAIL = "email", "Email"
    WEBHOOK = "webhook", "Webhook (JSON POST, HMAC-signed)"


class AlertChannel(models.Model):
    """Where alerts go: email addresses, or a webhook URL whose requests are signed.

    The webhook's signing secret is stored encrypted like provider credentials and is
    never shown back; only a hint of its last characters is kept for display.
    """

    name = models.CharField(max_length=100, unique=True)
    team = team_field(
        "alert_channels", "The team whose rules may send here. Blank: superusers' rules only."
    )
    kind = models.CharField(max_length=20, choices=AlertChannelKind.choices)
    recipients = models.TextField(
        blank=True, help_text="Email: addresses separated by commas or new lines."
    )
    url = models.CharField(
        "webhook URL",
        max_length=500,
        blank=True,
        help_text="Webhook: an http(s) URL that receives a JSON POST per alert.",
    )
    secret_encrypted = models.TextField(default="", editable=False)
    secret_hint = models.CharField(max_length=40, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def recipient_list(self) -> list[str]:
        return [r.strip() for r in self.recipients.replace("\n", ",").split(",") if r.strip()]

    def get_secret(self) -> str:
        """The webhook signing secret; raises crypto.CredentialsUnreadable on a wrong key."""
        return str(crypto.decrypt_json(self.secret_encrypted).get("secret", ""))

    def set_secret(self, secret: str) -> None:
        self.secret_encrypted = crypto.encrypt_json({"secret": secret}) if secret else ""
        self.secret_hint = crypto.hint(secret) if secret else ""

    @property
    def has_secret(self) -> bool:
        return bool(self.secret_encrypted)


class AlertEventType(models.TextChoices):
    JOB_FAILED = "job_failed", "Job failed"
    JOB_PARTIALLY_FAILED = "job_partially_failed", "Job partly failed"
    JOB_STUCK = "job_stuck", "Job queued or running too long"
    ACCOUNT_FAILING = "account_failing", "Account failing"
    ACCOUNT_NOT_SYNCED = "account_not_synced", "Account not synced"


class AlertRule(models.Model):
    """Which jobs and accounts to watch, for which events, told to which channel.

    A rule without a channel is inactive: `setup_schedules` creates the default rules
    that way, so nobody is mailed before someone chooses where alerts go.
    """

    name = models.CharField(max_length=100, unique=True)
    team = team_field(
        "alert_rules",
        "A team's rule watches only the team's accounts (\"every account\": every account "
        "of the team). Blank: every account, superusers only.",
    )
    enabled = models.BooleanField(default=True)
    channel = models.ForeignKey(
        AlertChannel,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="rules",
        help_text="The rule is inactive until a channel is chosen.",
    )
    # Scope: blank means every account, provider or kind.
    accounts = models.ManyToManyField(
        ProviderAccount, blank=True, related_name="alert_rules", help_text="None: every account."
    )
    providers = models.CharField(
        max_length=200, blank=True, help_text="Provider slugs, comma-separated; blank for all."
    )
    kinds = models.TextField(
        blank=True, help_text="Job kinds, comma- or line-separated; blank for all."
    )
    # Events.
    on_job_failed = models.BooleanField("job failed", default=False)
    on_job_partially_failed = models.BooleanField("job partly failed", default=False)
    partial_min_percent = models.FloatField(
        "partly failed: more than this % of the job's total failed",
        default=0,
        help_text="0 alerts on any partial failure. Jobs without a total count only at 0.",
    )
    stuck_after_minutes = models.PositiveIntegerField(
        "job queued or running longer than (minutes)", null=True, blank=True
    )
    account_failures = models.PositiveIntegerField(
        "account failed this many syncs in a row", null=True, blank=True
    )
    account_silent_minutes = models.PositiveIntegerField(
        "account not synced successfully for (minutes)", null=True, blank=True
    )
    # Quiet hours: events are recorded, delivery waits until they end.
    quiet_start = models.TimeField(null=True, blank=True)
    quiet_end = models.TimeField(null=True, blank=True)
    quiet_timezone = models.CharField(
        max_length=64, default="UTC", help_text="An IANA time zone such as Europe/Berlin."
    )
    default_key = models.CharField(max_length=40, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["default_key"],
                condition=~models.Q(default_key=""),
                name="alertrule_unique_default_key",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.enabled and self.channel_id is not None

    def provider_list(self) -> list[str]:
        return [p.strip() for p in self.providers.split(",") if p.strip()]

    def kind_list(self) -> list[str]:
        return [k.strip() for k in self.kinds.replace("\n", ",").split(",") if k.strip()]

    def job_events(self) -> list[str]:
        """The job events this rule watches (the evaluation's loop and `clean` agree)."""
        events = []
        if self.on_job_failed:
            events.append(AlertEventType.JOB_FAILED)
        if self.on_job_partially_failed:
            events.append(AlertEventType.JOB_PARTIALLY_FAILED)
        if self.stuck_after_minutes:
            events.append(AlertEventType.JOB_STUCK)
        return events

    def account_events(self) -> list[str]:
        events = []
        if self.account_failures:
            events.append(AlertEventType.ACCOUNT_FAILING)
        if self.account_silent_minutes:
            events.append(AlertEventType.ACCOUNT_NOT_SYNCED)
        return events

    def clean(self) -> None:
        """The rule's own fields, checked here so every form (admin or other) refuses the
        same rules; it needs nothing beyond the rule and the provider registry."""
        errors: dict[str, list[str]] = {}
        if not (self.job_events() or self.account_events()):
            errors["__all__"] = ["Choose at least one event."]
        unknown = [p for p in self.provider_list() if p not in PROVIDER_CLASSES]
        if unknown:
            errors["providers"] = [
                f"Unknown provider {', '.join(unknown)}; known: {', '.join(PROVIDER_CLASSES)}."
            ]
        if not 0 <= self.partial_min_percent < 100:
            errors["partial_min_percent"] = ["Enter a share from 0 up to (not including) 100."]
        if (self.quiet_start is None) != (self.quiet_end is None):
            errors["quiet_end"] = ["Give both ends of the quiet hours, or neither."]
        try:
            ZoneInfo(self.quiet_timezone or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            errors["quiet_timezone"] = [f"{self.quiet_timezone} is not a known time zone."]
        if errors:
            raise ValidationError(errors)


class AlertEventState(models.TextChoices):
    HELD = "held", "Held for quiet hours"
    PENDING = "pending", "Being handed to a delivery"
    DISPATCHED = "dispatched", "Handed to a delivery"


class AlertDeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    RETRYING = "retrying", "Waiting to retry"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class AlertDelivery(models.Model):
    """One message to one channel (a single alert or a digest) and every attempt to send it.

    The text and payload are fixed when the alert fires, so a retry sends the same thing.
    `message_id` is the webhook's `webhook-id` (as `msg_<hex>`): the same on every retry,
    unique across installations, the receiver's dedupe key.
    """

    rule = models.ForeignKey(
        AlertRule, on_delete=models.SET_NULL, null=True, related_name="deliveries"
    )
    channel = models.ForeignKey(
        AlertChannel, on_delete=models.SET_NULL, null=True, related_name="deliveries"
    )
    message_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    channel_kind = models.CharField(max_length=20, choices=AlertChannelKind.choices)
    destination = models.CharField(max_length=500, blank=True)  # display only, no secrets
    subject = models.CharField(max_length=300)
    text = models.TextField()
    payload = models.JSONField(default=dict)
    event_count = models.PositiveIntegerField(default=1)
    is_digest = models.BooleanField(default=False)
    status = models.CharField(
        max_length=20, choices=AlertDeliveryStatus.choices, default=AlertDeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    response_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    attempt_log = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "alert deliveries"
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="alertdelivery_due"),
            models.Index(fields=["-created_at"], name="alertdelivery_created"),
        ]

    def __str__(self) -> str:
        return f"{self.subject} ({self.status})"


class AlertEvent(models.Model):
    """One rule firing for one job (or account), event and episode: the send-once ledger.

    Unique on (rule, job, event, episode), so two workers evaluating at once cannot both
    record, and so both send, the same alert. The episode tells a job that stays failed
    (same episode: no new alert) from one that recovered and failed again (new episode):
    it is the id of the job's last snapshot outside the alerting state (0 when it never
    was outside it); for account events, the id of the account's last successful sync run.
    """

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="events")
    account = models.ForeignKey(
        ProviderAccount, on_delete=models.CASCADE, related_name="alert_events"
    )
    job = models.ForeignKey(
        Job, on_delete=models.CASCADE, null=True, blank=True, related_name="alert_events"
    )
    event = models.CharField(max_length=30, choices=AlertEventType.choices)
    episode = models.BigIntegerField(default=0)
    fired_at = models.DateTimeField(default=timezone.now)
    batch = models.CharField(max_length=32, db_index=True, editable=False)
    state = models.CharField(max_length=20, choices=AlertEventState.choices)
    delivery = models.ForeignKey(
        AlertDelivery, on_delete=models.SET_NULL, null=True, blank=True, related_name="events"
    )

    class Meta:
        ordering = ["-fired_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "job", "event", "episode"],
                condition=models.Q(job__isnull=False),
                name="alertevent_once_per_job_episode",
            ),
            models.UniqueConstraint(
                fields=["rule", "account", "event", "episode"],
                condition=models.Q(job__isnull=True),
                name="alertevent_once_per_account_episode",
            ),
        ]
        indexes = [
            models.Index(fields=["rule", "state"], name="alertevent_rule_state"),
            models.Index(fields=["-fired_at"], name="alertevent_fired"),
        ]

    def __str__(self) -> str:
        subject = self.job if self.job_id else self.account
        return f"{self.get_event_display()}: {subject}"
