"""Admin for every model: thin classes over `dashboard.py`, `display.py`, `sync` and `tasks`.

The job list never counts a whole large table and never loads payloads; the job page
shows the normalized fields, the timeline of snapshots, paged errors and the raw payload;
the account page has "test connection", "sync now" and its recent runs. The dashboard
at the admin index is `templates/admin/index.html` over `jobcenter.queries.dashboard`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
)
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from jobcenter.accounts import check_connection
from jobcenter.admin import display
from jobcenter.admin.exports import ExportAdminMixin
from jobcenter.admin.forms import ProviderAccountForm, TrackJobForm
from jobcenter.exports import EXPORTS
from jobcenter.models import Job, JobError, JobSnapshot, ProviderAccount, SyncRun, SyncTrigger
from jobcenter.queries import dashboard
from jobcenter.queries.filters import search_jobs
from jobcenter.tasks import enqueue_sync
from providers import PROVIDER_CLASSES, get_provider, provider_choices

admin.site.site_header = "Job Center"
admin.site.site_title = "Job Center"
admin.site.index_title = "Dashboard"
# The job list needs the width; the dashboard and breadcrumbs already lead everywhere.
admin.site.enable_nav_sidebar = False

ERRORS_PER_PAGE = 25
RECENT_RUNS = 10


def time_column(field: str, description: str) -> Callable[[Any, Any], str]:
    """A read-only admin column showing `field` in the staff member's zone, UTC on hover."""

    @admin.display(description=description, ordering=field)
    def column(self: Any, obj: Any) -> str:
        return display.when(getattr(obj, field))

    return column


def ago_column(field: str, description: str) -> Callable[[Any, Any], str]:
    """A read-only admin column showing `field` as '5 minutes ago', exact times on hover."""

    @admin.display(description=description, ordering=field)
    def column(self: Any, obj: Any) -> str:
        return display.ago(getattr(obj, field))

    return column


# --- filters ------------------------------------------------------------------------------


class ProviderFilter(admin.SimpleListFilter):
    title = "provider"
    parameter_name = "provider"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return provider_choices()

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        # Jobs carry their account's provider, so both models filter on their own column.
        return queryset.filter(provider=self.value()) if self.value() else queryset


