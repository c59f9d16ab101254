"""The admin's list filters in words: provider, kind, status, stuck, gone; and the
related-object filters (account, rule, channel) narrowed to the staff member's teams.

Choices come from the provider registry and `jobcenter.queries.dashboard`, never from a
DISTINCT over a large table, so opening a list costs the same on any table size.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Field, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from jobcenter.admin import display
from jobcenter.queries import dashboard
from jobcenter.queries.scoping import scoped
from providers import PROVIDER_CLASSES, get_provider, provider_choices


class ProviderFilter(admin.SimpleListFilter):
    title = "provider"
    parameter_name = "provider"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return provider_choices()

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        # Jobs carry their account's provider, so both models filter on their own column.
        return queryset.filter(provider=self.value()) if self.value() else queryset


class ScopedRelatedFilter(admin.RelatedFieldListFilter):
    """Django's filter by a related object, listing only those the staff member may see
    (another team's account names never reach the sidebar). `TeamScopedAdmin` puts it on
    every related filter of a team-scoped model."""

    def field_choices(
        self, field: Field, request: HttpRequest, model_admin: Any
    ) -> list[tuple[Any, str]]:
        related = scoped(field.related_model._default_manager.all(), request.user)
        ordering = self.field_admin_ordering(field, request, model_admin)
        if ordering:
            related = related.order_by(*ordering)
        return [(obj.pk, str(obj)) for obj in related]


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
