"""API views: thin classes over the FilterSets, the serializers and the services.

Filtering is in `jobcenter.queries.filters` (shared with exports), paging in
`pagination.py`, ETags and 304s of lists and details in `conditional.py`, account
checks in `jobcenter.accounts`, tracking in `jobcenter.sync.tracking`, syncing in
`jobcenter.tasks`. Views pick the queryset, the permission and the status code. Every
queryset is narrowed to the caller's teams by `jobcenter.queries.scoping.scoped`
(`TeamScoped`): another team's object is a 404, its rows are absent from lists and
exports.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Count, F, Max, OuterRef, QuerySet, Subquery
from django.http import Http404, HttpRequest, JsonResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import generics, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import IsAdminUser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle

from jobcenter.accounts import check_connection
from jobcenter.api import serializers
from jobcenter.api.conditional import ConditionalGet
from jobcenter.api.permissions import CanExport, ModelPermissions
from jobcenter.exports.specs import EXPORTS, ExportSpec
from jobcenter.exports.stream import CONTENT_TYPES, streaming_response
from jobcenter.exports.throttle import EXPORT_SCOPE
from jobcenter.models import Job, JobError, JobSnapshot, ProviderAccount, SyncRun, SyncTrigger
from jobcenter.queries import filters
from jobcenter.queries.scoping import scoped
from jobcenter.sync.tracking import track_job
from jobcenter.tasks import enqueue_sync

# Any id text reaches the view (a JSON 404 for "abc", not Django's HTML page).
LOOKUP_REGEX = r"[^/]+"
TRACK_SCOPE = "jobcenter-track"
SYNC_SCOPE = "jobcenter-sync"
# Large JSON a fingerprint need not read (jobcenter.api.conditional): a snapshot's
# payload is written once, with its digest; an error record is never edited (replaced
# records are new rows, with a new `fetched_at`).
SNAPSHOT_COVERED: dict[str, tuple[str, ...]] = {"payload": ("digest",)}
ERROR_COVERED: dict[str, tuple[str, ...]] = {"raw": ("id", "fetched_at")}


class TeamScoped:
    """Rows of the caller's teams only (all of them for a superuser): lists, details
    (another team's id is a 404, as a missing one is), actions and exports. Views say
    which rows in `rows()`; this is their `get_queryset`."""

    request: Request

    def get_queryset(self) -> QuerySet:
        return scoped(self.rows(), self.request.user)

    def rows(self) -> QuerySet:
        return super().get_queryset()  # type: ignore[misc]


class ListFilteredOnly:
    """Apply the FilterSet to lists only: `?status=` on a detail URL is not a 404."""

    action: str | None

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        if getattr(self, "action", "list") not in ("list", None):
            return queryset
        return super().filter_queryset(queryset)  # type: ignore[misc]


def jobs_with_account_name() -> QuerySet[Job]:
    """Jobs with their account's name, read per row by primary key, not by a join.

    With a join, SQLite plans a page query with bound parameters from the account
    side (every job of every account, then a sort: half a second at a million jobs);
    without one, it walks the ordering's index and stops after the page.
    """
    name = ProviderAccount.objects.filter(pk=OuterRef("account_id")).values("name")[:1]
    return Job.objects.annotate(account_name=Subquery(name))


def with_embedded_marks(jobs: QuerySet[Job]) -> QuerySet[Job]:
    """Jobs with the count, the greatest id and the latest time of their snapshots and of
    their error records, in the job's own row: the detail embeds some of each, and its
    ETag must move when they do (rows are only added and deleted, never edited; a
    replaced error record is a new row with a new `fetched_at`)."""

    def mark(model: type[JobSnapshot] | type[JobError], aggregate: Any) -> Subquery:
        rows = model.objects.filter(job_id=OuterRef("pk")).order_by().values("job_id")
        return Subquery(rows.annotate(mark=aggregate).values("mark"))

    return jobs.annotate(
        snapshots_count=mark(JobSnapshot, Count("pk")),
        snapshots_last_id=mark(JobSnapshot, Max("pk")),
        snapshots_last_observed=mark(JobSnapshot, Max("observed_at")),
        errors_count=mark(JobError, Count("pk")),
        errors_last_id=mark(JobError, Max("pk")),
        errors_last_fetched=mark(JobError, Max("fetched_at")),
    )


@extend_schema_view(
    list=extend_schema(summary="List jobs", description="Filter, search and order jobs."),
    retrieve=extend_schema(
        summary="One job",
        description="With its raw payload, its latest snapshots and its first error records.",
    ),
)
class JobViewSet(ConditionalGet, TeamScoped, ListFilteredOnly, viewsets.ReadOnlyModelViewSet):
    """Jobs of every provider, as last synced."""

    lookup_value_regex = LOOKUP_REGEX
    etag_covered: ClassVar[dict[str, tuple[str, ...]]] = {
        "snapshots": ("snapshots_count", "snapshots_last_id", "snapshots_last_observed"),
        "errors": ("errors_count", "errors_last_id", "errors_last_fetched"),
    }

    filterset_class = filters.JobFilter
    throttle_scope: str | None = None  # set per action (track)
    action_permissions: ClassVar[dict[str, list[str]]] = {"track": ["jobcenter.change_job"]}

    def rows(self) -> QuerySet[Job]:
        queryset = jobs_with_account_name()
        if self.action == "retrieve":
            return with_embedded_marks(queryset)
        return queryset.defer("payload") if self.action == "list" else queryset

    def get_serializer_class(self) -> type:
        if self.action == "retrieve":
            return serializers.JobDetailSerializer
        return serializers.JobSerializer

    @extend_schema(
        summary="Track a job by id",
        description="Register a job id the provider returned, to be polled until it ends. "
        "The same checks as the admin form; 201 when new, 200 when already known.",
        request=serializers.TrackJobSerializer,
        responses={201: serializers.JobSerializer, 200: serializers.JobSerializer},
    )
    @action(
        detail=False,
        methods=["post"],
        serializer_class=serializers.TrackJobSerializer,
        throttle_classes=[ScopedRateThrottle],
        throttle_scope=TRACK_SCOPE,
    )
    def track(self, request: Request) -> Response:
        entered = serializers.TrackJobSerializer(
            data=request.data, context=self.get_serializer_context()
        )
        entered.is_valid(raise_exception=True)
        try:
            data = entered.validated_data
            job, created = track_job(data["account"], data["kind"], data["external_id"])
        except DjangoValidationError as exc:
            raise serializers.drf_error(exc) from None
        shown = jobs_with_account_name().get(pk=job.pk)
        return Response(
            serializers.JobSerializer(shown).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class JobRowsView(ConditionalGet, generics.ListAPIView):
    """Rows that belong to one job: 404 when the job does not exist or is another team's.

    The rows are read through the job's id and scope without looking the job up first;
    only a page with no rows asks whether the job is there (`empty_page`). So a page,
    and its fingerprint for a 304, is one query.
    """

    permission_model: ClassVar[type[JobSnapshot] | type[JobError]]

    def job(self) -> QuerySet[Job]:
        """The job of the URL among the caller's (no query); 404 for an id that is no id."""
        try:
            job_id = Job._meta.pk.to_python(self.kwargs["job_id"])
        except DjangoValidationError:
            raise Http404 from None
        return scoped(Job.objects.filter(pk=job_id), self.request.user)

    def get_queryset(self) -> QuerySet:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no job id
            return self.permission_model.objects.none()
        return self.permission_model.objects.filter(job__in=self.job().values("pk"))

    def empty_page(self) -> None:
        if not getattr(self, "job_found", False):
            if not self.job().exists():
                raise Http404
            self.job_found = True


JOB_ID = OpenApiParameter("job_id", int, OpenApiParameter.PATH, description="The job's id.")


@extend_schema(
    summary="A job's snapshots", description="The job's complete history.", parameters=[JOB_ID]
)
class JobSnapshotsView(JobRowsView):
    """Every snapshot of one job; 404 when the job does not exist."""

    permission_model = JobSnapshot
    serializer_class = serializers.JobSnapshotSerializer
    etag_covered = SNAPSHOT_COVERED
    filterset_class = filters.SnapshotFilter


@extend_schema(summary="A job's error records", parameters=[JOB_ID])
class JobErrorsView(JobRowsView):
    """Every error record of one job; 404 when the job does not exist."""

    permission_model = JobError
    serializer_class = serializers.JobErrorSerializer
    etag_covered = ERROR_COVERED
    filterset_class = filters.ErrorFilter


@extend_schema_view(
    list=extend_schema(summary="List snapshots", description="All jobs' history."),
    retrieve=extend_schema(summary="One snapshot"),
)
class SnapshotViewSet(ConditionalGet, TeamScoped, ListFilteredOnly, viewsets.ReadOnlyModelViewSet):
    """Every observed change of every job."""

    lookup_value_regex = LOOKUP_REGEX
    etag_covered = SNAPSHOT_COVERED

    queryset = JobSnapshot.objects.all()
    serializer_class = serializers.JobSnapshotSerializer
    filterset_class = filters.SnapshotFilter


@extend_schema_view(
    list=extend_schema(summary="List error records"),
    retrieve=extend_schema(summary="One error record"),
)
class ErrorViewSet(ConditionalGet, TeamScoped, ListFilteredOnly, viewsets.ReadOnlyModelViewSet):
    """Per-record errors the providers reported for failed jobs."""

    lookup_value_regex = LOOKUP_REGEX
    etag_covered = ERROR_COVERED

    queryset = JobError.objects.all()
    serializer_class = serializers.JobErrorSerializer
    filterset_class = filters.ErrorFilter


@extend_schema_view(
    list=extend_schema(summary="List sync runs"),
    retrieve=extend_schema(summary="One sync run"),
)
class SyncRunViewSet(ConditionalGet, TeamScoped, ListFilteredOnly, viewsets.ReadOnlyModelViewSet):
    """One row per sync of one account: what it did and how it ended."""

    lookup_value_regex = LOOKUP_REGEX
    etag_covered: ClassVar[dict[str, tuple[str, ...]]] = {
        "duration_seconds": ("started_at", "finished_at")
    }

    queryset = SyncRun.objects.annotate(account_name=F("account__name"))
    serializer_class = serializers.SyncRunSerializer
    filterset_class = filters.SyncRunFilter


@extend_schema_view(
    list=extend_schema(summary="List accounts"),
    retrieve=extend_schema(summary="One account"),
    create=extend_schema(summary="Add an account"),
    partial_update=extend_schema(
        summary="Change an account",
        description="Credentials are optional: a blank or missing field keeps the stored value.",
    ),
)
class AccountViewSet(
    ConditionalGet,
    TeamScoped,
    ListFilteredOnly,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Provider accounts. Credentials are write-only; responses show a hint only."""

    lookup_value_regex = LOOKUP_REGEX
    etag_covered: ClassVar[dict[str, tuple[str, ...]]] = {"provider_label": ("provider",)}

    queryset = ProviderAccount.objects.all()
    serializer_class = serializers.AccountSerializer
    filterset_class = filters.AccountListFilter
    throttle_scope: str | None = None  # set per action (sync, test)
    http_method_names: ClassVar[list[str]] = ["get", "post", "patch", "head", "options"]
    action_permissions: ClassVar[dict[str, list[str]]] = {
        "sync": ["jobcenter.change_provideraccount"],
        "connection_test": ["jobcenter.change_provideraccount"],
    }

    @extend_schema(
        summary="Sync now",
        description="Queue a sync of this account. 202 with the task id; the run shows "
        "under sync-runs/ (trigger `api`).",
        request=None,
        responses={202: serializers.SyncAcceptedSerializer},
    )
    @action(
        detail=True,
        methods=["post"],
        throttle_classes=[ScopedRateThrottle],
        throttle_scope=SYNC_SCOPE,
    )
    def sync(self, request: Request, pk: Any = None) -> Response:
        account = self.get_object()
        asked_at = timezone.now()
        task_id = enqueue_sync(account.pk, SyncTrigger.API)
        run = (
            SyncRun.objects.filter(
                account=account, trigger=SyncTrigger.API, started_at__gte=asked_at
            )
            .order_by("-started_at", "-id")
            .values_list("pk", flat=True)
            .first()
        )
        body = {"task_id": str(task_id), "sync_run": run}
        return Response(
            serializers.SyncAcceptedSerializer(body).data, status=status.HTTP_202_ACCEPTED
        )

    @extend_schema(
        summary="Test the credentials",
        description="Ask the provider whether the stored credentials work.",
        request=None,
        responses={200: serializers.ConnectionTestSerializer},
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="test",
        url_name="test",
        throttle_classes=[ScopedRateThrottle],
        throttle_scope=SYNC_SCOPE,
    )
    def connection_test(self, request: Request, pk: Any = None) -> Response:
        ok, message = check_connection(self.get_object())
        return Response(serializers.ConnectionTestSerializer({"ok": ok, "message": message}).data)


# --- exports -----------------------------------------------------------------------------


class JsonOnlyNegotiation(BaseContentNegotiation):
    """Errors in JSON whatever the Accept header (`Accept: text/csv` is no 406)."""

    def select_parser(self, request: Request, parsers: list) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Request, renderers: list, format_suffix: Any = None) -> Any:
        return renderers[0], renderers[0].media_type


def export_schema(spec: ExportSpec, fmt: str) -> Any:
    what = {"jobs": "Jobs", "snapshots": "Snapshots (jobs' history)", "errors": "Error records"}
    row = "a CSV row" if fmt == "csv" else "a JSON line with the raw provider JSON"
    return extend_schema(
        operation_id=f"exports_{spec.name}_{fmt}",
        summary=f"Export {spec.name} ({fmt.upper()})",
        description=f"{what[spec.name]} with the filters of the list endpoint, streamed as "
        f"a download, {row} per row. Needs the permission `jobcenter.export_job` beside "
        "the view permission; counts against the export throttle. Columns: docs/exports.md.",
        filters=True,
        responses={
            (200, CONTENT_TYPES[fmt].split(";")[0]): OpenApiResponse(
                OpenApiTypes.STR, description="The file, streamed."
            ),
        },
    )


class ExportView(TeamScoped, generics.GenericAPIView):
    """One export (what and format set per URL); thin over jobcenter.exports."""

    spec: ClassVar[ExportSpec]
    fmt = "csv"  # set by as_view(fmt=...)
    permission_classes: ClassVar[list] = [IsAdminUser, ModelPermissions, CanExport]
    throttle_classes: ClassVar[list] = [ScopedRateThrottle]
    throttle_scope = EXPORT_SCOPE
    renderer_classes: ClassVar[list] = [JSONRenderer]
    content_negotiation_class = JsonOnlyNegotiation
    pagination_class = None

    def rows(self) -> QuerySet:
        return self.spec.model._default_manager.all()

    def get(self, request: Request) -> Any:
        # DjangoFilterBackend: a bad filter value is a 400 with field errors.
        queryset = self.filter_queryset(self.get_queryset())
        return streaming_response(self.spec, self.fmt, queryset)


def export_view(name: str, fmt: str) -> Any:
    """The view of one export URL: a class per (what, format), each with its own schema."""
    spec = EXPORTS[name]

    def get(self: ExportView, request: Request) -> Any:
        return ExportView.get(self, request)

    view = type(
        f"{name.title()}{fmt.title()}ExportView",
        (ExportView,),
        {
            "spec": spec,
            "fmt": fmt,
            "filterset_class": spec.filterset,
            "get": export_schema(spec, fmt)(get),
            "__doc__": f"Export of {name} as {fmt}.",
        },
    )
    return view.as_view()


def unknown_path(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Any other path under /api/v1/: a JSON 404 (not Django's HTML page)."""
    return JsonResponse({"detail": "Not found."}, status=404)