class KindFilter(admin.SimpleListFilter):
    """Kinds from the provider registry: no DISTINCT over the jobs table to list them."""

    title = "kind"
    parameter_name = "kind"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        provider = request.GET.get("provider")
        slugs = [provider] if provider in PROVIDER_CLASSES else list(PROVIDER_CLASSES)
        return [
            (kind.name, f"{get_provider(slug).label}: {kind.label}")
            for slug in slugs
            for kind in get_provider(slug).kinds
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(kind=self.value()) if self.value() else queryset


class StatusFilter(admin.SimpleListFilter):
    """Statuses in words ("partly failed"), in the order the dashboard shows them."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(s.value, display.status_label(s.value)) for s in dashboard.STATUS_ORDER]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(status=self.value()) if self.value() else queryset


class StuckFilter(admin.SimpleListFilter):
    title = "stuck"
    parameter_name = "stuck"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Stuck (running past its kind's limit)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return dashboard.stuck_jobs(queryset, timezone.now())
        return queryset


class GoneFilter(admin.SimpleListFilter):
    title = "still at the provider"
    parameter_name = "gone"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("no", "Still listed"), ("yes", "Gone from the provider")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return queryset.filter(gone_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(gone_at__isnull=True)
        return queryset


# --- pagination without a full count --------------------------------------------------------


class CappedCountPaginator(Paginator):
    """Counts matching rows only up to `cap`: a COUNT over LIMIT cap+1, not the table.

    Past the cap the list says "more than N" and offers the first N/per_page pages (40 of
    50 jobs); narrowing the filters shows the rest, as a search engine does. The count
    then costs the same on any table size.
    """

    cap = 2_000
    capped = False

    @cached_property
    def count(self) -> int:
        found = self.object_list.order_by()[: self.cap + 1].count()
        self.capped = found > self.cap
        return min(found, self.cap)


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


# --- provider accounts --------------------------------------------------------------------


@admin.register(ProviderAccount)
class ProviderAccountAdmin(admin.ModelAdmin):
    form = ProviderAccountForm
    change_form_template = "admin/jobcenter/provideraccount/change_form.html"
    list_display = [
        "name",
        "provider",
        "enabled",
        "state",
        "last_success",
        "last_sync",
        "next_sync",
        "short_error",
    ]
    list_filter = [ProviderFilter, "enabled", "last_status"]
    search_fields = ["name"]
    readonly_fields = [
        "masked_credentials",
        "state",
        "last_error",
        "last_sync",
        "last_success",
        "next_sync",
        "blocked",
        "consecutive_failures",
    ]
    actions = ["sync_now", "test_connection"]

    last_sync = ago_column("last_sync_at", "last sync")
    last_success = ago_column("last_success_at", "last success")
    next_sync = ago_column("next_sync_at", "next sync")
    blocked = time_column("blocked_until", "blocked until")

    def get_fieldsets(self, request: HttpRequest, obj: ProviderAccount | None = None) -> list:
        credential_fields = [n for n in self.form.declared_fields if n.startswith("credential__")]
        return [
            (
                None,
                {"fields": ["name", "provider", "base_url", "enabled", "sync_interval_minutes"]},
            ),
            (
                "Credentials (write-only)",
                {
                    "fields": ["masked_credentials", *credential_fields],
                    "description": "Stored encrypted. Only the chosen provider's fields are "
                    "read; values are never shown back.",
                },
            ),
            (
                "Sync health",
                {
                    "fields": [
                        "state",
                        "last_error",
                        "last_sync",
                        "last_success",
                        "next_sync",
                        "blocked",
                        "consecutive_failures",
                    ]
                },
            ),
            ("Rate limits", {"fields": ["rate_limits"], "classes": ["collapse"]}),
        ]

    @admin.display(description="stored credentials")
    def masked_credentials(self, obj: ProviderAccount) -> str:
        if not obj.pk or not obj.has_credentials:
            return "None stored yet."
        hint = obj.credentials_hint or ""
        return format_html(
            '<span class="jc-masked">{}</span> <span class="jc-note">({})</span>',
            f"••••••••{hint}" if hint else "••••••••",
            "the last characters of the secret, to tell keys apart" if hint else "stored",
        )

    @admin.display(description="state", ordering="last_status")
    def state(self, obj: ProviderAccount) -> str:
        if not obj.enabled:
            return format_html(
                '<span class="jc-badge jc-cancelled"><span aria-hidden="true">⊘</span> '
                "disabled</span>"
            )
        return display.status_badge(obj.last_status)

    @admin.display(description="last error")
    def short_error(self, obj: ProviderAccount) -> str:
        return obj.last_error[:120]

    @method_decorator(sensitive_post_parameters())
    def add_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        return super().add_view(request, *args, **kwargs)

    @method_decorator(sensitive_post_parameters())
    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> Any:
        extra = {**(extra_context or {})}
        account = self.get_object(request, object_id)
        if account is not None:
            extra["recent_runs"] = list(
                SyncRun.objects.filter(account=account).order_by("-started_at", "-id")[:RECENT_RUNS]
            )
            extra["runs_url"] = (
                reverse("admin:jobcenter_syncrun_changelist") + f"?account__id__exact={account.pk}"
            )
            extra["can_operate"] = self.has_change_permission(request, account)
        return super().change_view(request, object_id, form_url, extra_context=extra)

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path(
                "<int:pk>/sync-now/",
                wrap(self.sync_now_view),
                name="jobcenter_provideraccount_sync_now",
            ),
            path(
                "<int:pk>/test-connection/",
                wrap(self.test_connection_view),
                name="jobcenter_provideraccount_test_connection",
            ),
            *super().get_urls(),
        ]

    def _operable(self, request: HttpRequest, pk: int) -> ProviderAccount:
        account = get_object_or_404(ProviderAccount, pk=pk)
        if not self.has_change_permission(request, account):
            raise PermissionDenied
        return account

    @method_decorator(require_POST)
    def sync_now_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Queue a sync of one account; the worker records it as a SyncRun."""
        account = self._operable(request, pk)
        self.sync_now(request, ProviderAccount.objects.filter(pk=account.pk))
        return HttpResponseRedirect(
            reverse("admin:jobcenter_provideraccount_change", args=[account.pk])
        )

    @method_decorator(require_POST)
    def test_connection_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """One cheap authenticated call to the provider, answered in words."""
        account = self._operable(request, pk)
        self.test_connection(request, ProviderAccount.objects.filter(pk=account.pk))
        return HttpResponseRedirect(
            reverse("admin:jobcenter_provideraccount_change", args=[account.pk])
        )

    @admin.action(description="Sync now", permissions=["change"])
    def sync_now(self, request: HttpRequest, queryset: QuerySet[ProviderAccount]) -> None:
        """Queue a sync per account; the worker runs it and records a SyncRun."""
        accounts = list(queryset)
        for account in accounts:
            enqueue_sync(account.pk, SyncTrigger.MANUAL)
        names = ", ".join(a.name for a in accounts)
        self.message_user(
            request,
            f"Sync queued for {names}; its progress shows under Sync runs.",
            messages.SUCCESS,
        )

    @admin.action(description="Test connection", permissions=["change"])
    def test_connection(self, request: HttpRequest, queryset: QuerySet[ProviderAccount]) -> None:
        for account in queryset:
            ok, text = check_connection(account)
            self.message_user(
                request, f"{account.name}: {text}", messages.SUCCESS if ok else messages.ERROR
            )


# --- jobs -----------------------------------------------------------------------------------

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
class JobAdmin(ExportAdminMixin, admin.ModelAdmin):
    export_name = "jobs"
    change_form_template = "admin/jobcenter/job/change_form.html"
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
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedCountPaginator
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

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

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
                "can_refresh": self.has_change_permission(request, job),
                "can_export": self.has_export_permission(request),
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
            *super().get_urls(),
        ]

    def history_csv_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        """Every snapshot of one job, oldest first: the snapshot export of that job."""
        job = get_object_or_404(Job.objects.only("pk", "kind", "external_id"), pk=pk)
        if not self.has_export_permission(request):
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
        job = get_object_or_404(Job.objects.select_related("account"), pk=pk)
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
        """Register a job id to poll until it ends (Fullstory has no job list)."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        form = TrackJobForm(request.POST or None, initial=request.GET.dict())
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


# --- history, errors, runs ----------------------------------------------------------------


@admin.register(JobSnapshot)
class JobSnapshotAdmin(ExportAdminMixin, admin.ModelAdmin):
    export_name = "snapshots"
    actions = ["export_selected"]
    list_display = ["job", "observed", "status_badge", "provider_status", "completed_count"]
    list_filter = ["status", "observed_at"]
    search_fields = ["=job__external_id"]
    list_select_related = ["job"]
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedCountPaginator
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

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: JobSnapshot) -> str:
        return display.status_badge(obj.status)

    @admin.display(description="payload")
    def raw_payload(self, obj: JobSnapshot) -> str:
        return display.pretty_json(obj.payload)


@admin.register(JobError)
class JobErrorAdmin(admin.ModelAdmin):
    list_display = ["job", "position", "code", "title", "message"]
    search_fields = ["=job__external_id", "message"]
    list_select_related = ["job"]
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedCountPaginator
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

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


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
