"""The types every provider module speaks, and the only ones `jobcenter` sees.

`providers/` knows HTTP and each provider's JSON; `jobcenter/` knows the database. They
meet here: a provider turns its JSON into `JobRecord`s and `JobErrorRecord`s and its
failures into the typed errors of `providers.errors`, so the sync engine never reads a
provider's JSON. Nothing in this package imports Django.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

# The error classes live in `providers.errors`; import them from there.
from providers.errors import BadResponse
from providers.http import HttpClient, RateLimit, RetryPolicy, SlowDown, TokenBucketStore
from providers.outbound import OutboundPolicy
from providers.times import parse_time

if TYPE_CHECKING:
    import requests


class Status(StrEnum):
    """Normalized job status shared by every provider."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIALLY_FAILED = "partially_failed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


TERMINAL_STATUSES: frozenset[Status] = frozenset(
    {Status.SUCCEEDED, Status.PARTIALLY_FAILED, Status.FAILED, Status.CANCELLED, Status.EXPIRED}
)
FAILED_STATUSES: frozenset[Status] = frozenset({Status.FAILED, Status.PARTIALLY_FAILED})


def status_from_counts(total: int | None, failed: int | None) -> Status:
    """Terminal status of a job that finished, judged by how many of its operations failed.

    Klaviyo's `complete` and Fullstory's `FAILED` both need this: neither status says by
    itself whether all, some or none of the work failed.
    """
    failed = failed or 0
    if failed <= 0:
        return Status.SUCCEEDED
    if total is not None and failed < total:
        return Status.PARTIALLY_FAILED
    return Status.FAILED


@dataclass(frozen=True)
class JobKind:
    """One kind of job a provider runs; `name` is what `Job.kind` stores."""

    name: str
    label: str
    listable: bool = True
    rate_tier: str = "default"


@dataclass(frozen=True)
class CredentialField:
    """A credential the account form asks for; `secret` ones are never shown back."""

    name: str
    label: str
    secret: bool = True
    required: bool = True
    help_text: str = ""


@dataclass(frozen=True)
class PersonalData:
    """Which parts of an error record are the failing record's own data (a profile, an
    event, a user), as opposed to what the provider says went wrong with it.

    A provider declares it on each error record it makes: `raw_paths` are key paths into
    `JobErrorRecord.raw`, `fields` the record's fields read from that data (a user's
    email as its `title`, say). Job Center drops both when a deployment keeps no
    personal data in error records (`without_personal_data`); it never reads the JSON.
    """

    raw_paths: tuple[tuple[str, ...], ...] = ()
    fields: tuple[str, ...] = ()


NO_PERSONAL_DATA = PersonalData()


