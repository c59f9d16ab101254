"""Admin for alerts: channels (write-only signing secret), rules, the event ledger, deliveries.

Registered when Django's admin autodiscovery imports `jobcenter.admin`. Events and
deliveries are read-only records staff read to see what was sent, when, and why a
delivery failed.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters

from jobcenter.admin.common import TeamScopedAdmin
from jobcenter.alerts.channels import channel_destination
from jobcenter.alerts.delivery import enqueue_deliveries
from jobcenter.alerts.rules import validate_channel, validate_rule_team
from jobcenter.models import (
    AlertChannel,
    AlertChannelKind,
    AlertDelivery,
    AlertDeliveryStatus,
    AlertEvent,
    AlertRule,
)


class AlertChannelForm(forms.ModelForm):
    """The signing secret is typed in, never shown back: blank keeps the stored one."""

    secret = forms.CharField(
        label="signing secret",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Webhook only: the key receivers verify the Standard Webhooks signature "
        "with: a whsec_ secret (whsec_ and base64), or any text of at least 16 characters "
        "(receivers then use whsec_ and the base64 of it). Stored encrypted; leave blank to "
        "keep the stored one.",
    )

    class Meta:
        model = AlertChannel
        fields = ["name", "team", "kind", "recipients", "url"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        channel = self.instance
        channel.kind = cleaned.get("kind") or ""
        channel.recipients = cleaned.get("recipients") or ""
        channel.url = cleaned.get("url") or ""
        for name, errors in validate_channel(channel, cleaned.get("secret", "")).items():
            for error in errors:
                self.add_error(name, error)
        if "url" in cleaned and not self.errors.get("url"):
            cleaned["url"] = channel.url
        return cleaned

    def save(self, commit: bool = True) -> AlertChannel:
        channel = super().save(commit=False)
        secret = self.cleaned_data.get("secret")
        if secret:
            channel.set_secret(secret)
        elif channel.kind != AlertChannelKind.WEBHOOK:
            channel.set_secret("")
        if commit:
            channel.save()
        return channel


@admin.register(AlertChannel)
class AlertChannelAdmin(TeamScopedAdmin):
    form = AlertChannelForm
    list_display = ["name", "team", "kind", "destination", "stored_secret"]
    list_filter = ["team", "kind"]
    list_select_related = ["team"]
    search_fields = ["name"]
    readonly_fields = ["stored_secret"]
    fields = ["name", "team", "kind", "recipients", "url", "stored_secret", "secret"]

    @admin.display(description="destination")
    def destination(self, obj: AlertChannel) -> str:
        return channel_destination(obj)

    @admin.display(description="stored secret")
    def stored_secret(self, obj: AlertChannel) -> str:
        if not obj.pk or not obj.has_secret:
            return "None stored."
        return f"••••••••{obj.secret_hint}"

    @method_decorator(sensitive_post_parameters("secret"))
    def add_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        return super().add_view(request, *args, **kwargs)

    @method_decorator(sensitive_post_parameters("secret"))
    def change_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        return super().change_view(request, *args, **kwargs)


class AlertRuleForm(forms.ModelForm):
    """A team's rule sends to the team's channels and watches the team's accounts."""

    class Meta:
        model = AlertRule
        fields = ["team", "channel", "accounts"]  # the admin's fieldsets add the rest

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        problems = validate_rule_team(
            cleaned.get("team"), cleaned.get("channel"), cleaned.get("accounts") or []
        )
        for name, errors in problems.items():
            for error in errors:
                self.add_error(name, error)
        return cleaned


