"""Serializers: what the API shows and accepts.

Accounts never show credentials: they are a write-only object, checked by the same
`jobcenter.accounts` functions as the admin form and the command; responses carry only
`credentials_hint` (the last four characters). Sync leases and per-kind cursors are
internal and not shown either. An account's `team` is one of the caller's teams (any
team, or none, for a superuser); accounts to track jobs of are the caller's teams'.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from jobcenter.accounts import (
    clean_rate_limits,
    create_account,
    merge_credentials,
    validate_base_url,
)
from jobcenter.exports.columns import JOB_COLUMNS
from jobcenter.models import Job, JobError, JobSnapshot, ProviderAccount, SyncRun, Team
from jobcenter.queries.filters import find_account_id
from jobcenter.queries.scoping import scoped, sees_everything
from providers import PROVIDER_CLASSES, get_provider

EMBEDDED_ROWS = 20
MAX_SYNC_INTERVAL_MINUTES = 7 * 24 * 60


def drf_error(exc: DjangoValidationError, field: str | None = None) -> serializers.ValidationError:
    """A Django ValidationError as DRF's, keeping its field names (or nesting under `field`)."""
    detail: Any = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
    if field is not None:
        detail = {field: detail}
    elif not isinstance(detail, dict):
        detail = {"non_field_errors": detail}
    return serializers.ValidationError(detail)


# --- jobs, snapshots, errors ------------------------------------------------------------

# Declared once with the exports (`jobcenter.exports.columns.JOB_COLUMNS`), so a job
# has the same fields in the API's JSON as in an exported file, in the same order.
JOB_FIELDS = [column.name for column in JOB_COLUMNS]


class JobSerializer(serializers.ModelSerializer):
    """A job as listed: everything but the raw payload."""

    # Annotated by the view (F("account__name")): no second query, no account secrets loaded.
    account_name = serializers.CharField(read_only=True)

    class Meta:
        model = Job
        fields = JOB_FIELDS
        read_only_fields = JOB_FIELDS


class JobSnapshotSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobSnapshot
        fields: ClassVar[list[str]] = [
            "id",
            "job",
            "observed_at",
            "status",
            "provider_status",
            "total_count",
            "completed_count",
            "failed_count",
            "digest",
            "payload",
        ]
        read_only_fields = fields


class JobErrorSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobError
        fields: ClassVar[list[str]] = [
            "id",
            "job",
            "position",
            "code",
            "title",
            "message",
            "source",
            "external_id",
            "raw",
            "fetched_at",
        ]
        read_only_fields = fields


class JobDetailSerializer(JobSerializer):
    """One job with its payload, its latest snapshots and its first error records.

    Two bounded queries beside the job's own, whatever the job's history holds; the
    complete lists are at jobs/{id}/snapshots/ and jobs/{id}/errors/.
    """

    snapshots = serializers.SerializerMethodField(
        help_text=f"The latest {EMBEDDED_ROWS} snapshots, newest first."
    )
    errors = serializers.SerializerMethodField(
        help_text=f"The first {EMBEDDED_ROWS} error records, by position."
    )

    class Meta(JobSerializer.Meta):
        fields = [*JOB_FIELDS, "payload", "snapshots", "errors"]
        read_only_fields = fields

    @extend_schema_field(JobSnapshotSerializer(many=True))
    def get_snapshots(self, job: Job) -> list[dict[str, Any]]:
        rows = JobSnapshot.objects.filter(job=job).order_by("-observed_at", "-id")[:EMBEDDED_ROWS]
        return JobSnapshotSerializer(rows, many=True).data

    @extend_schema_field(JobErrorSerializer(many=True))
    def get_errors(self, job: Job) -> list[dict[str, Any]]:
        rows = JobError.objects.filter(job=job).order_by("position", "id")[:EMBEDDED_ROWS]
        return JobErrorSerializer(rows, many=True).data


class TrackJobSerializer(serializers.Serializer):
    """Input of POST jobs/track/; `jobcenter.sync.tracking.track_job` does the checking."""

    account = serializers.CharField(max_length=100, help_text="Account id or name.")

    def validate_account(self, value: str) -> ProviderAccount:
        """Found as the list filter finds it; track_job then gets the account itself."""
        request = self.context.get("request")
        accounts = scoped(ProviderAccount.objects.all(), getattr(request, "user", None))
        account_id = find_account_id(value.strip(), accounts)
        if account_id is None:
            raise serializers.ValidationError(f"No account named or numbered {value!r}.")
        return ProviderAccount.objects.get(pk=account_id)

    kind = serializers.CharField(max_length=100, help_text="A job kind of the account's provider.")
    external_id = serializers.CharField(
        max_length=1000, help_text="The job id the provider returned when it created the job."
    )


# --- accounts ---------------------------------------------------------------------------


def credentials_help() -> str:
    lines = ["Write-only. The provider's credential fields:"]
    for slug in PROVIDER_CLASSES:
        fields = ", ".join(
            f"`{f.name}`" + ("" if f.required else " (optional)")
            for f in get_provider(slug).credential_fields
        )
        lines.append(f"{slug}: {fields}.")
    lines.append("On update, a blank or missing field keeps the stored value.")
    return " ".join(lines)


