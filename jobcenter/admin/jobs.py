"""Admin for jobs: the list (filters in words, no full count, no payloads), the job
page (timeline, paged errors, raw payload, refresh), tracking by id, and its history CSV.

The list's search is the API's (`jobcenter.queries.filters.search_jobs`); its exports
come from `jobcenter.admin.exports` over `jobcenter.exports`.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from jobcenter.admin import display, live
from jobcenter.admin.common import RecordAdmin, ago_column, time_column
from jobcenter.admin.exports import ExportAdminMixin
from jobcenter.admin.filters import (
    GoneFilter,
    KindFilter,
    ProviderFilter,
    StatusFilter,
    StuckFilter,
)
from jobcenter.admin.forms import TrackJobForm
from jobcenter.exports.specs import EXPORTS, can_export
from jobcenter.models import Job, JobError, JobSnapshot, ProviderAccount, SyncTrigger
from jobcenter.queries import dashboard
from jobcenter.queries.filters import search_jobs
from jobcenter.queries.scoping import scoped
from jobcenter.tasks import enqueue_sync
from providers import PROVIDER_CLASSES, get_provider

ERRORS_PER_PAGE = 25


class JobChangeList(ChangeList):
    """The job list reads no payloads (they can be large and the list never shows them),
    and builds each row's link with one string operation: Django's per-row reverse and
    resolve of the preserved filters cost more than the rest of the row."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.row_filters, self.preserved_filters = self.preserved_filters, ""
        self.change_url = reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=["0"]
        ).removesuffix("0/change/")

    def url_for_result(self, result: Any) -> str:
        url = f"{self.change_url}{quote(result.pk)}/change/"
        return f"{url}?{self.row_filters}" if self.row_filters else url

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet:
        queryset = super().get_queryset(request, exclude_parameters)
        return queryset.defer(
            "payload", "digest", "gone_reason", "account__credentials_encrypted"
        ).defer("account__sync_state", "account__last_error", "account__rate_limits")


JOB_FIELDSETS = [
    (
        None,
        {
            "fields": [
                "account_link",
                "provider_name",
                "kind",
                "external_id",
                "status_badge",
                "provider_status",
                "progress_bar",
                "error_count",
                "tracked",
            ]
        },
    ),
    (
        "Times the provider reports",
        {"fields": ["created", "started", "completed", "updated", "expires", "duration"]},
    ),
    (
        "Seen by Job Center",
        {
            "fields": [
                "first_seen",
                "last_seen",
                "last_changed",
                "last_checked",
                "errors_fetched",
                "gone",
                "gone_reason",
                "digest",
            ]
        },
    ),
    ("From the provider", {"fields": ["provider_links", "provider_details"]}),
]