@admin.register(AlertRule)
class AlertRuleAdmin(TeamScopedAdmin):
    form = AlertRuleForm
    list_display = ["name", "team", "active", "channel", "events", "scope", "quiet_hours"]
    list_filter = ["enabled", "team", "channel"]
    list_select_related = ["team", "channel"]
    search_fields = ["name"]
    filter_horizontal = ["accounts"]
    fieldsets = [
        (None, {"fields": ["name", "team", "enabled", "channel"]}),
        (
            "Which jobs and accounts (blank: all of the team's)",
            {"fields": ["accounts", "providers", "kinds"]},
        ),
        (
            "Events",
            {
                "fields": [
                    "on_job_failed",
                    "on_job_partially_failed",
                    "partial_min_percent",
                    "stuck_after_minutes",
                    "account_failures",
                    "account_silent_minutes",
                ]
            },
        ),
        (
            "Quiet hours",
            {
                "fields": ["quiet_start", "quiet_end", "quiet_timezone"],
                "description": "Alerts that fire during quiet hours are recorded and sent "
                "when the quiet hours end (as a digest when there are many).",
            },
        ),
    ]

    @admin.display(description="active", boolean=True)
    def active(self, obj: AlertRule) -> bool:
        return obj.is_active

    @admin.display(description="events")
    def events(self, obj: AlertRule) -> str:
        parts = []
        if obj.on_job_failed:
            parts.append("failed")
        if obj.on_job_partially_failed:
            parts.append(
                f"partly failed > {obj.partial_min_percent:g}%"
                if obj.partial_min_percent
                else "partly failed"
            )
        if obj.stuck_after_minutes:
            parts.append(f"not ended after {obj.stuck_after_minutes} min")
        if obj.account_failures:
            parts.append(f"account failed {obj.account_failures} syncs in a row")
        if obj.account_silent_minutes:
            parts.append(f"account not synced for {obj.account_silent_minutes} min")
        return ", ".join(parts)

    @admin.display(description="scope")
    def scope(self, obj: AlertRule) -> str:
        parts = [obj.providers or "all providers"]
        if obj.kinds:
            parts.append(", ".join(obj.kind_list()))
        return "; ".join(parts)

    @admin.display(description="quiet hours")
    def quiet_hours(self, obj: AlertRule) -> str:
        if obj.quiet_start is None or obj.quiet_end is None:
            return "—"
        return f"{obj.quiet_start:%H:%M} to {obj.quiet_end:%H:%M} {obj.quiet_timezone}"


class ReadOnlyAdmin(TeamScopedAdmin):
    """Records written by the alert engine: staff read them, nobody edits them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AlertEvent)
class AlertEventAdmin(ReadOnlyAdmin):
    list_display = ["fired_at", "event", "rule", "account", "job_link", "state", "delivery"]
    list_filter = ["event", "state", "rule"]
    list_select_related = ["rule", "account", "job", "delivery"]
    search_fields = ["job__external_id"]
    date_hierarchy = "fired_at"
    fields = ["fired_at", "event", "rule", "account", "job_link", "episode", "state", "delivery"]
    readonly_fields = fields

    @admin.display(description="job")
    def job_link(self, obj: AlertEvent) -> str:
        if obj.job_id is None:
            return "—"
        url = reverse("admin:jobcenter_job_change", args=[obj.job_id])
        return format_html('<a href="{}">{}</a>', url, obj.job)


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "subject",
        "channel",
        "status",
        "attempts",
        "response_code",
        "short_error",
    ]
    list_filter = ["status", "channel_kind", "is_digest", "channel"]
    list_select_related = ["channel"]
    search_fields = ["subject"]
    date_hierarchy = "created_at"
    fields = [
        "created_at",
        "message_id",
        "rule",
        "channel",
        "channel_kind",
        "destination",
        "status",
        "attempts",
        "last_attempt_at",
        "next_attempt_at",
        "sent_at",
        "response_code",
        "last_error",
        "attempt_log",
        "is_digest",
        "event_count",
        "subject",
        "text",
        "payload",
    ]
    readonly_fields = fields
    actions = ["send_again"]

    @admin.display(description="last error")
    def short_error(self, obj: AlertDelivery) -> str:
        return obj.last_error[:120]

    @admin.action(description="Send the selected failed deliveries again", permissions=["change"])
    def send_again(self, request: HttpRequest, queryset: QuerySet[AlertDelivery]) -> None:
        ids = list(queryset.filter(status=AlertDeliveryStatus.FAILED).values_list("pk", flat=True))
        AlertDelivery.objects.filter(pk__in=ids).update(
            status=AlertDeliveryStatus.RETRYING, next_attempt_at=timezone.now()
        )
        enqueue_deliveries(ids)
        self.message_user(
            request, f"{len(ids)} deliveries queued to be sent again.", messages.SUCCESS
        )

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Viewing only; the action above needs the change permission of the model.
        return obj is None and super(ReadOnlyAdmin, self).has_change_permission(request, obj)
