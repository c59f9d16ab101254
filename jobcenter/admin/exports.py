"""Exports in the admin: the "Export" links of the job, snapshot, error record and audit
lists (the list's own filters, search and column sort), the "Export selected" actions,
and a job's history from its page.

A mixin for the ModelAdmins in `jobcenter.admin`, over `jobcenter.exports` (the same files
as the API) and the API's export throttle (the same counter per user). Links and actions
show only to staff with the export permission (`jobcenter.export_job`) and the model's
view permission; the views check the same. Rows come in the order the list shows them:
the ChangeList resolves the column sort (`o=`), and `keyed_ordering` turns its ordering
into a keyset key ending with the id.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import PAGE_VAR
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponseBase, HttpResponseRedirect
from django.urls import URLPattern, path, reverse

from jobcenter.exports.specs import EXPORTS, FORMATS, ExportSpec, can_export, default_ordering
from jobcenter.exports.stream import streaming_response
from jobcenter.exports.throttle import export_wait
from jobcenter.queries.keyset import keyed_ordering


class ExportAdminMixin:
    """Export links and actions for a ModelAdmin whose model `export_name` exports."""

    export_name: ClassVar[str]  # a key of EXPORTS
    export_formats: ClassVar[tuple[str, ...]] = FORMATS  # the list's links, the view's formats
    # The list with its export links; a list with a template of its own includes
    # "admin/jobcenter/export_links.html" in its object tools.
    change_list_template = "admin/jobcenter/export_change_list.html"
    opts: Any
    admin_site: Any

    @property
    def export_spec(self) -> ExportSpec:
        return EXPORTS[self.export_name]

    def has_export_permission(self, request: HttpRequest) -> bool:
        """Used by the links, the views and the `export` action permission."""
        return can_export(request.user, self.export_spec)

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_export"
        return [
            path("export.<str:fmt>", self.admin_site.admin_view(self.export_view), name=name),
            *super().get_urls(),  # type: ignore[misc]
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        extra = {"export_links": self.export_links(request), **(extra_context or {})}
        return super().changelist_view(request, extra_context=extra)  # type: ignore[misc]

    def export_links(self, request: HttpRequest) -> list[tuple[str, str]]:
        """("Export (CSV)", its URL with the list's query) per format; none without the
        permission."""
        if not self.has_export_permission(request):
            return []
        query = request.GET.urlencode()
        name = f"admin:{self.opts.app_label}_{self.opts.model_name}_export"
        return [
            (f"Export ({fmt.upper()})", reverse(name, args=[fmt]) + (f"?{query}" if query else ""))
            for fmt in self.export_formats
        ]

    def export_view(self, request: HttpRequest, fmt: str) -> HttpResponseBase:
        """Exactly the rows the list shows for these filters and search, every page, in
        the list's order."""
        if fmt not in self.export_formats:
            raise Http404("No such export format.")
        if not self.has_export_permission(request):
            raise PermissionDenied
        request.GET = request.GET.copy()
        request.GET.pop(PAGE_VAR, None)  # every page, not the one on screen
        try:
            changelist = self.get_changelist_instance(request)  # type: ignore[attr-defined]
        except IncorrectLookupParameters:
            return HttpResponseRedirect(self._changelist_url() + "?e=1")
        return self.export_response(request, self.export_spec, changelist.queryset, fmt)

    @admin.action(
        description="Export selected %(verbose_name_plural)s (CSV)", permissions=["export"]
    )
    def export_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponseBase | None:
        return self.export_response(request, self.export_spec, queryset, "csv")

    def export_response(
        self,
        request: HttpRequest,
        spec: ExportSpec,
        queryset: QuerySet,
        fmt: str,
        *,
        ordering: tuple[str, ...] | None = None,
        label: str = "",
        back: str | None = None,
    ) -> HttpResponseBase:
        """The download, or back to the list with a message when over the export limit.

        Rows come in `ordering`, else in the queryset's own order (a list's or its action's:
        the list's column sort or default order), else in the export's default order (newest
        first); ties by the id, as the list breaks them.
        """
        wait = export_wait(request)
        if wait is not None:
            minutes = max(1, math.ceil(wait / 60))
            self.message_user(  # type: ignore[attr-defined]
                request,
                f"Too many exports: try again in {minutes} minute{'s' if minutes > 1 else ''}.",
                messages.ERROR,
            )
            query = request.GET.urlencode()
            return HttpResponseRedirect(
                back or self._changelist_url() + (f"?{query}" if query else "")
            )
        given = ordering or queryset.query.order_by or default_ordering(spec)
        ordered = queryset.order_by(*keyed_ordering(queryset.model, given))
        return streaming_response(spec, fmt, ordered, label=label)

    def _changelist_url(self) -> str:
        return reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
