"""Admin for sync runs: one read-only row per sync, what it did and how it ended."""

from __future__ import annotations

from django.contrib import admin

from jobcenter.admin import display
from jobcenter.admin.common import RecordAdmin, time_column
from jobcenter.models import SyncRun


@admin.register(SyncRun)
class SyncRunAdmin(RecordAdmin):
    list_display = [
        "account",
        "trigger",
        "started",
        "outcome_badge",
        "run_duration",
        "pages",
        "requests",
        "retries",
        "jobs_seen",
        "jobs_created",
        "jobs_changed",
        "snapshots_written",
        "short_error",
    ]
    list_filter = ["outcome", "trigger", "account", "started_at"]
    list_select_related = ["account"]
    readonly_fields = [f.name for f in SyncRun._meta.fields]

    started = time_column("started_at", "started")

    @admin.display(description="outcome", ordering="outcome")
    def outcome_badge(self, obj: SyncRun) -> str:
        return display.status_badge(obj.outcome, obj.get_outcome_display().lower())

    @admin.display(description="duration")
    def run_duration(self, obj: SyncRun) -> str:
        return display.duration_text(obj.duration_seconds)

    @admin.display(description="error")
    def short_error(self, obj: SyncRun) -> str:
        return obj.error[:160]
