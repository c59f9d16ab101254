"""Live pages: the job page, the job list, the account list and the dashboard follow the
database without a reload.

Each live page carries a marker (`templates/admin/jobcenter/live.html`: "Live" and a
Pause button) and `jobcenter/static/jobcenter/live.js`. Every `JOBCENTER_LIVE_SECONDS`
the script asks the page's version endpoint for a *version*, a short digest of what the
page shows changing; when it differs from the page's, the script fetches the page's own
URL again and swaps the regions marked `data-live-region` in place.

What it costs: a page view costs no query more than without live updates (the job
page's version comes from the row the page already read; the lists and the dashboard
embed their render time instead, and the first poll asks whether anything changed since
then, so a change committed while the page rendered is not missed). A poll is one query
after the session's, whatever the number of rows: the newest `last_changed_at` of the
staff member's jobs (the top of the `job_last_changed` index), an aggregate over their
accounts, or both at once (the dashboard), or one job's row. Every query goes through `jobcenter.queries.scoping.scoped`, and the
permission checks are the admin's own: a version says nothing of another team's rows.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Max, Subquery
from django.http import Http404, HttpRequest, JsonResponse
from django.urls import URLPattern, path, reverse
from django.views.decorators.cache import never_cache

from jobcenter.models import Job, ProviderAccount
from jobcenter.queries.scoping import has_team, scoped

# A sync stamps `last_changed_at` before its transaction commits: a change stamped up to
# this long before a page rendered may still have been invisible to it.
COMMIT_SLACK = timedelta(seconds=10)
# The job's fields whose changes its page shows: `last_changed_at` moves with every
# change of the job's own fields and timeline; a sync changes the others without it.
JOB_FIELDS = (
    "last_changed_at",
    "last_seen_at",
    "last_checked_at",
    "gone_at",
    "errors_fetched_at",
    "error_count",
    "tracked",
)


def live_seconds() -> int:
    """Seconds between two polls; 0 when live updates are off."""
    return int(getattr(settings, "JOBCENTER_LIVE_SECONDS", 0) or 0)


def digest(values: Iterable[object]) -> str:
    """A short version string of `values` (times as their ISO text, None as "-")."""
    text = "|".join("-" if v is None else str(v) for v in values)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def object_version(obj: Any, fields: Iterable[str]) -> str:
    """The version of a row already read, as `object_versions` computes it: no query."""
    return digest(getattr(obj, name) for name in fields)


@dataclass(frozen=True)
class Fingerprint:
    """A page's version, and the newest change time it saw (None when it saw none)."""

    version: str
    latest: datetime | None = None

    def changed_since(self, moment: datetime) -> bool:
        return self.latest is not None and self.latest >= moment


def newest_job_change(user: Any) -> Any:
    """The newest `last_changed_at` of `user`'s jobs, as a one-row queryset."""
    return (
        scoped(Job.objects.all(), user).order_by("-last_changed_at").values("last_changed_at")[:1]
    )


def team_fingerprint(user: Any, scope: str) -> Fingerprint:
    """What changes `user`'s job list (`scope` "jobs"), account list ("accounts") or
    dashboard ("dashboard": both), in one query. Jobs: a new or changed job moves the
    newest `last_changed_at`. Accounts: their number, the newest sync (every run ends by
    stamping `last_sync_at` with its outcome), edit (`updated_at`) and next sync."""
    if scope == "jobs":
        changed = newest_job_change(user).values_list("last_changed_at", flat=True).first()
        return Fingerprint(digest(["jobs", changed]), changed)
    figures: dict[str, Any] = {
        "accounts": Count("pk"),
        "synced": Max("last_sync_at"),
        "edited": Max("updated_at"),
        "due": Max("next_sync_at"),
    }
    if scope == "dashboard":
        figures["changed"] = Max(Subquery(newest_job_change(user)))
    found = scoped(ProviderAccount.objects.all(), user).aggregate(**figures)
    # Only what has happened counts for the first poll; the next sync is in the future.
    past = [found[key] for key in ("synced", "edited", "changed") if found.get(key)]
    return Fingerprint(digest(found[key] for key in sorted(found)), max(past, default=None))


