"""Jobs, their history (snapshots), their error records, and sync runs.

Nothing here knows any provider's JSON: a job's normalized fields come from
`providers.base.JobRecord`, and the raw payload is kept as it was received.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from jobcenter.models.accounts import ProviderAccount
from providers.base import Status


class Job(models.Model):
    """One provider job, as last seen; its history is in JobSnapshot."""

    # No index of its own: the unique constraint and job_account_created lead with it,
    # and every sync insert would pay for a third b-tree.
    account = models.ForeignKey(
        ProviderAccount, on_delete=models.PROTECT, related_name="jobs", db_index=False
    )
    provider = models.CharField(max_length=40, editable=False)  # the account's, for filters
    kind = models.CharField(max_length=100)
    external_id = models.CharField("external id", max_length=255)
    status = models.CharField(max_length=20, choices=[(s.value, s.value) for s in Status])
    provider_status = models.CharField(max_length=100, blank=True)
    total_count = models.BigIntegerField(null=True, blank=True)
    completed_count = models.BigIntegerField(null=True, blank=True)
    failed_count = models.BigIntegerField(null=True, blank=True)
    # Times the provider reports.
    created_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # Times Job Center observed.
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_changed_at = models.DateTimeField(default=timezone.now)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    is_terminal = models.BooleanField(default=False)
    gone_at = models.DateTimeField(null=True, blank=True)
    gone_reason = models.TextField(blank=True)
    tracked = models.BooleanField(default=False)
    errors_fetched_at = models.DateTimeField(null=True, blank=True)
    error_count = models.PositiveIntegerField(default=0)
    payload = models.JSONField(default=dict, blank=True)
    digest = models.CharField(max_length=64, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "kind", "external_id"], name="job_unique_per_account_kind"
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=[s.value for s in Status]),
                name="job_status_normalized",
            ),
        ]
        indexes = [
            # Search by a job's id, across accounts (staff paste ids from any provider).
            models.Index(fields=["external_id"], name="job_external_id"),
            models.Index(fields=["status", "-created_at"], name="job_status_created"),
            models.Index(fields=["kind", "-created_at"], name="job_kind_created"),
            models.Index(fields=["provider", "-created_at"], name="job_provider_created"),
            models.Index(fields=["account", "-created_at"], name="job_account_created"),
            models.Index(fields=["-created_at"], name="job_created"),
            models.Index(fields=["-last_changed_at"], name="job_last_changed"),
            # Only jobs still moving are polled by id: most jobs (terminal) never enter
            # this index, so writing them costs one index fewer.
            models.Index(
                fields=["account", "last_checked_at"],
                condition=models.Q(is_terminal=False),
                name="job_refresh_queue",
            ),
        ]
        # Exports (jobcenter.exports) hand whole histories out of Job Center: a right of
        # its own, beside the view permission of what is exported.
        permissions = [("export_job", "Can export jobs, snapshots and errors")]

    def __str__(self) -> str:
        return f"{self.kind} {self.external_id}"

    @property
    def is_failed(self) -> bool:
        return self.status in (Status.FAILED, Status.PARTIALLY_FAILED)


class JobSnapshot(models.Model):
    """One observed change of a job. Written only when something changed."""

    # snapshot_job_observed leads with the job: a job_id index alone would be dead weight.
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="snapshots", db_index=False)
    observed_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=20)
    provider_status = models.CharField(max_length=100, blank=True)
    total_count = models.BigIntegerField(null=True, blank=True)
    completed_count = models.BigIntegerField(null=True, blank=True)
    failed_count = models.BigIntegerField(null=True, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    digest = models.CharField(max_length=64)

    class Meta:
        ordering = ["job", "observed_at", "id"]
        indexes = [
            models.Index(fields=["job", "observed_at"], name="snapshot_job_observed"),
            models.Index(fields=["-observed_at"], name="snapshot_observed"),
        ]

    def __str__(self) -> str:
        return f"{self.job} {self.status} @ {self.observed_at:%Y-%m-%d %H:%M:%S}"


class JobError(models.Model):
    """A per-record error the provider reported for a job, fetched once it failed."""

    # The unique (job, position) constraint leads with the job: no index of its own.
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="errors", db_index=False)
    position = models.PositiveIntegerField()
    code = models.CharField(max_length=200, blank=True)
    title = models.CharField(max_length=500, blank=True)
    message = models.TextField(blank=True)
    source = models.CharField(max_length=500, blank=True)
    external_id = models.CharField(max_length=255, blank=True)
    raw = models.JSONField(default=dict, blank=True)
    fetched_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["job", "position"]
        constraints = [
            models.UniqueConstraint(fields=["job", "position"], name="job_error_unique_position")
        ]

    def __str__(self) -> str:
        return f"{self.job}: {self.message[:60]}"


class SyncTrigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "Manual"
    API = "api", "API"
    COMMAND = "command", "Command line"
    HOT = "hot", "Hot lane"


class SyncOutcome(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    PARTIAL = "partial", "Partly failed"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    DEFERRED = "deferred", "Deferred"


class SyncRun(models.Model):
    """One sync of one account: what it did, how it ended, and why."""

    account = models.ForeignKey(ProviderAccount, on_delete=models.CASCADE, related_name="sync_runs")
    trigger = models.CharField(max_length=20, choices=SyncTrigger.choices)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(
        max_length=20, choices=SyncOutcome.choices, default=SyncOutcome.RUNNING
    )
    pages = models.PositiveIntegerField(default=0)
    requests = models.PositiveIntegerField(default=0)
    retries = models.PositiveIntegerField(default=0)
    jobs_seen = models.PositiveIntegerField(default=0)
    jobs_created = models.PositiveIntegerField(default=0)
    jobs_changed = models.PositiveIntegerField(default=0)
    jobs_gone = models.PositiveIntegerField(default=0)
    snapshots_written = models.PositiveIntegerField(default=0)
    errors_fetched = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            models.Index(fields=["account", "-started_at"], name="syncrun_account_started"),
            models.Index(fields=["outcome", "-started_at"], name="syncrun_outcome_started"),
        ]

    def __str__(self) -> str:
        return f"{self.account} {self.started_at:%Y-%m-%d %H:%M:%S} {self.outcome}"

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()
