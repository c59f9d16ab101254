"""A `providers.base.Provider` built from a checked definition.

The class `provider_class` builds carries the definition's facts as the class variables a
coded provider declares (slug, label, credential fields, base URLs, kinds, listings, rate
limits), so Job Center reads a declared provider exactly as a coded one. Its instances
talk through the one `HttpClient` of `providers.base.Provider` (outbound policy,
redaction, rate-limit buckets, retries), page under a `CursorGuard`, raise the typed
errors of `providers.errors`, and read times through `providers.times`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import requests

from providers.base import (
    CredentialField,
    JobErrorRecord,
    JobKind,
    JobPage,
    JobRecord,
    ListingFreshness,
    Provider,
    Status,
    status_from_counts,
)
from providers.declarative.auth import ClientCredentials, static_headers
from providers.declarative.fields import (
    as_count,
    as_text,
    compile_ref,
    read,
    render,
    resolve_hook,
    template_names,
)
from providers.declarative.loader import Definition
from providers.declarative.paging import ListSpec, iter_raw_pages
from providers.declarative.records import csv_rows, error_record
from providers.errors import AccessDenied, AuthError, BadResponse
from providers.http import RateLimit, SlowDown
from providers.outbound import parse_target

KIND_MAX_LENGTH = 100  # Job.kind's column width
TIME_FIELDS = ("created_at", "started_at", "completed_at", "updated_at", "expires_at")
HOST_VALUE = re.compile(r"[A-Za-z0-9.-]+")


@contextmanager
def answer_in_message() -> Iterator[None]:
    """A BadResponse leaving a listing, a fetch or an error list carries its excerpt in
    its message too: the sync engine notes such a failure as one of the run's problems by
    its message alone (jobcenter.sync.engine.AccountSync.sweep_listing), and the answer
    would be lost. The excerpt is already redacted and cut (HttpClient.excerpt). The
    error keeps its type (InvalidCursor) and its excerpt."""
    try:
        yield
    except BadResponse as exc:
        if exc.excerpt and exc.excerpt not in exc.message:
            exc.message = f"{exc.message} — the answer began: {exc.excerpt}"
            exc.args = (exc.message,)
        raise


class DeclarativeProvider(Provider):
    """The engine of every declared provider; `provider_class` makes one subclass each."""

    definition: ClassVar[Definition]
    spec: ClassVar[dict[str, Any]]

    def __init__(
        self, credentials: Mapping[str, str], *, base_url: str | None = None, **kwargs: Any
    ) -> None:
        self.credentials = dict(credentials)
        self.values = self.template_values(self.credentials)
        base_url = base_url or self.rendered_base_url(self.values)
        super().__init__(credentials, base_url=base_url, **kwargs)
        auth = self.spec["auth"]
        self.token: ClientCredentials | None = None
        if auth["kind"] == "oauth2_client_credentials":
            self.token = ClientCredentials(auth, self.values, self.client, self.label)
        limit = self.options.get("page_limit")
        self.page_limit = int(limit) if limit else None

    # -- what the definition says about the account ------------------------------------------
    @classmethod
    def template_values(cls, credentials: Mapping[str, str]) -> dict[str, str]:
        """Credential fields and the values derived from them; a credential that does
        not yield a derived value (a key without its data centre) is an AuthError."""
        values = {name: str(value) for name, value in credentials.items()}
        for name, rule in (cls.spec.get("derived") or {}).items():
            found = re.search(rule["pattern"], values.get(rule["from"], ""))
            value = found.group(1) if found else None
            if not value or not HOST_VALUE.fullmatch(value):
                label = next(
                    (f.label for f in cls.credential_fields if f.name == rule["from"]), rule["from"]
                )
                raise AuthError(
                    f"authentication failed: the {label} does not say its {name} "
                    f"(expected to match {rule['pattern']})"
                )
            values[name] = value
        return values

    @classmethod
    def rendered_base_url(cls, values: Mapping[str, str]) -> str:
        """The default base URL filled from the credentials, refused unless its host is
        documented or matches a host pattern (credentials go nowhere else)."""
        template = cls.default_base_url()
        if not template_names(template):
            return template
        url = render(template, values).rstrip("/")
        try:
            target = parse_target(url)
        except BadResponse:  # Refused: a URL parsers could read two ways
            target = None
        if (
            target is None
            or target.origin[::2] != ("https", 443)
            or not cls.host_allowed(target.host)
        ):
            raise AuthError(
                f"authentication failed: the credentials point to {url!r}, which is not a "
                f"{cls.label} host"
            )
        return url

    def auth_headers(self) -> dict[str, str]:
        return static_headers(self.spec["auth"], self.values)

    def default_headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        headers.update(
            {k: render(v, self.values) for k, v in (self.spec.get("headers") or {}).items()}
        )
        return headers

    def describe_error(self, response: requests.Response) -> str:
        ref = self.spec.get("error_text")
        if ref is None:
            return response.text
        try:
            text = as_text(read(ref, response.json()))
        except ValueError:
            return response.text
        return text or response.text

    def slow_down(self, response: requests.Response) -> SlowDown | None:
        for rule in self.spec.get("slow_down") or ():
            if response.status_code != rule["status"]:
                continue
            if "code_at" in rule:
                try:
                    code = read(rule["code_at"], response.json())
                except ValueError:
                    continue
                if as_text(code) not in rule["codes"]:
                    continue
            return SlowDown(rule.get("retry_after"))
        return None

    # -- requests ---------------------------------------------------------------------------
    def get(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        tier: str = "default",
        accept: str | None = None,
    ) -> requests.Response:
        """GET with the credentials; under OAuth 2 a 401 renews the token once and retries
        once, and a second 401 is an authentication failure."""
        headers = {"Accept": accept} if accept else None
        if self.token is None:
            return self._send(path, params, tier, headers)
        self.token.ensure()
        refused = self.token.token
        try:
            return self._send(path, params, tier, headers)
        except AccessDenied:
            raise
        except AuthError:
            self.token.renew(refused=refused)
        try:
            return self._send(path, params, tier, headers)
        except AccessDenied:
            raise
        except AuthError as exc:
            answer = exc.message[exc.message.find("(HTTP") :] if "(HTTP" in exc.message else ""
            raise AuthError(
                f"authentication failed: {self.label} refused even a token it had just issued "
                + answer,
                status_code=exc.status_code,
            ) from None

    def _send(
        self, path: str, params: Mapping[str, Any] | None, tier: str, headers: Any
    ) -> requests.Response:
        return self.client.request(
            "GET", path, params=params, tier=tier, headers=headers, parse_json=not headers
        )

    def get_json(
        self, path: str, params: Mapping[str, Any] | None = None, *, tier: str = "default"
    ) -> Any:
        return getattr(self.get(path, params, tier=tier), "parsed", None)

    # -- the calls the sync engine makes ----------------------------------------------------
    def check_credentials(self) -> None:
        if self.token is not None:
            self.token.renew()
        check = self.spec.get("check")
        if check is None:
            name = next(iter(self.spec.get("listings") or {}), None)
            if name is None:
                return
            next(self.iter_pages(name), None)
            return
        self.get_json(render(check["path"], self.values, path=True), check.get("query"))

    def list_spec(self, listing: str, extra: Mapping[str, Any] | None = None) -> ListSpec:
        spec = self.listing(listing)
        return ListSpec(
            what=f"{self.label}'s {listing} list",
            path=render(spec["path"], self.values, path=True),
            query={**(spec.get("query") or {}), **(extra or {})},
            records=spec["records"],
            pagination=spec["pagination"],
            page_limit=self.page_limit,
        )

    def iter_pages(self, listing: str, cursor: str | None = None) -> Iterator[JobPage]:
        yield from self._pages(listing, self.list_spec(listing), cursor)

    def iter_unfinished(self, listing: str) -> Iterator[JobPage]:
        calls = self.listing(listing).get("unfinished")
        if not calls:
            raise NotImplementedError(f"{self.label} cannot list {listing} by status")
        for extra in calls:
            yield from self._pages(listing, self.list_spec(listing, extra), None)

    def _pages(self, listing: str, spec: ListSpec, cursor: str | None) -> Iterator[JobPage]:
        with answer_in_message():
            yield from self._raw_pages(listing, spec, cursor)

    def _raw_pages(self, listing: str, spec: ListSpec, cursor: str | None) -> Iterator[JobPage]:
        listing_spec = self.listing(listing)
        tier = listing_spec.get("rate_tier", "default")
        kind = self.listing_kind(listing)
        for page in iter_raw_pages(spec, self._getter(tier), self.client.excerpt, cursor):
            if listing_spec.get("fetch_each"):
                records = [self.fetch_job(kind or "", self.job_id(item)) for item in page.records]
            else:
                records = [
                    self.job_record(item, kind, fixed=kind is not None) for item in page.records
                ]
            yield JobPage(records, page.next_cursor, page.window_truncated)

    def _getter(self, tier: str):  # type: ignore[no-untyped-def]
        return lambda path, params: self.get_json(path, params, tier=tier)

    def fetch_job(self, kind: str, external_id: str) -> JobRecord:
        with answer_in_message():
            return self._fetch_job(kind, external_id)

    def _fetch_job(self, kind: str, external_id: str) -> JobRecord:
        fetch = self.section(kind, "fetch")
        if fetch is None:
            raise NotImplementedError(f"{self.label} does not fetch a job by id")
        values = {**self.values, "id": external_id}
        body = self.get_json(
            render(fetch["path"], values, path=True), fetch.get("query"), tier=self.tier(kind)
        )
        item = read(fetch.get("record", "@"), body)
        if not isinstance(item, dict):
            raise BadResponse(
                f"{self.label} answered a job request without a job",
                excerpt=self.client.excerpt(body),
            )
        return self.job_record(item, kind or None)

    def iter_errors(self, kind: str, external_id: str) -> Iterator[JobErrorRecord]:
        with answer_in_message():
            yield from self._iter_errors(kind, external_id)

    def _iter_errors(self, kind: str, external_id: str) -> Iterator[JobErrorRecord]:
        errors = self.section(kind, "errors") or {"kind": "none"}
        if errors["kind"] == "none":
            return
        values = {**self.values, "id": external_id}
        path = render(errors["path"], values, path=True)
        tier = errors.get("rate_tier") or self.tier(kind)
        if errors["kind"] == "csv":
            response = self.get(path, errors.get("query"), tier=tier, accept="text/csv")
            items = csv_rows(response, self.label, self.client.excerpt)
        else:
            spec = ListSpec(
                what=f"{self.label}'s errors of job {external_id}",
                path=path,
                query=errors.get("query") or {},
                records=errors["records"],
                pagination=errors.get("pagination") or {"kind": "none"},
            )
            pages = iter_raw_pages(spec, self._getter(tier), self.client.excerpt)
            items = (item for page in pages for item in page.records)
        hook = (self.spec.get("hooks") or {}).get("error")
        for item in items:
            record = error_record(errors, item)
            yield resolve_hook(hook)(record, item) if hook else record

    # -- reading records --------------------------------------------------------------------
    def job_id(self, item: Mapping[str, Any]) -> str:
        value = read(self.spec["job"]["id"], item)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str) or not value:
            raise BadResponse(
                f"{self.label} sent a job without an id", excerpt=self.client.excerpt(item)
            )
        return value

    def job_record(
        self, item: Mapping[str, Any], kind: str | None, *, fixed: bool = False
    ) -> JobRecord:
        """The job a record describes; `kind` is the listing's (`fixed`) or the one a
        fetch asked for, which job.kind, when declared, reads from the record instead."""
        job = self.spec["job"]
        job_id = self.job_id(item)
        if "kind" in job and not fixed:
            kind = as_text(read(job["kind"], item)) or kind
        provider_status = as_text(read(job["status"], item))
        counts = {}
        for name in ("total", "completed", "failed"):
            try:
                counts[name] = as_count(read((job.get("counts") or {}).get(name), item))
            except ValueError:
                raise BadResponse(
                    f"{self.label} sent a job whose {name} count is not a number",
                    excerpt=self.client.excerpt(item),
                ) from None
        times = job.get("times") or {}
        record = JobRecord(
            kind=(kind or "")[:KIND_MAX_LENGTH],
            external_id=job_id,
            status=self.status(provider_status, counts["total"], counts["failed"]),
            provider_status=provider_status,
            raw=dict(item),
            total_count=counts["total"],
            completed_count=counts["completed"],
            failed_count=counts["failed"],
            **{name: self.read_time(read(times.get(name), item), name) for name in TIME_FIELDS},
        )
        hook = (self.spec.get("hooks") or {}).get("job")
        return resolve_hook(hook)(record, item) if hook else record

    @classmethod
    def status(cls, provider_status: str, total: int | None, failed: int | None) -> Status:
        mapped = cls.status_words.get(provider_status.strip().lower())
        if mapped is None:
            return Status.UNKNOWN
        if mapped == "by_counts":
            return status_from_counts(total, failed)
        return Status(mapped)

    # -- class-level facts ------------------------------------------------------------------
    status_words: ClassVar[dict[str, str]] = {}

    @classmethod
    def listing(cls, name: str) -> dict[str, Any]:
        try:
            return cls.spec["listings"][name]
        except KeyError:
            raise KeyError(f"{cls.label} has no listing {name!r}") from None

    @classmethod
    def listing_kind(cls, name: str) -> str | None:
        spec = cls.listing(name)
        kinds = {k.name for k in cls.kinds}
        return spec.get("kind") or (name if name in kinds else None)

    @classmethod
    def section(cls, kind: str, key: str) -> dict[str, Any] | None:
        """The kind's own fetch or errors, else the definition's."""
        for declared in cls.spec["kinds"]:
            if declared["name"] == kind and key in declared:
                return declared[key]
        return cls.spec.get(key)

    @classmethod
    def tier(cls, kind: str) -> str:
        try:
            return cls.kind(kind).rate_tier
        except KeyError:
            return "default"

    @classmethod
    def listing_freshness(cls, listing: str) -> ListingFreshness:
        spec = cls.listing(listing)
        return ListingFreshness(
            status_filter_calls=len(spec.get("unfinished") or ()),
            newest_first=bool(spec.get("newest_first")),
        )

    @classmethod
    def job_links(cls, raw: Mapping[str, Any]) -> list[tuple[str, str]]:
        links = []
        for link in cls.spec["job"].get("links") or ():
            found = read(link["url"], raw)
            urls = found if isinstance(found, list) else [found]
            links += [
                (link["label"].replace("{n}", str(n)), url)
                for n, url in enumerate(urls, start=1)
                if isinstance(url, str) and url.startswith(("https://", "http://"))
            ]
        return links

    @classmethod
    def job_details(cls, raw: Mapping[str, Any]) -> list[tuple[str, str]]:
        details = []
        for detail in cls.spec["job"].get("details") or ():
            value = read(detail["value"], raw)
            if value not in (None, "", [], {}, False):
                details.append((detail["label"], as_text(value)))
        return details


def provider_class(definition: Definition) -> type[DeclarativeProvider]:
    """The Provider subclass a checked definition declares."""
    spec = definition.data
    for ref in (spec["job"]["id"], spec["job"]["status"]):
        compile_ref(ref)  # checked at load; compiled once here
    kinds = tuple(
        JobKind(k["name"], k["label"], k.get("listable", True), k.get("rate_tier", "default"))
        for k in spec["kinds"]
    )
    fetches = "fetch" in spec or any("fetch" in k for k in spec["kinds"])
    attributes: dict[str, Any] = {
        "__module__": __name__,
        "__doc__": f"{spec['label']}, declared in {definition.path.name}.",
        "definition": definition,
        "spec": spec,
        "slug": spec["slug"],
        "label": spec["label"],
        "credential_fields": tuple(
            CredentialField(
                c["name"],
                c["label"],
                c.get("secret", True),
                c.get("required", True),
                c.get("help_text", ""),
            )
            for c in spec["credentials"]
        ),
        "base_urls": dict(spec["base_urls"]),
        "documented_hosts": frozenset(spec.get("documented_hosts") or ()),
        "host_patterns": tuple(spec.get("host_patterns") or ()),
        "kinds": kinds,
        "listings": tuple(spec.get("listings") or ()),
        "rate_limits": {
            tier: RateLimit(tuple((int(n), float(s)) for n, s in windows))
            for tier, windows in (spec.get("rate_limits") or {}).items()
        },
        "naive_times_are_utc": bool(spec.get("naive_times_are_utc", False)),
        "fetches_by_id": fetches,
        "environment_options": dict(spec.get("environment_options") or {}),
        "status_words": {k.strip().lower(): v for k, v in spec["status_map"].items()},
    }
    name = "".join(part.title() for part in re.split(r"[^a-z0-9]+", spec["slug"])) + "Provider"
    return type(name, (DeclarativeProvider,), attributes)
