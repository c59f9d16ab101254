"""Elastic Path Composable Commerce: PXM (PIM) jobs.

The API as specified: tests/specs/elasticpath-pcm-jobs.openapi.json.

Elastic Path lists every job type in one endpoint, `GET /pcm/jobs`, so this provider has
one listing (`pcm-jobs`) whose records carry their own kind: the job's `attributes.type`
(`product-import`, `product-export`, ...), including types Elastic Path adds later,
which are kept under their own name rather than dropped.

Authentication is a client-credentials token from `POST /oauth/access_token` (form body,
token fields at the top level of the answer), through the same client-credentials code
as a declared provider (`providers.declarative.auth.ClientCredentials`): the token is
kept in a cache of the process for its lifetime, shared by every sync and hot pass of
the store, and renewed shortly before it expires; a 401 renews it once and retries once,
and a second 401 is an authentication failure. The client secret travels only in that
form body.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import requests

from providers.base import (
    CredentialField,
    CursorGuard,
    JobErrorRecord,
    JobKind,
    JobPage,
    JobRecord,
    Provider,
    Status,
)
from providers.declarative.auth import ClientCredentials
from providers.errors import AccessDenied, AuthError, BadResponse, InvalidCursor, RequestRejected
from providers.http import RateLimit

LISTING = "pcm-jobs"
OAUTH_PATH = "/oauth/access_token"
JOBS_PATH = "/pcm/jobs"
MAX_PAGE_LIMIT = 100
# Elastic Path's soft limit on page[offset]: deeper pages are refused.
MAX_OFFSET = 10_000
# The client-credentials exchange, as the declarative engine's OAuth scheme reads it:
# renewed a minute before the token's end (never more than a tenth of its lifetime),
# `expires_in`, else `expires` (epoch), else the documented hour.
TOKEN_AUTH: dict[str, Any] = {
    "kind": "oauth2_client_credentials",
    "token_path": OAUTH_PATH,
    "client_id": "{client_id}",
    "client_secret": "{client_secret}",
    "token": "access_token",
    "expires_in": "expires_in",
    "expires_at": "expires",
    "default_lifetime": 3600,
    "renew_margin": 60,
}
KIND_MAX_LENGTH = 100  # Job.kind's column width

STATUS_MAP: dict[str, Status] = {
    "pending": Status.QUEUED,
    "started": Status.RUNNING,
    "success": Status.SUCCEEDED,
    "failed": Status.FAILED,
    "cancelled": Status.CANCELLED,
}


class ElasticPathProvider(Provider):
    """PXM jobs of one Elastic Path store, read with a client-credentials key."""

    slug = "elasticpath"
    label = "Elastic Path"
    credential_fields = (
        # A client id alone can mint implicit (read-only) tokens, so it is kept hidden too.
        CredentialField("client_id", "Client ID", secret=True),
        CredentialField("client_secret", "Client secret", secret=True),
    )
    base_urls = {
        "euwest": "https://euwest.api.elasticpath.com",
        "useast": "https://useast.api.elasticpath.com",
    }
    documented_hosts = frozenset({"euwest.api.elasticpath.com", "useast.api.elasticpath.com"})
    kinds = (
        JobKind("product-import", "Product import"),
        JobKind("product-export", "Product export"),
        JobKind("hierarchy-duplicate", "Hierarchy duplicate"),
        JobKind("child-products", "Build child products"),
        JobKind("price-import", "Price book import"),
    )
    listings = (LISTING,)
    # A development store's limit (the 2024 rate-limits guide), the lowest there is;
    # production stores allow 100/s, set per account with a rate-limit override.
    rate_limits = {"default": RateLimit(((25, 1.0),))}
    # The spec's times are UTC (`2024-01-05T13:46:42.07Z`), one example without the `Z`
    # (`2020-09-22T09:00:00`): a time without an offset is read as UTC too.
    naive_times_are_utc = True

    def __init__(self, credentials: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(credentials, **kwargs)
        # One token per store and key, shared by this process's syncs and hot passes.
        self.oauth = ClientCredentials(TOKEN_AUTH, self.credentials, self.client, self.label)
        # Smaller pages only for tests and odd stores; 100 is Elastic Path's maximum.
        limit = int(self.options.get("page_limit") or MAX_PAGE_LIMIT)
        self.page_limit = min(MAX_PAGE_LIMIT, max(1, limit))

    # -- what staff read on a job page ------------------------------------------------
    @classmethod
    def job_links(cls, raw: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Exported CSV files (product exports): what staff open an export job for."""
        locations = (raw.get("meta") or {}).get("file_locations") or []
        return [
            (f"Exported file {n}", url)
            for n, url in enumerate(locations, start=1)
            if isinstance(url, str) and url.startswith(("https://", "http://"))
        ]

    @classmethod
    def job_details(cls, raw: Mapping[str, Any]) -> list[tuple[str, str]]:
        meta = raw.get("meta") or {}
        labels = {
            "filter": "Export filter",
            "copied_from": "Copied from hierarchy",
            "hierarchy_id": "New hierarchy",
            "x_request_id": "Request id (for Elastic Path support)",
        }
        return [(label, str(meta[key])) for key, label in labels.items() if meta.get(key)]

    # -- hooks ------------------------------------------------------------------------
    def default_headers(self) -> dict[str, str]:
        return {"Accept": "application/json"}

    def describe_error(self, response: requests.Response) -> str:
        """`title: detail (request_id ...)` for each error, so staff can quote it to support
        (whole: the client redacts, then cuts).

        `status` comes as a string (the PIM spec) or a number (the error guide): both read.
        """
        try:
            body = response.json()
        except ValueError:
            return response.text
        items = body.get("errors") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            return response.text
        texts = []
        for item in items[:5]:
            if not isinstance(item, dict):
                continue
            text = str(item.get("title") or f"error {item.get('status', '')}".strip())
            if item.get("detail"):
                text += f": {item['detail']}"
            if item.get("request_id"):
                text += f" (request_id {item['request_id']})"
            texts.append(text)
        return "; ".join(texts) or response.text

    # -- the token --------------------------------------------------------------------
    @property
    def token_requests(self) -> int:
        """Token requests this instance made (a cached token costs none)."""
        return self.oauth.token_requests

    def access_token(self) -> str:
        """The client's current token, from the process's cache or asked for anew."""
        self.oauth.ensure()
        assert self.oauth.token is not None
        return self.oauth.token

    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET with the bearer token; a 401 renews the token once and retries once."""
        self.access_token()
        try:
            return self.client.request_json("GET", path, params=params)
        except AccessDenied:
            raise
        except AuthError:
            self.oauth.renew(refused=self.oauth.token)
        try:
            return self.client.request_json("GET", path, params=params)
        except AccessDenied:
            raise
        except AuthError as exc:
            answer = exc.message[exc.message.find("(HTTP") :] if "(HTTP" in exc.message else ""
            raise AuthError(
                f"authentication failed: {self.label} refused even a token it had just issued "
                + answer,
                status_code=exc.status_code,
            ) from None

    # -- the calls the sync engine makes ----------------------------------------------
    def check_credentials(self) -> None:
        self.oauth.renew()  # a new token: the key itself is what staff test
        self._get(JOBS_PATH, {"page[offset]": 0, "page[limit]": 1})

    def iter_pages(self, listing: str, cursor: str | None = None) -> Iterator[JobPage]:
        """Every job, page by page; stops on a short page (meta.results.total is unreliable)."""
        if listing != LISTING:
            raise KeyError(f"{self.label} has one listing, {LISTING!r}, not {listing!r}")
        offset = self._offset_from_cursor(cursor)
        guard = CursorGuard(f"{self.label} jobs")
        while True:
            guard.advance(str(offset))
            try:
                body = self._get(
                    JOBS_PATH, {"page[offset]": offset, "page[limit]": self.page_limit}
                )
            except RequestRejected as exc:
                if offset > 0 and exc.status_code == 400:
                    # A deeper offset than this store allows: the list window ends here.
                    yield JobPage([], None, window_truncated=True)
                    return
                raise
            items = self._data_list(body, "the job list")
            records = [self.job_record(item) for item in items]
            next_offset = offset + len(items)
            if len(items) < self.page_limit:
                yield JobPage(records, None)
                return
            if next_offset > MAX_OFFSET:
                yield JobPage(records, None, window_truncated=True)
                return
            yield JobPage(records, str(next_offset))
            offset = next_offset

    def fetch_job(self, kind: str, external_id: str) -> JobRecord:
        body = self._get(f"{JOBS_PATH}/{_path_segment(external_id)}")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise BadResponse(
                f"{self.label} answered a job request without a job",
                excerpt=self.client.excerpt(body),
            )
        return self.job_record(data)

    def iter_errors(self, kind: str, external_id: str) -> Iterator[JobErrorRecord]:
        body = self._get(f"{JOBS_PATH}/{_path_segment(external_id)}/errors")
        for item in self._data_list(body, "the job's errors"):
            attributes = item.get("attributes") if isinstance(item.get("attributes"), dict) else {}
            message = attributes.get("message")
            yield JobErrorRecord(
                message=str(message) if message is not None else "",
                external_id=str(item.get("id") or ""),
                raw=item,
            )

    # -- parsing ----------------------------------------------------------------------
    @staticmethod
    def _offset_from_cursor(cursor: str | None) -> int:
        if not cursor:
            return 0
        try:
            offset = int(cursor)
        except ValueError:
            raise InvalidCursor(f"saved Elastic Path cursor {cursor!r} is not an offset") from None
        if not 0 <= offset <= MAX_OFFSET:
            raise InvalidCursor(f"saved Elastic Path offset {offset} is out of range")
        return offset

    def _data_list(self, body: Any, what: str) -> list[dict[str, Any]]:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not all(isinstance(i, dict) for i in data):
            raise BadResponse(
                f"{self.label} sent {what} without a data list",
                excerpt=self.client.excerpt(body),
            )
        return data

    def job_record(self, item: Mapping[str, Any]) -> JobRecord:
        job_id = item.get("id")
        if not isinstance(job_id, str) or not job_id:
            raise BadResponse(
                f"{self.label} sent a job without an id",
                excerpt=self.client.excerpt(item),
            )
        attributes = item.get("attributes")
        attributes = attributes if isinstance(attributes, dict) else {}
        provider_status = str(attributes.get("status") or "")
        kind = str(attributes.get("type") or item.get("type") or "pim-job")[:KIND_MAX_LENGTH]
        return JobRecord(
            kind=kind,
            external_id=job_id,
            status=STATUS_MAP.get(provider_status.strip().lower(), Status.UNKNOWN),
            provider_status=provider_status,
            raw=dict(item),
            created_at=self.read_time(attributes.get("created_at"), "created_at"),
            started_at=self.read_time(attributes.get("started_at"), "started_at"),
            completed_at=self.read_time(attributes.get("completed_at"), "completed_at"),
            updated_at=self.read_time(attributes.get("updated_at"), "updated_at"),
        )


def _path_segment(value: str) -> str:
    """A job id as one path segment: an id must never reach another path or host."""
    return requests.utils.quote(str(value), safe="")


__all__ = ["LISTING", "ElasticPathProvider"]