@admin.register(Job)
class JobAdmin(live.LiveAdminMixin, ExportAdminMixin, RecordAdmin):
    export_name = "jobs"
    # Live pages (jobcenter.admin.live): the list follows the newest change of the
    # staff member's jobs; a job's page, the fields a sync changes on its row.
    live_list = "jobs"
    live_fields = live.JOB_FIELDS
    change_form_template = "admin/jobcenter/job/change_form.html"
    change_list_template = "admin/jobcenter/job/change_list.html"  # live, tracking, export
    list_display = [
        "external_id",
        "kind_label",
        "provider_account",
        "status_badge",
        "progress_bar",
        "duration",
        "created",
        "changed",
    ]
    list_filter = [
        ProviderFilter,
        "account",
        KindFilter,
        StatusFilter,
        "created_at",
        "last_changed_at",
        StuckFilter,
        GoneFilter,
        "tracked",
    ]
    search_fields = ["external_id"]  # get_search_results says how
    search_help_text = "An exact job id, or words from its error messages."
    list_select_related = ["account"]
    list_per_page = 50
    # Jobs are never deleted from here: the one action is the export, so staff without
    # the export permission get no per-row checkbox.
    actions = ["export_selected"]
    ordering = ["-created_at", "-id"]
    fieldsets = JOB_FIELDSETS
    readonly_fields = [name for _, options in JOB_FIELDSETS for name in options["fields"]]

    created = time_column("created_at", "created")
    started = time_column("started_at", "started")
    completed = time_column("completed_at", "completed")
    updated = time_column("updated_at", "updated at the provider")
    expires = time_column("expires_at", "expires")
    first_seen = time_column("first_seen_at", "first seen")
    last_seen = time_column("last_seen_at", "last seen")
    last_changed = time_column("last_changed_at", "last changed")
    last_checked = time_column("last_checked_at", "last checked")
    errors_fetched = time_column("errors_fetched_at", "errors fetched")
    gone = time_column("gone_at", "gone from the provider")
    changed = ago_column("last_changed_at", "changed")

    def has_delete_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        # A sync would bring a deleted job back; its history is the point of keeping it.
        return False

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return JobChangeList

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        """An exact external id, or text in the job's error records, as the API's search."""
        return search_jobs(queryset, search_term), False

    # -- columns -------------------------------------------------------------------------
    @admin.display(description="provider", ordering="provider")
    def provider_name(self, obj: Job) -> str:
        return (
            get_provider(obj.provider).label if obj.provider in PROVIDER_CLASSES else obj.provider
        )

    @admin.display(description="provider / account", ordering="account__name")
    def provider_account(self, obj: Job) -> str:
        return format_html(
            '{}<div class="jc-sub">{}</div>', obj.account.name, self.provider_name(obj)
        )

    @admin.display(description="kind", ordering="kind")
    def kind_label(self, obj: Job) -> str:
        """The provider's name for the kind; the stored value on hover."""
        try:
            label = get_provider(obj.provider).kind(obj.kind).label
        except KeyError:
            return obj.kind
        return format_html('<span title="{}">{}</span>', obj.kind, label)

    @admin.display(description="account", ordering="account__name")
    def account_link(self, obj: Job) -> str:
        url = reverse("admin:jobcenter_provideraccount_change", args=[obj.account_id])
        return format_html('<a href="{}">{}</a>', url, obj.account.name)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Job) -> str:
        tags = []
        if obj.gone_at is not None:
            tags.append("gone")
        if not obj.is_terminal and obj.gone_at is None:
            since = obj.started_at or obj.created_at or obj.first_seen_at
            limit = dashboard.stuck_threshold(obj.kind)
            if since and (timezone.now() - since).total_seconds() > limit * 60:
                tags.append("stuck")
        if not tags:
            return display.status_badge(obj.status)
        return format_html(
            "{}{}",
            display.status_badge(obj.status),
            format_html_join("", ' <span class="jc-tag">{}</span>', ((t,) for t in tags)),
        )

    @admin.display(description="progress")
    def progress_bar(self, obj: Job) -> str:
        return display.progress(obj.total_count, obj.completed_count, obj.failed_count)

    @admin.display(description="duration")
    def duration(self, obj: Job) -> str:
        return display.job_duration(
            obj.started_at or obj.created_at, obj.completed_at, obj.is_terminal
        )

    @admin.display(description="links from the provider")
    def provider_links(self, obj: Job) -> str:
        links = get_provider(obj.provider).job_links(obj.payload or {})
        if not links:
            return "—"
        return format_html_join(
            "",
            '<div><a href="{}" rel="noopener noreferrer">{}</a></div>',
            ((u, label) for label, u in links),
        )

    @admin.display(description="details")
    def provider_details(self, obj: Job) -> str:
        details = get_provider(obj.provider).job_details(obj.payload or {})
        if not details:
            return "—"
        return format_html_join("", "<div><strong>{}:</strong> {}</div>", details)

    # -- the job page --------------------------------------------------------------------
    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> Any:
        extra = {**(extra_context or {})}
        job = self.get_object(request, object_id)
        if job is not None:
            timeline, truncated = dashboard.job_timeline(job)
            errors = Paginator(
                JobError.objects.filter(job=job).order_by("position"), ERRORS_PER_PAGE
            )
            extra |= {
                "timeline": timeline,
                "timeline_truncated": truncated,
                "errors_page": errors.get_page(request.GET.get("errors_page")),
                "payload_json": display.pretty_json(job.payload),
                "history_url": reverse("admin:jobcenter_job_history_csv", args=[job.pk]),
                "refresh_url": reverse("admin:jobcenter_job_refresh", args=[job.pk]),
                "snapshots_url": reverse("admin:jobcenter_jobsnapshot_changelist")
                + f"?job__id__exact={job.pk}",
                "title": "Job",
                "live": self.live_object_marker(job),
                "can_refresh": self.has_change_permission(request, job),
                # The history is snapshots: their view permission, not the job's.
                "can_export_history": can_export(request.user, EXPORTS["snapshots"]),
                # Every field is read-only: no save buttons.
                "show_save": False,
                "show_save_and_continue": False,
                "show_save_and_add_another": False,
            }
        return super().change_view(request, object_id, form_url, extra_context=extra)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        extra = {
            "title": "Jobs",
            "can_track": self.has_change_permission(request),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=extra)

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("track/", wrap(self.track_view), name="jobcenter_job_track"),
            path(
                "<int:pk>/history.csv",
                wrap(self.history_csv_view),
                name="jobcenter_job_history_csv",
            ),
            path("<int:pk>/refresh/", wrap(self.refresh_view), name="jobcenter_job_refresh"),
            # The dashboard's version endpoint: its figures are the jobs'.
            path(
                "live/dashboard/",
                wrap(live.live_view(live.dashboard_view)),
                name="jobcenter_dashboard_live",
            ),
            *super().get_urls(),
        ]

    def history_csv_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        """Every snapshot of one job, oldest first: the snapshot export of that job."""
        job = get_object_or_404(self.get_queryset(request).only("pk", "kind", "external_id"), pk=pk)
        if not can_export(request.user, EXPORTS["snapshots"]):
            raise PermissionDenied
        return self.export_response(
            request,
            EXPORTS["snapshots"],
            JobSnapshot.objects.filter(job=job),
            "csv",
            ordering=("observed_at", "id"),
            label=f"job-{job.kind}-{job.external_id}-history",
            back=reverse("admin:jobcenter_job_change", args=[job.pk]),
        )

    @method_decorator(require_POST)
    def refresh_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Refresh now: queue a sync of the job's account, which re-reads every job of it
        that has not ended (this one included) and fetches errors of newly failed ones."""
        job = get_object_or_404(self.get_queryset(request).select_related("account"), pk=pk)
        if not self.has_change_permission(request, job):
            raise PermissionDenied
        enqueue_sync(job.account_id, SyncTrigger.MANUAL)
        note = (
            "it re-reads this job while it has not ended"
            if not job.is_terminal
            else "this job has ended, so its record will not change any more"
        )
        self.message_user(
            request,
            f"Sync of {job.account.name} queued ({note}); its progress shows under Sync runs.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:jobcenter_job_change", args=[job.pk]))

    def track_view(self, request: HttpRequest) -> HttpResponse:
        """Register a job id to poll until it ends (for kinds no provider listing shows)."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        form = TrackJobForm(
            request.POST or None,
            initial=request.GET.dict(),
            accounts=scoped(ProviderAccount.objects.order_by("name"), request.user),
        )
        if request.method == "POST" and form.is_valid():
            try:
                job, created = form.save()
            except ValidationError:
                pass  # the errors are on the form
            else:
                verb = "Now tracking" if created else "Already known; now tracking"
                self.message_user(
                    request, f"{verb} {job.kind} {job.external_id}.", messages.SUCCESS
                )
                return HttpResponseRedirect(reverse("admin:jobcenter_job_change", args=[job.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Track a job by id",
            "form": form,
        }
        return TemplateResponse(request, "admin/jobcenter/job/track.html", context)
