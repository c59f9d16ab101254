"""Routes of /api/v1/."""

from __future__ import annotations

from django.urls import path, re_path
from rest_framework.routers import SimpleRouter

from jobcenter.api import views

app_name = "api"

router = SimpleRouter()
router.register("jobs", views.JobViewSet, basename="job")
router.register("snapshots", views.SnapshotViewSet, basename="snapshot")
router.register("errors", views.ErrorViewSet, basename="error")
router.register("accounts", views.AccountViewSet, basename="account")
router.register("sync-runs", views.SyncRunViewSet, basename="syncrun")

urlpatterns = [
    *[
        path(f"exports/{name}.{fmt}", views.export_view(name, fmt), name=f"export-{name}-{fmt}")
        for name in ("jobs", "snapshots", "errors")
        for fmt in ("csv", "ndjson")
    ],
    re_path(
        r"^jobs/(?P<job_id>[^/]+)/snapshots/$",
        views.JobSnapshotsView.as_view(),
        name="job-snapshots",
    ),
    re_path(r"^jobs/(?P<job_id>[^/]+)/errors/$", views.JobErrorsView.as_view(), name="job-errors"),
    *router.urls,
    re_path(r"", views.unknown_path),  # last: everything else is a JSON 404
]
