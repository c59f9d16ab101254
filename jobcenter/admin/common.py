"""What every area's admin shares: the site's titles, time columns, the capped paginator
and the base of the lists of what the sync records.

The area modules (`accounts`, `jobs`, `snapshots`, `runs`, `alerts`) each import this, so
the site is titled whichever of them Django's admin autodiscovery imports first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.http import HttpRequest
from django.utils.functional import cached_property

from jobcenter.admin import display

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


class RecordAdmin(admin.ModelAdmin):
    """A list of what the sync records (jobs, snapshots, error records, runs): large tables,
    so never counted in full nor faceted, and no row is added by hand."""

    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedCountPaginator

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
