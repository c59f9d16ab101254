"""Klaviyo: the 13 GA bulk-job types that have list endpoints.

The API as specified: tests/specs/klaviyo-jobs.openapi.json (revision 2026-07-15).

Every job type has its own list (`/api/<type>s`) and get (`/api/<type>s/<id>`); lists
page with opaque cursors carried in `links.next` (an absolute URL), at most 100 jobs a
page. Klaviyo has no failed status: a `complete` job with failures is partly or wholly
failed by its counts. Catalog and coupon jobs carry their errors inline
(`attributes.errors`); profile imports list them at `/import-errors`; suppression jobs
have neither (nor a `failed_count`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urlsplit

from providers.base import (
    CredentialField,
    CursorGuard,
    JobErrorRecord,
    JobKind,
    JobPage,
    JobRecord,
    ListingFreshness,
    PersonalData,
    Provider,
    Status,
    status_from_counts,
)
from providers.errors import BadResponse, InvalidCursor, NotFound, RequestRejected
from providers.http import RateLimit
from providers.redaction import as_text

if TYPE_CHECKING:
    import requests

DEFAULT_REVISION = "2026-07-15"
PAGE_SIZE = 100

# The attributes each family maps, by the names the spec allows in `fields[<type>]`.
CATALOG_FIELDS = (
    "status",
    "created_at",
    "total_count",
    "completed_count",
    "failed_count",
    "completed_at",
    "expires_at",
    "errors",
)
IMPORT_FIELDS = (
    "status",
    "created_at",
    "total_count",
    "completed_count",
    "failed_count",
    "completed_at",
    "expires_at",
    "started_at",
)
SUPPRESSION_FIELDS = (
    "status",
    "created_at",
    "total_count",
    "completed_count",
    "completed_at",
    "skipped_count",
)

L_TIER = RateLimit(((75, 1), (750, 60)))
XL_TIER = RateLimit(((350, 1), (3500, 60)))
M_TIER = RateLimit(((10, 1), (150, 60)))
IMPORT_ERRORS_TIER = "profile-bulk-import-job:import-errors"
# An import error carries the profile that failed, as it was sent (`original_payload`).
IMPORT_ERROR_PERSONAL_DATA = PersonalData(raw_paths=(("attributes", "original_payload"),))

STATUS_MAP = {
    "queued": Status.QUEUED,
    "processing": Status.RUNNING,
    "cancelled": Status.CANCELLED,
}


def _kinds() -> tuple[tuple[JobKind, str, RateLimit], ...]:
    """(kind, family, read rate limit) for every listable GA job type."""
    rows: list[tuple[JobKind, str, RateLimit]] = []
    for obj in ("item", "variant", "category"):
        for op in ("create", "update", "delete"):
            # From revision 2026-04-15 item/variant create and update reads are rated
            # 75/s + 750/m; delete jobs and all category jobs stay at 350/s + 3500/m.
            tier = L_TIER if obj != "category" and op != "delete" else XL_TIER
            name = f"catalog-{obj}-bulk-{op}-job"
            rows.append(
                (JobKind(name, f"Catalog {obj} bulk {op}", rate_tier=name), "catalog", tier)
            )
    rows += [
        (
            JobKind(
                "coupon-code-bulk-create-job",
                "Coupon code bulk create",
                rate_tier="coupon-code-bulk-create-job",
            ),
            "coupon",
            L_TIER,
        ),
        (
            JobKind(
                "profile-bulk-import-job",
                "Profile bulk import",
                rate_tier="profile-bulk-import-job",
            ),
            "import",
            M_TIER,
        ),
    ]
    for op in ("create", "delete"):
        name = f"profile-suppression-bulk-{op}-job"
        rows.append(
            (JobKind(name, f"Profile suppression bulk {op}", rate_tier=name), "suppression", L_TIER)
        )
    return tuple(rows)


KIND_TABLE = _kinds()
FAMILY: dict[str, str] = {kind.name: family for kind, family, _ in KIND_TABLE}
FIELDS = {"catalog": CATALOG_FIELDS, "coupon": CATALOG_FIELDS, "import": IMPORT_FIELDS}
SORTS = {"import": "-created_at", "suppression": "-created"}
# The status filters that list unfinished jobs, by "is this the profile import list":
# only that list takes `any`; the others take one `equals` per status.
UNFINISHED_FILTERS = {
    True: ('any(status,["queued","processing"])',),
    False: ('equals(status,"queued")', 'equals(status,"processing")'),
}


def parse_count(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadResponse(f"Klaviyo sent {what} that is not a number", excerpt=repr(value))
    return value


def map_status(provider_status: str, total: int | None, failed: int | None) -> Status:
    """Klaviyo's status (any case) in normalized form; `complete` judged by its counts."""
    lowered = provider_status.lower()
    if lowered == "complete":
        return status_from_counts(total, failed)
    return STATUS_MAP.get(lowered, Status.UNKNOWN)