def marker(url: str, *, version: str | None = None) -> dict[str, Any] | None:
    """The context of a page's live marker, or None when live updates are off. Without a
    version the page's render time goes instead (see the module's docstring)."""
    seconds = live_seconds()
    if not seconds:
        return None
    return {"url": url, "seconds": seconds, "version": version, "since": f"{time.time():.3f}"}


def answer(request: HttpRequest, fingerprint: Fingerprint) -> JsonResponse:
    """The poll's answer: the version, and with `?since=` (the page's render time, Unix
    seconds) whether anything changed after it, less the commit slack."""
    body: dict[str, Any] = {"version": fingerprint.version}
    since = request.GET.get("since")
    if since is not None:
        try:
            moment = datetime.fromtimestamp(float(since), tz=UTC)
        except (ValueError, OverflowError, OSError):
            body["stale"] = True  # an unreadable time: fetch the page once, to be sure
        else:
            body["stale"] = fingerprint.changed_since(moment - COMMIT_SLACK)
    return JsonResponse(body)


def live_view(view: Any) -> Any:
    """A version endpoint: never cached, and not there at all when live updates are off."""

    @never_cache
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        if not live_seconds():
            raise Http404("Live updates are off.")
        return view(request, *args, **kwargs)

    return wrapped


def dashboard_view(request: HttpRequest) -> JsonResponse:
    """The dashboard's version, for staff who see the dashboard (as its template tag
    decides): their teams' jobs and accounts. Served through `live_view`."""
    if not (has_team(request.user) and request.user.has_perm(f"{Job._meta.app_label}.view_job")):
        raise PermissionDenied
    return answer(request, team_fingerprint(request.user, "dashboard"))


class LiveAdminMixin:
    """A ModelAdmin whose list is live: its version endpoint at `live/` (named
    `<app>_<model>_live`), the list's marker, and with `live_fields` its object pages'
    endpoint at `<pk>/live/` (`<app>_<model>_live_object`)."""

    live_list: ClassVar[str]  # the list's scope of team_fingerprint: "jobs" or "accounts"
    live_fields: ClassVar[tuple[str, ...]] = ()
    opts: Any
    admin_site: Any

    def get_urls(self) -> list[URLPattern]:
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        urls = [path("live/", wrap(live_view(self.live_list_view)), name=f"{info}_live")]
        if self.live_fields:
            view = wrap(live_view(self.live_object_view))
            urls.append(path("<int:pk>/live/", view, name=f"{info}_live_object"))
        return [*urls, *super().get_urls()]  # type: ignore[misc]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        extra = {"live": marker(reverse(f"admin:{info}_live")), **(extra_context or {})}
        return super().changelist_view(request, extra_context=extra)  # type: ignore[misc]

    def live_object_marker(self, obj: Any) -> dict[str, Any] | None:
        """The marker of an object's page, its version from the row the page read."""
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        url = reverse(f"admin:{info}_live_object", args=[obj.pk])
        return marker(url, version=object_version(obj, self.live_fields))

    def live_list_view(self, request: HttpRequest) -> JsonResponse:
        if not self.has_view_permission(request):  # type: ignore[attr-defined]
            raise PermissionDenied
        return answer(request, team_fingerprint(request.user, self.live_list))

    def live_object_view(self, request: HttpRequest, pk: int) -> JsonResponse:
        """One row's fields, read through the list's scoped queryset: another team's
        object is not found, as on its page."""
        if not self.has_view_permission(request):  # type: ignore[attr-defined]
            raise PermissionDenied
        queryset = self.get_queryset(request).filter(pk=pk)  # type: ignore[attr-defined]
        row = queryset.values_list(*self.live_fields).first()
        if row is None:
            raise Http404
        return answer(request, Fingerprint(digest(row)))
