"""Exports in the admin: the "Export" links of the job and snapshot lists (the list's own
filters and search), the "Export selected" actions, and a job's history from its page.

A mixin for the ModelAdmins in `jobcenter.admin`, over `jobcenter.exports` (the same files
as the API) and the API's export throttle (the same counter per user). Links and actions
show only to staff with the export permission (`jobcenter.export_job`) and the model's
view permission; the views check the same.
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


class ExportAdminMixin:
    """Export links and actions for a ModelAdmin whose model `export_name` exports."""

    export_name: ClassVar[str]  # a key of EXPORTS
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
        extra = {
            "can_export": self.has_export_permission(request),
            "export_query": request.GET.urlencode(),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=extra)  # type: ignore[misc]

    def export_view(self, request: HttpRequest, fmt: str) -> HttpResponseBase:
        """Exactly the rows the list shows for these filters and search, every page."""
        if fmt not in FORMATS:
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

        Rows come in the export's default order (newest first) unless `ordering` says
        otherwise: the list's own column sort may name columns of other tables.
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
        ordered = queryset.order_by(*(ordering or default_ordering(spec)))
        return streaming_response(spec, fmt, ordered, label=label)

    def _changelist_url(self) -> str:
        return reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
