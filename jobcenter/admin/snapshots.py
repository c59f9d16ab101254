"""Admin for what a job went through: its snapshots and error records, each list with
its exports (`jobcenter.admin.exports`).

Both are read-only records written by the sync; their lists never count a whole table.
"""

from __future__ import annotations

from django.contrib import admin

from jobcenter.admin import display
from jobcenter.admin.common import RecordAdmin, time_column
from jobcenter.admin.exports import ExportAdminMixin
from jobcenter.models import JobError, JobSnapshot


@admin.register(JobSnapshot)
class JobSnapshotAdmin(ExportAdminMixin, RecordAdmin):
    export_name = "snapshots"
    actions = ["export_selected"]
    list_display = ["job", "observed", "status_badge", "provider_status", "completed_count"]
    list_filter = ["status", "observed_at"]
    search_fields = ["=job__external_id"]
    list_select_related = ["job"]
    readonly_fields = [
        "job",
        "observed",
        "status",
        "provider_status",
        "total_count",
        "completed_count",
        "failed_count",
        "digest",
        "raw_payload",
    ]
    exclude = ["payload", "observed_at"]

    observed = time_column("observed_at", "observed")

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: JobSnapshot) -> str:
        return display.status_badge(obj.status)

    @admin.display(description="payload")
    def raw_payload(self, obj: JobSnapshot) -> str:
        return display.pretty_json(obj.payload)


@admin.register(JobError)
class JobErrorAdmin(ExportAdminMixin, RecordAdmin):
    export_name = "errors"
    actions = ["export_selected"]
    list_display = ["job", "position", "code", "title", "message"]
    # No filter that lists the table's distinct values: the accounts (the staff member's
    # own) and fetch dates cost the same on any number of records.
    list_filter = ["job__account", "fetched_at"]
    search_fields = ["=job__external_id", "message"]
    list_select_related = ["job"]
    readonly_fields = [
        "job",
        "position",
        "code",
        "title",
        "message",
        "source",
        "external_id",
        "fetched_at",
    ]
    exclude = ["raw"]