class CredentialsField(serializers.DictField):
    """The credentials object: field name to string value, never serialized back."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("child", serializers.CharField(allow_blank=True, max_length=4000))
        kwargs.setdefault("write_only", True)
        super().__init__(**kwargs)


# What Job Center keeps about an account, shown and never written through the API.
ACCOUNT_STATE = [
    "credentials_hint",
    "last_status",
    "last_error",
    "last_sync_at",
    "last_success_at",
    "next_sync_at",
    "blocked_until",
    "consecutive_failures",
    "created_at",
    "updated_at",
]
ACCOUNT_READ_ONLY = ["id", "provider_label", *ACCOUNT_STATE]


class AccountSerializer(serializers.ModelSerializer):
    """An account; create and update check base URL and credentials like the admin."""

    provider_label = serializers.CharField(read_only=True)
    credentials = CredentialsField()  # required on create; PATCH is always partial
    sync_interval_minutes = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_SYNC_INTERVAL_MINUTES,
        help_text="Minutes between scheduled syncs (default from settings).",
    )

    class Meta:
        model = ProviderAccount
        fields: ClassVar[list[str]] = [
            "id",
            "name",
            "provider",
            "provider_label",
            "team",
            "base_url",
            "enabled",
            "sync_interval_minutes",
            "rate_limits",
            "credentials",
            *ACCOUNT_STATE,
        ]
        read_only_fields = ACCOUNT_READ_ONLY
        extra_kwargs: ClassVar[dict[str, Any]] = {
            "base_url": {"help_text": "Blank for the provider's default host."},
            "team": {
                "help_text": "The id of the team whose staff see the account: one of "
                "yours (required unless you are a superuser; null: superusers only).",
            },
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["credentials"].help_text = credentials_help()
        request = self.context.get("request")
        if request is not None:
            # Another team's id is "does not exist", as a missing one is.
            team = self.fields["team"]
            team.queryset = scoped(Team.objects.all(), request.user)
            if not sees_everything(request.user):
                team.required = True
                team.allow_null = False

    def validate_rate_limits(self, value: Any) -> Any:
        try:
            clean_rate_limits(value)
        except DjangoValidationError as exc:
            raise drf_error(exc, "rate_limits") from None
        return value or {}

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        account: ProviderAccount | None = self.instance
        provider = attrs.get("provider", account.provider if account else "")
        switching = account is not None and provider != account.provider
        if "base_url" in attrs or switching:
            base_url = attrs.get("base_url", account.base_url if account else "")
            try:
                attrs["base_url"] = validate_base_url(provider, base_url)
            except DjangoValidationError as exc:
                raise drf_error(exc, "base_url") from None
        if "credentials" in attrs or switching:
            attrs["credentials"] = self._credentials(provider, attrs.get("credentials") or {})
        return attrs

    def _credentials(self, provider: str, typed: dict[str, str]) -> dict[str, str]:
        """Typed values over the stored ones: `merge_credentials`, the admin form's rule."""
        try:
            return merge_credentials(self.instance, provider, typed)
        except DjangoValidationError as exc:
            raise drf_error(exc, "credentials") from None

    def create(self, validated_data: dict[str, Any]) -> ProviderAccount:
        try:
            with transaction.atomic():
                account = create_account(
                    validated_data["name"],
                    validated_data["provider"],
                    validated_data["credentials"],
                    base_url=validated_data.get("base_url", ""),
                    sync_interval_minutes=validated_data.get("sync_interval_minutes"),
                    team=validated_data.get("team"),
                )
                extra = {
                    name: validated_data[name]
                    for name in ("enabled", "rate_limits")
                    if name in validated_data
                }
                if extra:
                    for name, value in extra.items():
                        setattr(account, name, value)
                    account.save(update_fields=[*extra, "updated_at"])
        except DjangoValidationError as exc:
            raise drf_error(exc) from None
        return account

    def update(self, account: ProviderAccount, validated_data: dict[str, Any]) -> ProviderAccount:
        credentials = validated_data.pop("credentials", None)
        for name, value in validated_data.items():
            setattr(account, name, value)
        if credentials is not None:
            account.set_credentials(credentials)
        try:
            account.full_clean()
        except DjangoValidationError as exc:
            raise drf_error(exc) from None
        account.save()
        return account


class SyncAcceptedSerializer(serializers.Serializer):
    """Answer of POST accounts/{id}/sync/: the queued task, and its run once it started."""

    task_id = serializers.CharField(help_text="The django-q2 task id.")
    sync_run = serializers.IntegerField(
        allow_null=True,
        help_text="The SyncRun this request started, when a worker has already begun it.",
    )


class ConnectionTestSerializer(serializers.Serializer):
    ok = serializers.BooleanField(help_text="Whether the provider accepted the credentials.")
    message = serializers.CharField(help_text="What the provider said, credentials redacted.")


class SyncRunSerializer(serializers.ModelSerializer):
    account_name = serializers.CharField(read_only=True)
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = SyncRun
        fields: ClassVar[list[str]] = [
            "id",
            "account",
            "account_name",
            "trigger",
            "started_at",
            "finished_at",
            "duration_seconds",
            "outcome",
            "pages",
            "requests",
            "retries",
            "jobs_seen",
            "jobs_created",
            "jobs_changed",
            "jobs_gone",
            "snapshots_written",
            "errors_fetched",
            "error",
            "detail",
        ]
        read_only_fields = fields