def without_paths(raw: Mapping[str, Any], paths: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    """A copy of `raw` without the keys at `paths`; the input is left as it was."""
    result = dict(raw)
    for path in paths:
        node = result
        for key in path[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                break
            node[key] = dict(child)  # copied on the way down: the input stays whole
            node = node[key]
        else:
            node.pop(path[-1], None)
    return result


@dataclass
class JobErrorRecord:
    """One per-record error a provider reports for a job."""

    message: str
    code: str = ""
    title: str = ""
    source: str = ""
    external_id: str = ""
    raw: dict[str, Any] = field(default_factory=dict)
    personal_data: PersonalData = NO_PERSONAL_DATA

    def without_personal_data(self) -> JobErrorRecord:
        """This record without the failing record's own data: the declared raw paths
        removed, the declared fields blank; the provider's message and code stay."""
        declared = self.personal_data
        if not declared.raw_paths and not declared.fields:
            return self
        blanks = dict.fromkeys(declared.fields, "")
        return replace(self, raw=without_paths(self.raw, declared.raw_paths), **blanks)


@dataclass
class JobRecord:
    """A provider job in normalized form, plus the raw payload it came from."""

    kind: str
    external_id: str
    status: Status
    provider_status: str
    raw: dict[str, Any]
    total_count: int | None = None
    completed_count: int | None = None
    failed_count: int | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    updated_at: datetime | None = None
    expires_at: datetime | None = None
    # Errors embedded in the job payload itself (Klaviyo catalog jobs). None means the
    # payload does not carry them and `Provider.iter_errors` must be asked.
    errors: list[JobErrorRecord] | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def digest(self) -> str:
        """Digest of the canonical raw payload: equal digests mean nothing changed."""
        return payload_digest(self.raw)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)
# The C encoder `JSONEncoder.encode` makes anew on every call, made once with the same
# options: a third off the encoding of each small error record (hundreds of thousands
# per sync). Without the circular-reference check: decoded JSON has no cycles.
_C_CANONICAL = (
    json.encoder.c_make_encoder(
        None, str, json.encoder.c_encode_basestring_ascii, None, ":", ",", True, False, True
    )
    if json.encoder.c_make_encoder is not None
    and json.encoder.c_encode_basestring_ascii is not None
    else None
)


def canonical_json(payload: Any) -> str:
    """The payload as compact JSON with sorted keys: one text per content, whatever order.

    The sync stores this text as the payload and digests the same text, so a payload is
    encoded once however many rows carry it. (One encoder for all: `json.dumps` with
    these options builds a new one per call; the C encoder under it, once.)
    """
    if _C_CANONICAL is None:
        return _CANONICAL.encode(payload)
    return "".join(_C_CANONICAL(payload, 0))


def text_digest(canonical: str) -> str:
    """The digest of a canonical_json text."""
    return hashlib.sha256(canonical.encode()).hexdigest()


def payload_digest(payload: Any) -> str:
    return text_digest(canonical_json(payload))


@dataclass
class JobPage:
    """One page of a job listing.

    `next_cursor` is an opaque string the provider can resume from in a later run (None
    on the last page). `window_truncated` is set on the last page when the provider's list
    could not reach every job (an offset limit), so absence from it does not mean gone.
    """

    records: list[JobRecord]
    next_cursor: str | None = None
    window_truncated: bool = False


@dataclass(frozen=True)
class ListingFreshness:
    """What one listing offers the hot lane, which refreshes unfinished jobs often.

    `status_filter_calls`: the requests `Provider.iter_unfinished` makes to list only the
    listing's unfinished jobs when they fit one page (0: the listing has no status
    filter). `newest_first`: its first page holds its newest jobs, so new ones show there.
    The engine (`jobcenter.sync.hot`) chooses the cheapest call from these facts alone.
    """

    status_filter_calls: int = 0
    newest_first: bool = False


NO_LISTING_FRESHNESS = ListingFreshness()

# --- the provider interface -----------------------------------------------------------

MAX_PAGES_PER_LISTING = 5000


class Provider(ABC):
    """One provider's API, bound to one account's credentials and HTTP client."""

    slug: ClassVar[str]
    label: ClassVar[str]
    credential_fields: ClassVar[tuple[CredentialField, ...]]
    # Named base URLs staff choose from (e.g. Elastic Path regions); the first is the default.
    base_urls: ClassVar[Mapping[str, str]]
    # Hosts credentials may be sent to, beside the base URL's own host.
    documented_hosts: ClassVar[frozenset[str]]
    # Host patterns a base URL may also be on, '*' standing for one DNS label (an org's
    # own host: '*.my.salesforce.com'); https only.
    host_patterns: ClassVar[tuple[str, ...]] = ()
    kinds: ClassVar[tuple[JobKind, ...]]
    # The listings a sync pages through. By default one per listable kind (Klaviyo); a
    # provider with one listing for every kind (Elastic Path) names it here, and its
    # records carry their own kind.
    listings: ClassVar[tuple[str, ...]] = ()
    rate_limits: ClassVar[Mapping[str, RateLimit]]
    # Whether the provider's documentation shows times without an offset as UTC; if not,
    # such a time is refused (see providers.times).
    naive_times_are_utc: ClassVar[bool] = False
    # Whether `fetch_job` answers for one job by its id (the hot lane's fallback).
    fetches_by_id: ClassVar[bool] = True
    # Options a deployment may set by environment variable: option name -> variable name.
    # Settings read them (`providers.options_from_environment`) and hand them back to the
    # provider as `options`, so jobcenter/ never names a provider's setting.
    environment_options: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self,
        credentials: Mapping[str, str],
        *,
        base_url: str | None = None,
        options: Mapping[str, Any] | None = None,
        bucket_store: TokenBucketStore | None = None,
        bucket_prefix: str = "",
        rate_limits: Mapping[str, RateLimit] | None = None,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = (5.0, 30.0),
        outbound: OutboundPolicy | None = None,
    ) -> None:
        self.credentials = dict(credentials)
        self.options = dict(options or {})
        self.base_url = (base_url or self.default_base_url()).rstrip("/")
        self.client: HttpClient = HttpClient(
            self.base_url,
            secrets=self.secret_values(self.credentials),
            auth_headers=self.auth_headers(),
            default_headers=self.default_headers(),
            timeout=timeout,
            retry=retry,
            rate_limits={**self.rate_limits, **(rate_limits or {})},
            bucket_store=bucket_store,
            bucket_prefix=bucket_prefix,
            describe_error=self.describe_error,
            provider_label=self.label,
            policy=outbound,
            slow_down=self.slow_down,
        )

    # -- hooks a provider overrides ---------------------------------------------------
    def auth_headers(self) -> dict[str, str]:
        """Headers that carry the credentials; sent only to the base URL's origin."""
        return {}

    def default_headers(self) -> dict[str, str]:
        """Headers sent on every request (Accept, an API revision, ...)."""
        return {"Accept": "application/json"}

    def describe_error(self, response: requests.Response) -> str:
        """A human text from the provider's error body, whole: the client redacts the
        credentials in it, then cuts it (cut first, a credential could straddle the cut)."""
        return response.text

    def slow_down(self, response: requests.Response) -> SlowDown | None:
        """Whether an error answer other than a 429 means "slow down" (a 403 with a
        rate-limit code, say); None by default: a 429 is the only one."""
        return None

    # -- class-level facts used by jobcenter ------------------------------------------
    @classmethod
    def default_base_url(cls) -> str:
        return next(iter(cls.base_urls.values()))

    @classmethod
    def host_allowed(cls, host: str) -> bool:
        """A documented host, or one matching a host pattern ('*' is one DNS label)."""
        for pattern in cls.host_patterns:
            suffix = pattern[1:] if pattern.startswith("*.") else None
            label = host[: -len(suffix)] if suffix and host.endswith(suffix) else ""
            if host == pattern or (label and "." not in label):
                return True
        return host in cls.documented_hosts

    @classmethod
    def kind(cls, name: str) -> JobKind:
        for kind in cls.kinds:
            if kind.name == name:
                return kind
        raise KeyError(name)

    @classmethod
    def listing_names(cls) -> tuple[str, ...]:
        return cls.listings or tuple(k.name for k in cls.kinds if k.listable)

    @classmethod
    def tracked_kinds(cls) -> tuple[JobKind, ...]:
        """The kinds no listing shows: their jobs are known only by the ids staff track.

        What a client must record when it creates such a job (the demo does it for the
        sandbox); a provider with only these kinds has no listing at all.
        """
        return tuple(k for k in cls.kinds if not k.listable)

    @classmethod
    def listing_freshness(cls, listing: str) -> ListingFreshness:
        """What `listing` offers the hot lane; by default neither a filter nor an order."""
        return NO_LISTING_FRESHNESS

    @classmethod
    def read_time(cls, value: object, field: str) -> datetime | None:
        """A time from this provider's JSON, read by the one policy of `providers.times`."""
        return parse_time(value, f"{cls.label}'s {field}", naive_is_utc=cls.naive_times_are_utc)

    @classmethod
    def job_links(cls, raw: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(label, URL) pairs worth a click in a job's payload, e.g. exported files."""
        return []

    @classmethod
    def job_details(cls, raw: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(label, value) facts from a payload that staff read first (filters, sources)."""
        return []

    @classmethod
    def secret_values(cls, credentials: Mapping[str, str]) -> list[str]:
        """The credential values that must never appear in a log line or error text."""
        return [
            str(credentials[f.name])
            for f in cls.credential_fields
            if f.secret and credentials.get(f.name)
        ]

    # -- the calls the sync engine makes ----------------------------------------------
    @abstractmethod
    def check_credentials(self) -> None:
        """Make one cheap authenticated call; raise AuthError when refused."""

    @abstractmethod
    def iter_pages(self, listing: str, cursor: str | None = None) -> Iterator[JobPage]:
        """Yield `listing` (see `listing_names`) page by page, resuming at `cursor`."""

    def iter_unfinished(self, listing: str) -> Iterator[JobPage]:
        """Pages of `listing` holding only its unfinished jobs (where
        `listing_freshness(listing).status_filter_calls` says the provider can filter)."""
        raise NotImplementedError(f"{self.label} cannot list {listing} by status")

    @abstractmethod
    def fetch_job(self, kind: str, external_id: str) -> JobRecord:
        """Fetch one job by id; raise NotFound when the provider does not know it."""

    @abstractmethod
    def iter_errors(self, kind: str, external_id: str) -> Iterator[JobErrorRecord]:
        """Yield the per-record errors of a finished job."""


class CursorGuard:
    """Ends a page loop that would spin: a repeated cursor or too many pages."""

    def __init__(self, what: str, max_pages: int = MAX_PAGES_PER_LISTING) -> None:
        self.what = what
        self.max_pages = max_pages
        self.pages = 0
        self.seen: set[str] = set()

    def advance(self, cursor: str | None) -> None:
        self.pages += 1
        if self.pages > self.max_pages:
            raise BadResponse(f"{self.what}: more than {self.max_pages} pages; stopped paging")
        if cursor is not None:
            if cursor in self.seen:
                raise BadResponse(f"{self.what}: the provider repeated a page cursor")
            self.seen.add(cursor)
