"""Admin for API tokens: each staff member makes, sees and revokes their own.

Superusers see and revoke everyone's and may make one for any active staff user. No
page shows a key or its digest: the key appears once, on the page that answers its
creation (never in a message, the session or the admin's history), and only its digest
is stored. Revoking deletes the token; an expired one stays listed until revoked.
Model permissions play no part: a token is its owner's business (and a superuser's).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers

from jobcenter.admin import display
from jobcenter.admin.common import ago_column, time_column
from jobcenter.models import ApiToken
from jobcenter.tokens import check_token_request, create_token, revoke_token, token_days_range

SHOWN_FIELDS = ["name", "user", "created", "expiry", "last_used_at"]


class ApiTokenForm(forms.ModelForm):
    """A new token: its name, lifetime and (superusers only) whose it is."""

    days = forms.IntegerField()  # its bounds come from the settings (__init__)

    class Meta:
        model = ApiToken
        fields = ["user", "name"]

    owner: Any = None  # set for staff who are not superusers: the token is theirs

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        low, high = token_days_range()
        self.fields["days"] = forms.IntegerField(
            min_value=low,
            max_value=high,
            initial=settings.JOBCENTER_API_TOKEN_DAYS,
            help_text=f"Days until it expires, {low} to {high}.",
        )
        if "user" in self.fields:
            active_staff = get_user_model()._default_manager.filter(is_active=True, is_staff=True)
            self.fields["user"].queryset = active_staff

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        user = self.owner or data.get("user")
        if user is not None and data.get("name") and data.get("days") is not None:
            for field, errors in check_token_request(user, data["name"], data["days"]).items():
                self.add_error(field if field in self.fields else None, errors)
        return data


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "made", "expires", "state", "last_used"]
    list_select_related = ["user"]
    search_fields = ["name", "user__username"]
    actions = ["delete_selected"]

    made = time_column("created", "created")
    expires = time_column("expiry", "expires")
    last_used = ago_column("last_used_at", "last used")

    @admin.display(description="state")
    def state(self, obj: ApiToken) -> str:
        if obj.is_expired():
            return display.status_badge("failed", "expired")
        return display.status_badge("succeeded", "active")

    # --- who sees what: owners and superusers, whatever the model permissions say ---

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        tokens = super().get_queryset(request)
        return tokens if request.user.is_superuser else tokens.filter(user=request.user)

    def _may(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        user = request.user
        if not (user.is_active and user.is_staff):
            return False
        return obj is None or user.is_superuser or obj.user_id == user.pk

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._may(request)

    def has_view_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return self._may(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._may(request)

    def has_change_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False  # a token is made, used and revoked; never edited

    def has_delete_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return self._may(request, obj)

    # --- the pages ---

    def get_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> list[str]:
        if obj is not None:
            return SHOWN_FIELDS
        return ["user", "name", "days"] if request.user.is_superuser else ["name", "days"]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> list[str]:
        return SHOWN_FIELDS if obj is not None else []

    def get_form(
        self, request: HttpRequest, obj: ApiToken | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm]:
        if obj is not None:
            return super().get_form(request, obj, change=change, **kwargs)
        form = super().get_form(request, obj, change=change, form=ApiTokenForm, **kwargs)
        form.owner = None if request.user.is_superuser else request.user
        return form

    def save_form(self, request: HttpRequest, form: forms.ModelForm, change: bool) -> ApiToken:
        """Make the token through `create_token`; the key rides on the instance to the
        answer page (`response_add`) and nowhere else."""
        form.save(commit=False)  # Django's admin then calls form.save_m2m(): nothing to save
        data = form.cleaned_data
        token, key = create_token(form.owner or data["user"], data["name"], data["days"])
        token.shown_once = key
        return token

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        """Nothing left to save: `save_form` made the token (no token is ever changed)."""

    def response_add(
        self, request: HttpRequest, obj: ApiToken, post_url_continue: str | None = None
    ) -> HttpResponse:
        """The key, this once, on a page no cache keeps."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "API token created",
            "token": obj,
            "key": obj.shown_once,
        }
        response = TemplateResponse(request, "admin/jobcenter/apitoken/created.html", context)
        add_never_cache_headers(response)
        return response

    def delete_model(self, request: HttpRequest, obj: ApiToken) -> None:
        revoke_token(obj, by=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for token in queryset:
            revoke_token(token, by=request.user)
