"""Admin for provider accounts: write-only credentials, sync health, "sync now", "test".

The account page shows masked credentials (the hint only), the sync state, the recent
runs, and buttons to queue a sync or ask the provider whether the credentials work.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from jobcenter.accounts import check_connection
from jobcenter.admin import display
from jobcenter.admin.common import TeamScopedAdmin, ago_column, time_column
from jobcenter.admin.filters import ProviderFilter
from jobcenter.admin.forms import ProviderAccountForm
from jobcenter.admin.live import LiveAdminMixin
from jobcenter.models import ProviderAccount, SyncRun, SyncTrigger
from jobcenter.tasks import enqueue_sync

RECENT_RUNS = 10
# The account page's "Sync health" fields, all read-only: the sync writes them.
SYNC_HEALTH = [
    "state",
    "last_error",
    "last_sync",
    "last_success",
    "next_sync",
    "blocked",
    "consecutive_failures",
]


@admin.register(ProviderAccount)
class ProviderAccountAdmin(LiveAdminMixin, TeamScopedAdmin):
    form = ProviderAccountForm
    change_list_template = "admin/jobcenter/live_change_list.html"
    live_list = "accounts"  # the list is live (jobcenter.admin.live)
    change_form_template = "admin/jobcenter/provideraccount/change_form.html"
    list_display = [
        "name",
        "provider",
        "team",
        "enabled",
        "state",
        "last_success",
        "last_sync",
        "next_sync",
        "short_error",
    ]
    list_filter = [ProviderFilter, "team", "enabled", "last_status"]
    list_select_related = ["team"]
    search_fields = ["name"]
    readonly_fields = ["masked_credentials", *SYNC_HEALTH]
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
                {
                    "fields": [
                        "name",
                        "provider",
                        "team",
                        "base_url",
                        "enabled",
                        "sync_interval_minutes",
                    ]
                },
            ),
            (
                "Credentials (write-only)",
                {
                    "fields": ["masked_credentials", *credential_fields],
                    "description": "Stored encrypted. Only the chosen provider's fields are "
                    "read; values are never shown back.",
                },
            ),
            ("Sync health", {"fields": SYNC_HEALTH}),
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
            return mark_safe(  # a constant: nothing to escape
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
        """The account, if the staff member's teams hold it (else 404) and they may change it."""
        account = get_object_or_404(self.get_queryset(request), pk=pk)
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
        if not accounts:  # the chosen ids are none of the staff member's teams' accounts
            self.message_user(request, "No account selected.", messages.WARNING)
            return
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