def error_record(payload: Any) -> JobErrorRecord:
    """An `APIJobErrorPayload` or an `import-error`'s attributes as a JobErrorRecord."""
    if not isinstance(payload, dict):
        raise BadResponse(
            "Klaviyo sent an error entry that is not an object", excerpt=as_text(payload)
        )
    source = payload.get("source") if isinstance(payload.get("source"), dict) else {}
    code, title, detail = (str(payload.get(k) or "") for k in ("code", "title", "detail"))
    return JobErrorRecord(
        message=detail or title or code,
        code=code,
        title=title,
        source=str(source.get("pointer") or source.get("parameter") or ""),
        external_id=str(payload.get("id") or ""),
        raw=payload,
    )


def job_record(kind: str, resource: Any) -> JobRecord:
    """One JSON:API job resource (as received) as a JobRecord."""
    family = FAMILY[kind]
    if not isinstance(resource, dict):
        raise BadResponse(
            f"Klaviyo listed a {kind} that is not an object", excerpt=as_text(resource)
        )
    attributes = resource.get("attributes")
    job_id = resource.get("id")
    if (
        not isinstance(job_id, str)
        or not job_id
        or not isinstance(attributes, dict)
        or not isinstance(attributes.get("status"), str)
    ):
        raise BadResponse(
            f"Klaviyo sent a {kind} without an id, attributes or status", excerpt=as_text(resource)
        )
    if resource.get("type") not in (None, kind):
        raise BadResponse(
            f"Klaviyo sent a {resource.get('type')!r} where a {kind} was asked for",
            excerpt=as_text(resource),
        )
    provider_status = attributes["status"]
    total = parse_count(attributes.get("total_count"), "a total_count")
    completed = parse_count(attributes.get("completed_count"), "a completed_count") or 0
    failed: int | None = None
    if family != "suppression":  # suppression jobs have no failed_count
        failed = parse_count(attributes.get("failed_count"), "a failed_count") or 0
    errors: list[JobErrorRecord] | None = None
    if family in ("catalog", "coupon") and "errors" in attributes:
        inline = attributes["errors"]
        if inline is not None and not isinstance(inline, list):
            raise BadResponse(
                f"Klaviyo sent {kind} errors that are not a list", excerpt=as_text(inline)
            )
        errors = [error_record(entry) for entry in inline or []]
    return JobRecord(
        kind=kind,
        external_id=job_id,
        status=map_status(provider_status, total, failed),
        provider_status=provider_status,
        raw=resource,
        total_count=total,
        completed_count=completed,
        failed_count=failed,
        created_at=KlaviyoProvider.read_time(attributes.get("created_at"), "created_at"),
        started_at=KlaviyoProvider.read_time(attributes.get("started_at"), "started_at"),
        completed_at=KlaviyoProvider.read_time(attributes.get("completed_at"), "completed_at"),
        expires_at=KlaviyoProvider.read_time(attributes.get("expires_at"), "expires_at"),
        errors=errors,
    )


