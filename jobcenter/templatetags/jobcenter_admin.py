"""Template filters and the dashboard tag for the admin templates (thin: the work is in
`jobcenter.admin.display`, `jobcenter.queries.dashboard` and `jobcenter.admin.charts`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import template
from django.urls import reverse
from django.utils.safestring import SafeString

from jobcenter.admin import charts, display, live
from jobcenter.models import Job
from jobcenter.queries.dashboard import build_dashboard
from jobcenter.queries.scoping import NO_TEAM_MESSAGE, has_team

register = template.Library()

ALWAYS_SHOWN = {"running", "succeeded", "partially_failed", "failed"}


@register.filter
def when(value: datetime | None) -> SafeString | str:
    return display.when(value)


@register.filter
def ago(value: datetime | None) -> SafeString | str:
    return display.ago(value)


@register.filter
def badge(status: str | None) -> SafeString | str:
    return display.status_badge(status) if status else "—"


@register.filter
def status_label(status: str | None) -> str:
    return display.status_label(status or "")


@register.filter
def signed(delta: int | None) -> str:
    return display.signed(delta)


@register.filter
def minutes(value: int) -> str:
    return display.minutes_text(value)


@register.inclusion_tag("admin/jobcenter/dashboard.html", takes_context=True)
def jobcenter_dashboard(context: dict[str, Any]) -> dict[str, Any]:
    """The dashboard at the admin index, for staff who may view jobs: their teams' figures.
    Staff in no team are told why they see nothing."""
    request = context["request"]
    if not has_team(request.user):
        return {"dashboard": None, "no_team": NO_TEAM_MESSAGE}
    if not request.user.has_perm(f"{Job._meta.app_label}.view_job"):
        return {"dashboard": None}
    # Before the figures are read: the render time the first poll compares with.
    marker = live.marker(reverse("admin:jobcenter_dashboard_live"))
    dashboard = build_dashboard(request.user)
    rows = dashboard.status_rows
    # The statuses staff always look for, and any other that some provider has.
    shown = [
        status
        for status, _ in rows[0].counts
        if status in ALWAYS_SHOWN or any(dict(row.counts)[status] for row in rows)
    ]
    return {
        "dashboard": dashboard,
        "daily": charts.daily_chart(dashboard.days),
        "rates": charts.failure_rate_chart(dashboard.failure_rates),
        "statuses": shown,
        "status_rows": [
            (row, charts.status_strip(row), [(s, dict(row.counts)[s]) for s in shown])
            for row in rows
        ],
        "request": request,
        "live": marker,
    }
