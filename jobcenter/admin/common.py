"""What every area's admin shares: the site's titles, time columns, the capped paginator,
the team scoping of every list, page, action, filter and form choice, and the base of the
lists of what the sync records.

The area modules (`accounts`, `jobs`, `snapshots`, `runs`, `alerts`) each import this, so
the site is titled whichever of them Django's admin autodiscovery imports first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import get_fields_from_path
from django.core.paginator import Paginator
from django.db.models import Field, QuerySet
from django.forms import Field as FormField
from django.http import HttpRequest
from django.utils.functional import cached_property

from jobcenter.admin import display
from jobcenter.admin.filters import ScopedRelatedFilter
from jobcenter.queries.scoping import NO_TEAM_MESSAGE, has_team, is_scoped, scoped, sees_everything

admin.site.site_header = "Job Center"
admin.site.site_title = "Job Center"
admin.site.index_title = "Dashboard"
# The job list needs the width; the dashboard and breadcrumbs already lead everywhere.
admin.site.enable_nav_sidebar = False


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


class TeamScopedAdmin(admin.ModelAdmin):
    """A ModelAdmin that shows staff only what their teams may see.

    Lists, object pages, actions (they run on the list's queryset) and the custom views
    that look an object up through `get_queryset` all go through
    `jobcenter.queries.scoping.scoped`; so do the choices of related list filters and of
    form fields. Another team's object is "not found", as a missing one is. Staff in no
    team are told why their lists are empty.
    """

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return scoped(super().get_queryset(request), request.user)

    def get_list_filter(self, request: HttpRequest) -> list:
        """Related-field filters ("account") list only the objects staff may see."""
        return [self._scoped_filter(item) for item in super().get_list_filter(request)]

    def _scoped_filter(self, item: Any) -> Any:
        if not isinstance(item, str):
            return item
        field = get_fields_from_path(self.model, item)[-1]
        if field.is_relation and is_scoped(field.related_model):
            return (item, ScopedRelatedFilter)
        return item

    def formfield_for_foreignkey(
        self, db_field: Field, request: HttpRequest, **kwargs: Any
    ) -> FormField | None:
        self._scope_choices(db_field, request, kwargs)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(
        self, db_field: Field, request: HttpRequest, **kwargs: Any
    ) -> FormField | None:
        self._scope_choices(db_field, request, kwargs)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def _scope_choices(self, db_field: Field, request: HttpRequest, kwargs: dict) -> None:
        """Choices of the staff member's own teams and accounts; a team is required of
        anyone but a superuser (no team means superusers only)."""
        related = db_field.related_model
        if is_scoped(related) and "queryset" not in kwargs:
            kwargs["queryset"] = scoped(related._default_manager.all(), request.user)
        if db_field.name == "team" and not sees_everything(request.user):
            kwargs["required"] = True

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        if request.method == "GET" and not has_team(request.user):
            self.message_user(request, NO_TEAM_MESSAGE, messages.WARNING)
        return super().changelist_view(request, extra_context)


class RecordAdmin(TeamScopedAdmin):
    """A list of what the sync records (jobs, snapshots, error records, runs): large tables,
    so never counted in full nor faceted, and no row is added by hand."""

    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedCountPaginator

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