class KlaviyoProvider(Provider):
    """Klaviyo's bulk jobs, read with a private API key."""

    slug: ClassVar[str] = "klaviyo"
    label: ClassVar[str] = "Klaviyo"
    credential_fields: ClassVar[tuple[CredentialField, ...]] = (
        CredentialField("api_key", "Private API key"),
    )
    base_urls: ClassVar[Mapping[str, str]] = {"production": "https://a.klaviyo.com"}
    documented_hosts: ClassVar[frozenset[str]] = frozenset({"a.klaviyo.com"})
    kinds: ClassVar[tuple[JobKind, ...]] = tuple(kind for kind, _, _ in KIND_TABLE)
    # Budget per endpoint family: list and get of a job type share one tier, so the
    # sweep and the refresh by id never exceed the endpoint's burst or steady window.
    rate_limits: ClassVar[Mapping[str, RateLimit]] = {
        **{kind.rate_tier: limit for kind, _, limit in KIND_TABLE},
        IMPORT_ERRORS_TIER: M_TIER,
    }
    # The spec gives every time as "ISO 8601 format (YYYY-MM-DDTHH:MM:SS.mmmmmm)", no
    # offset in the format, and every example is UTC (+00:00).
    naive_times_are_utc: ClassVar[bool] = True
    # A deployment pins the API revision it was tested with (sent as `revision`).
    environment_options: ClassVar[Mapping[str, str]] = {"revision": "JOBCENTER_KLAVIYO_REVISION"}

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Klaviyo-API-Key {self.credentials.get('api_key', '')}"}

    def default_headers(self) -> dict[str, str]:
        return {
            "Accept": "application/vnd.api+json",
            "revision": str(self.options.get("revision") or DEFAULT_REVISION),
        }

    def describe_error(self, response: requests.Response) -> str:
        """`code: detail` of the first JSON:API error, else the whole body (the client cuts)."""
        try:
            first = response.json()["errors"][0]
            code, detail = first.get("code") or "", first.get("detail") or first.get("title")
            if detail:
                return f"{code}: {detail}" if code else str(detail)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            pass
        return response.text

    # -- the calls ----------------------------------------------------------------------
    def check_credentials(self) -> None:
        """One GET of a single profile-import job, attributes cut to the required three."""
        self.client.request_json(
            "GET",
            "/api/profile-bulk-import-jobs",
            tier="profile-bulk-import-job",
            params={
                "fields[profile-bulk-import-job]": "status,created_at,total_count",
                "page[size]": "1",
            },
        )

    def list_params(self, kind: str) -> dict[str, str]:
        family = FAMILY[kind]
        params = {f"fields[{kind}]": ",".join(FIELDS.get(family, SUPPRESSION_FIELDS))}
        if family == "import":
            params["page[size]"] = str(PAGE_SIZE)
        if family in SORTS:
            params["sort"] = SORTS[family]
        return params

    def iter_pages(self, listing: str, cursor: str | None = None) -> Iterator[JobPage]:
        """Every job of `listing` (a kind), newest first where Klaviyo can sort.

        The cursor handed back is the `links.next` URL itself: a later run resumes by
        GETting it. Klaviyo refuses stale cursors with a 400, raised as InvalidCursor.
        """
        self.kind(listing)  # KeyError for a kind this provider does not know
        yield from self._iter_listing(listing, self.list_params(listing), cursor)

    @classmethod
    def listing_freshness(cls, listing: str) -> ListingFreshness:
        """Every job list filters by status (`any` on profile imports, `equals` on the
        others: one request per unfinished status); imports and suppressions sort."""
        return ListingFreshness(
            status_filter_calls=len(UNFINISHED_FILTERS[FAMILY[listing] == "import"]),
            newest_first=FAMILY[listing] in SORTS,
        )

    def iter_unfinished(self, listing: str) -> Iterator[JobPage]:
        """The queued and processing jobs of `listing`, by Klaviyo's status filter."""
        self.kind(listing)
        for status_filter in UNFINISHED_FILTERS[FAMILY[listing] == "import"]:
            params = {**self.list_params(listing), "filter": status_filter}
            yield from self._iter_listing(listing, params, None)

    def _iter_listing(
        self, listing: str, params: dict[str, str] | None, cursor: str | None
    ) -> Iterator[JobPage]:
        path = f"/api/{listing}s"
        guard = CursorGuard(f"Klaviyo {listing} list")
        url: str = path
        if cursor:
            self._check_cursor(cursor, path)
            guard.advance(cursor)
            url, params = cursor, None
        while True:
            body = self._get_page(url, params, tier=listing, from_cursor=params is None)
            records = [job_record(listing, item) for item in body["data"]]
            next_url = self._next_link(body)
            guard.advance(next_url)
            yield JobPage(records, next_cursor=next_url)
            if next_url is None:
                return
            url, params = next_url, None

    def fetch_job(self, kind: str, external_id: str) -> JobRecord:
        family = FAMILY.get(kind)
        if family is None:
            raise KeyError(kind)
        body = self.client.request_json(
            "GET",
            f"/api/{kind}s/{_segment(external_id)}",
            tier=kind,
            params={f"fields[{kind}]": ",".join(FIELDS.get(family, SUPPRESSION_FIELDS))},
        )
        if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
            raise BadResponse(
                f"Klaviyo answered a {kind} get without a data object",
                excerpt=self.client.excerpt(body),
            )
        record = job_record(kind, body["data"])
        if record.external_id != external_id:
            raise BadResponse(
                f"Klaviyo answered {kind} {external_id} with job {record.external_id}",
                excerpt=self.client.excerpt(body["data"]),
            )
        return record

    def iter_errors(self, kind: str, external_id: str) -> Iterator[JobErrorRecord]:
        family = FAMILY.get(kind)
        if family is None:
            raise KeyError(kind)
        if family in ("catalog", "coupon"):
            yield from self.fetch_job(kind, external_id).errors or []
        elif family == "import":
            yield from self._import_errors(external_id)
        # Suppression jobs report no per-record errors (only skipped_count).

    # -- internals ----------------------------------------------------------------------
    def _import_errors(self, external_id: str) -> Iterator[JobErrorRecord]:
        path = f"/api/profile-bulk-import-jobs/{_segment(external_id)}/import-errors"
        guard = CursorGuard(f"Klaviyo import errors of {external_id}")
        url: str = path
        params: dict[str, str] | None = {"page[size]": str(PAGE_SIZE)}
        while True:
            body = self._get_page(url, params, tier=IMPORT_ERRORS_TIER, from_cursor=False)
            for item in body["data"]:
                attributes = item.get("attributes") if isinstance(item, dict) else None
                if not isinstance(attributes, dict):
                    raise BadResponse(
                        "Klaviyo sent an import error without attributes",
                        excerpt=self.client.excerpt(item),
                    )
                record = error_record({"id": item.get("id"), **attributes})
                record.raw = item  # the resource as received, original_payload included
                record.personal_data = IMPORT_ERROR_PERSONAL_DATA
                yield record
            next_url = self._next_link(body)
            guard.advance(next_url)
            if next_url is None:
                return
            url, params = next_url, None

    def _get_page(
        self, url: str, params: dict[str, str] | None, *, tier: str, from_cursor: bool
    ) -> dict[str, Any]:
        try:
            body = self.client.request_json("GET", url, tier=tier, params=params)
        except RequestRejected as exc:
            if from_cursor and exc.status_code == 400:
                raise InvalidCursor(
                    f"Klaviyo refused a page cursor; the listing must start again ({exc})",
                    status_code=400,
                ) from exc
            raise
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise BadResponse(
                "Klaviyo answered a list without a data list", excerpt=self.client.excerpt(body)
            )
        return body

    def _next_link(self, body: dict[str, Any]) -> str | None:
        """`links.next`, refused (before anything is sent) when it leaves the base origin."""
        links = body.get("links")
        if links is None:
            return None
        if not isinstance(links, dict):
            raise BadResponse(
                "Klaviyo sent list links that are not an object", excerpt=self.client.excerpt(links)
            )
        next_url = links.get("next")
        if next_url in (None, ""):
            return None
        if not isinstance(next_url, str):
            raise BadResponse(
                "Klaviyo sent a links.next that is not a URL", excerpt=self.client.excerpt(next_url)
            )
        self.client.url_for(next_url)  # BadResponse for another host: never saved, never sent
        return next_url

    def _check_cursor(self, cursor: str, path: str) -> None:
        """A saved cursor must be a next link of this very list on this very origin."""
        parts = urlsplit(cursor)
        base_path = urlsplit(self.base_url).path.rstrip("/")
        if not parts.scheme or parts.path.rstrip("/") != base_path + path:
            raise InvalidCursor(f"the saved Klaviyo cursor does not belong to {path}")
        try:
            self.client.url_for(cursor)
        except BadResponse as exc:
            raise InvalidCursor(f"the saved Klaviyo cursor is not usable: {exc}") from None


def _segment(external_id: str) -> str:
    """A job id as one path segment; Klaviyo's ids are ULIDs, anything else is escaped."""
    if external_id in ("", ".", ".."):
        raise NotFound(f"Klaviyo has no job with the id {external_id!r}")
    return quote(external_id, safe="")
