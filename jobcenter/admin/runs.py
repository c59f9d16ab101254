"""Admin for sync runs: one read-only row per sync, what it did and how it ended."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from jobcenter.admin import display
from jobcenter.admin.common import CappedCountPaginator, time_column
from jobcenter.models import SyncRun


@admin.register(SyncRun)
class SyncRunAdmin(admin.ModelAdmin):
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
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedCountPaginator
    readonly_fields = [f.name for f in SyncRun._meta.fields]

    started = time_column("started_at", "started")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="outcome", ordering="outcome")
    def outcome_badge(self, obj: SyncRun) -> str:
        return display.status_badge(obj.outcome, obj.get_outcome_display().lower())

    @admin.display(description="duration")
    def run_duration(self, obj: SyncRun) -> str:
        return display.duration_text(obj.duration_seconds)

    @admin.display(description="error")
    def short_error(self, obj: SyncRun) -> str:
        return obj.error[:160]
