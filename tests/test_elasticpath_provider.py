"""The Elastic Path provider against the sandbox over real HTTP on loopback."""

from __future__ import annotations

import copy
import json
import logging
import time
from collections import Counter
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator

from providers import get_provider
from providers.base import JobPage, Status
from providers.declarative import auth as oauth
from providers.elasticpath import LISTING, ElasticPathProvider
from providers.errors import AuthError, BadTime, InvalidCursor, NotFound
from providers.http import RateLimit, RetryPolicy
from providers.outbound import OutboundPolicy
from providers.sandbox.client import SandboxClient
from tests.openapi_check import SPECS_DIR, request_errors, response_errors

SPEC = "elasticpath-pcm-jobs"
TYPES = {
    "child-products",
    "product-import",
    "product-export",
    "hierarchy-duplicate",
    "price-import",
}
EXPECTED_STATUS = {
    "pending": Status.QUEUED,
    "started": Status.RUNNING,
    "success": Status.SUCCEEDED,
    "failed": Status.FAILED,
    "cancelled": Status.CANCELLED,
}


def make_store(sandbox: SandboxClient, **options: Any) -> tuple[dict[str, Any], dict[str, str]]:
    options.setdefault("frozen", True)
    options.setdefault("rate_limits", False)
    options.setdefault("jobs_per_kind", 0)
    described = sandbox.create_account("elasticpath", **options)
    return described, described["credentials"]


def make_provider(
    sandbox: SandboxClient, credentials: dict[str, str], **options: Any
) -> ElasticPathProvider:
    return ElasticPathProvider(
        credentials,
        base_url=sandbox.base_url("elasticpath"),
        options=options,
        outbound=OutboundPolicy.development(),  # the sandbox is on loopback
    )


def listing(provider: ElasticPathProvider, cursor: str | None = None) -> list[JobPage]:
    return list(provider.iter_pages(LISTING, cursor))


def token_requests(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in log if e["path"] == "/oauth/access_token"]


def undocumented_status_errors(entry: dict[str, Any]) -> list[str]:
    """Check an answer whose status the spec leaves out (401, 403, 429 on /pcm/jobs).

    Elastic Path's error guide documents these with the same envelope as the spec's
    `error` schema, but with `status` as a number; validate against that schema with
    `status` widened to string-or-integer, and nothing else relaxed.
    """
    with open(SPECS_DIR / f"{SPEC}.openapi.json") as fh:
        schema = copy.deepcopy(json.load(fh)["components"]["schemas"]["error"])
    schema["properties"]["errors"]["items"]["properties"]["status"] = {
        "oneOf": [{"type": "string"}, {"type": "integer"}]
    }
    body = json.loads(entry["response_body"])
    problems = [e.message for e in OAS30Validator(schema).iter_errors(body)]
    if entry["content_type"] != "application/json":
        problems.append(f"content type {entry['content_type']}")
    if int(body["errors"][0]["status"]) != entry["status"]:
        problems.append("errors[0].status differs from the HTTP status")
    return problems


def assert_log_validates(log: list[dict[str, Any]]) -> Counter[int]:
    """Every request against the spec; every answer against its schema. Returns statuses."""
    statuses: Counter[int] = Counter()
    for entry in log:
        statuses[entry["status"]] += 1
        assert request_errors(SPEC, entry) == [], entry
        problems = response_errors(SPEC, entry)
        if problems == [f"Unknown response http status: {entry['status']}"]:
            assert entry["path"].startswith("/pcm/") and entry["status"] in (401, 403, 429)
            assert undocumented_status_errors(entry) == [], entry
        else:
            assert problems == [], entry
    return statuses


# --- the required end-to-end session -----------------------------------------------------


def test_realistic_session_validates_against_the_spec(sandbox: SandboxClient) -> None:
    described, credentials = make_store(sandbox, seed=11, jobs_per_kind=6)
    account = described["id"]
    provider = make_provider(sandbox, credentials, page_limit=7)
    provider.check_credentials()

    records = [r for page in listing(provider) for r in page.records]
    assert {r.kind for r in records} == TYPES
    failed = [r for r in records if r.status is Status.FAILED]
    assert failed
    for record in records[:3] + failed[:3]:
        again = provider.fetch_job(record.kind, record.external_id)
        assert again.raw == record.raw
    for record in failed[:3]:
        assert list(provider.iter_errors(record.kind, record.external_id))
    with pytest.raises(NotFound):
        provider.fetch_job("product-import", "00000000-0000-0000-0000-000000000000")
    # A token that dies mid-session (401) is renewed once and the call retried.
    sandbox.control(account, "expire_tokens")
    assert len(listing(provider)[0].records) == 7
    # A wrong secret is refused at the token endpoint (401 in its own envelope).
    with pytest.raises(AuthError):
        make_provider(sandbox, {**credentials, "client_secret": "wrong"}).check_credentials()

    log = sandbox.requests(account)
    statuses = assert_log_validates(log)
    assert statuses[200] > 10
    assert statuses[404] == 1
    assert statuses[401] == 2  # the expired token, and the wrong secret
    assert len(token_requests(log)) == 3  # check, the renewal after expiry, the wrong secret


def test_undocumented_answers_are_checked_too(sandbox: SandboxClient) -> None:
    """The checker used above has teeth: a bent answer or request fails it."""
    described, credentials = make_store(sandbox, seed=1, jobs_per_kind=1)
    provider = make_provider(sandbox, credentials)
    listing(provider)
    log = sandbox.requests(described["id"])
    jobs = next(e for e in log if e["path"] == "/pcm/jobs")
    bent = copy.deepcopy(jobs)
    body = json.loads(bent["response_body"])
    body["data"][0]["attributes"]["status"] = "done"
    bent["response_body"] = json.dumps(body)
    assert response_errors(SPEC, bent)
    unauthenticated = copy.deepcopy(jobs)
    unauthenticated["headers"].pop("Authorization")
    assert request_errors(SPEC, unauthenticated)
    token = next(e for e in log if e["path"] == "/oauth/access_token")
    no_grant = copy.deepcopy(token)
    no_grant["body"] = "client_id=abc"
    assert request_errors(SPEC, no_grant)
    envelope = {**jobs, "status": 429, "response_body": '{"errors": [{"status": 429}]}'}
    assert undocumented_status_errors(envelope)  # no title


# --- listing, statuses, meta ---------------------------------------------------------------


def test_every_type_and_status_maps_equal_to_the_sandbox_state(sandbox: SandboxClient) -> None:
    described, credentials = make_store(sandbox, seed=21, jobs_per_kind=12)
    provider = make_provider(sandbox, credentials)
    pages = listing(provider)
    records = {r.external_id: r for page in pages for r in page.records}
    state = sandbox.state(described["id"])
    assert len(records) == len(state["jobs"]) == 60
    assert {j["status"] for j in state["jobs"]} == set(EXPECTED_STATUS)
    for job in state["jobs"]:
        record = records[job["id"]]
        assert record.kind == job["kind"]
        assert record.provider_status == job["status"]
        assert record.status is EXPECTED_STATUS[job["status"]]
        assert record.is_terminal == (job["status"] in ("success", "failed", "cancelled"))
        for name in ("created_at", "started_at", "completed_at", "updated_at"):
            assert getattr(record, name) == ElasticPathProvider.read_time(job[name], name), name
        assert record.created_at is not None and record.created_at.tzinfo is not None
        assert record.raw["meta"] == job["meta"]
        assert record.raw["attributes"]["status"] == job["status"]
        assert (record.total_count, record.completed_count, record.failed_count) == (None,) * 3
        assert record.errors is None  # must be asked through iter_errors
        if job["status"] == "failed":
            errors = list(provider.iter_errors(record.kind, record.external_id))
            assert [e.message for e in errors] == job["errors"]
            assert all(e.external_id for e in errors)
    exports = [r for r in records.values() if r.kind == "product-export"]
    finished = [r for r in exports if r.provider_status == "success"]
    assert any(r.raw["meta"]["file_locations"] for r in finished)
    assert all(r.raw["meta"]["filter"] for r in exports)
    duplicates = [r for r in records.values() if r.kind == "hierarchy-duplicate"]
    assert all(r.raw["meta"]["copied_from"] and r.raw["meta"]["hierarchy_id"] for r in duplicates)


def test_statuses_move_as_the_store_works_through_its_queue(sandbox: SandboxClient) -> None:
    described, credentials = make_store(sandbox)
    account = described["id"]
    ids = sandbox.control(account, "create_jobs", type="product-export", count=2, duration=30)[
        "ids"
    ]
    provider = make_provider(sandbox, credentials)
    assert [provider.fetch_job("product-export", i).status for i in ids] == [Status.QUEUED] * 2
    sandbox.clock(account, advance=5)
    assert [provider.fetch_job("product-export", i).status for i in ids] == [
        Status.RUNNING,
        Status.QUEUED,
    ]
    sandbox.clock(account, advance=60)
    done = [provider.fetch_job("product-export", i) for i in ids]
    assert [r.status for r in done] == [Status.SUCCEEDED] * 2
    assert all(r.completed_at and r.started_at and r.completed_at > r.started_at for r in done)
    assert done[1].started_at >= done[0].completed_at


def test_new_job_types_are_kept_under_their_own_name(sandbox: SandboxClient) -> None:
    described, credentials = make_store(sandbox)
    (new_id,) = sandbox.control(
        described["id"], "create_jobs", type="bundle-import", outcome="failed", duration=1
    )["ids"]
    sandbox.clock(described["id"], advance=5)
    provider = make_provider(sandbox, credentials)
    (record,) = listing(provider)[0].records
    assert (record.kind, record.external_id, record.status) == (
        "bundle-import",
        new_id,
        Status.FAILED,
    )
    assert list(provider.iter_errors(record.kind, new_id))


def test_statuses_match_without_regard_to_case() -> None:
    provider = ElasticPathProvider({"client_id": "id-1", "client_secret": "secret-1"})
    for raw, expected in [*EXPECTED_STATUS.items(), ("SUCCESS", Status.SUCCEEDED)]:
        for value in (raw, raw.upper(), raw.title()):
            job = {"id": "j1", "attributes": {"type": "product-import", "status": value}}
            record = provider.job_record(job)
            assert record.status is expected
            assert record.provider_status == value
    odd = provider.job_record({"id": "j2", "attributes": {"status": "paused"}})
    assert (odd.status, odd.kind) == (Status.UNKNOWN, "pim-job")
    # The spec's one example without an offset is UTC like the others; garbage is refused.
    naive = provider.job_record({"id": "j3", "attributes": {"created_at": "2020-09-22T09:00:00"}})
    assert naive.created_at == datetime(2020, 9, 22, 9, tzinfo=UTC)
    with pytest.raises(BadTime, match="Elastic Path's created_at"):
        provider.job_record({"id": "j4", "attributes": {"created_at": "yesterday"}})


def test_paging_stops_on_a_short_page_and_ignores_a_lying_total(sandbox: SandboxClient) -> None:
    described, credentials = make_store(sandbox, seed=3, jobs_per_kind=4, misreport_total=True)
    provider = make_provider(sandbox, credentials, page_limit=6)
    pages = listing(provider)
    assert [len(p.records) for p in pages] == [6, 6, 6, 2]  # the short page is the last
    assert [p.next_cursor for p in pages] == ["6", "12", "18", None]
    assert not any(p.window_truncated for p in pages)
    ids = [r.external_id for p in pages for r in p.records]
    assert len(set(ids)) == 20
    # Resuming from a saved cursor picks up at that offset.
    resumed = listing(provider, "15")
    assert [r.external_id for p in resumed for r in p.records] == ids[15:]
    queries = [
        e["query_string"] for e in sandbox.requests(described["id"]) if e["path"] == "/pcm/jobs"
    ]
    assert queries[0] == "page%5Boffset%5D=0&page%5Blimit%5D=6"
    assert len(queries) == 4 + 1  # the listing, then the resumed one
    # When the jobs fill the last page exactly, one empty page ends the listing.
    exact = listing(make_provider(sandbox, credentials, page_limit=5))
    assert [len(p.records) for p in exact] == [5, 5, 5, 5, 0]
    with pytest.raises(InvalidCursor):
        listing(provider, "not-an-offset")
    with pytest.raises(KeyError):
        next(provider.iter_pages("product-import"))


def test_the_offset_soft_limit_ends_the_window(sandbox: SandboxClient) -> None:
    described, credentials = make_store(sandbox, seed=8, jobs_per_kind=2_030)
    provider = make_provider(sandbox, credentials)
    pages = listing(provider)
    assert len(pages) == 101  # offsets 0 .. 10,000
    assert pages[-1].window_truncated and pages[-1].next_cursor is None
    assert not any(p.window_truncated for p in pages[:-1])
    assert sum(len(p.records) for p in pages) == 10_100  # of 10,150: the rest out of reach
    assert all(e["status"] == 200 for e in sandbox.requests(described["id"]))


# --- tokens --------------------------------------------------------------------------------


def test_a_token_expiring_mid_listing_is_renewed_after_one_401(sandbox: SandboxClient) -> None:
    described, credentials = make_store(sandbox, seed=4, jobs_per_kind=6, token_lifetime=5)
    account = described["id"]
    provider = make_provider(sandbox, credentials, page_limit=10)
    pages = provider.iter_pages(LISTING)
    seen = [r.external_id for r in next(pages).records]
    sandbox.clock(account, advance=6)  # the store's clock passes the token's end
    for page in pages:
        seen += [r.external_id for r in page.records]
    assert len(set(seen)) == 30
    log = sandbox.requests(account)
    assert [e["status"] for e in log] == [200, 200, 401, 200, 200, 200, 200]
    assert [e["path"] for e in log][:4] == [
        "/oauth/access_token",
        "/pcm/jobs",
        "/pcm/jobs",
        "/oauth/access_token",
    ]
    assert log[2]["query_string"] == log[4]["query_string"]  # the same page, asked again
    assert provider.token_requests == 2


def test_a_short_lived_token_is_renewed_before_it_expires(
    sandbox: SandboxClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store's clock (frozen) and the provider's (its module's `time`) move together,
    # by the test's hand: no sleep, so no busy machine can let the token run out first.
    described, credentials = make_store(sandbox, seed=4, jobs_per_kind=1, token_lifetime=2)
    now = [time.monotonic()]
    fake_time = SimpleNamespace(monotonic=lambda: now[0], time=time.time)
    monkeypatch.setattr(oauth, "time", fake_time)

    def advance(seconds: float) -> None:
        now[0] += seconds
        sandbox.clock(described["id"], advance=seconds)

    provider = make_provider(sandbox, credentials, page_limit=2)
    pages = provider.iter_pages(LISTING)
    first = next(pages)
    advance(1.7)  # more than a tenth of its life left: kept
    second = next(pages)
    advance(0.2)  # under a tenth left, yet still valid: renewed now
    rest = list(pages)
    assert sum(len(p.records) for p in [first, second, *rest]) == 5
    log = sandbox.requests(described["id"])
    assert 401 not in [e["status"] for e in log]
    assert [e["path"] for e in log] == [
        "/oauth/access_token",
        "/pcm/jobs",
        "/pcm/jobs",
        "/oauth/access_token",
        "/pcm/jobs",
    ]


def test_revoked_secret_fails_after_exactly_one_renewal_and_never_leaks(
    sandbox: SandboxClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    described, credentials = make_store(sandbox, seed=6, jobs_per_kind=2)
    account = described["id"]
    provider = make_provider(sandbox, credentials, page_limit=3)
    first = next(provider.iter_pages(LISTING))
    token = provider.client.auth_headers["Authorization"].split(" ", 1)[1]
    sandbox.control(account, "revoke")
    with pytest.raises(AuthError) as failure:
        listing(provider, first.next_cursor)
    message = str(failure.value)
    assert message.startswith("authentication failed")
    assert "invalid client credentials" in message  # the provider's own words reach staff
    log = sandbox.requests(account)
    assert [(e["path"], e["status"]) for e in log] == [
        ("/oauth/access_token", 200),
        ("/pcm/jobs", 200),
        ("/pcm/jobs", 401),
        ("/oauth/access_token", 401),  # exactly one renewal attempt
    ]
    shown = message + caplog.text + repr(failure.value.__dict__)
    for secret in (credentials["client_secret"], credentials["client_id"], token):
        assert secret not in shown
    assert credentials["client_secret"] not in repr(log)  # the sandbox log masks it too
    # Issued tokens join the credentials the client scrubs from every text it makes.
    assert provider.client.redact(f"Bearer {token}") == "Bearer [redacted]"
    # The secret went in the form body only, never in a header or the query.
    assert all(
        credentials["client_secret"] not in json.dumps(e["headers"]) + e["query_string"]
        for e in log
    )


def test_a_fresh_token_refused_again_is_an_authentication_failure(
    sandbox: SandboxClient,
) -> None:
    described, credentials = make_store(sandbox, seed=1, jobs_per_kind=1)
    sandbox.control(described["id"], "set_token_lifetime", seconds=0)  # dead on arrival
    provider = make_provider(sandbox, credentials)
    refused_again = r"^authentication failed: .* just issued \(HTTP 401: Unauthorized: the access"
    with pytest.raises(AuthError, match=refused_again):
        listing(provider)
    log = sandbox.requests(described["id"])
    assert [(e["path"], e["status"]) for e in log] == [
        ("/oauth/access_token", 200),
        ("/pcm/jobs", 401),
        ("/oauth/access_token", 200),
        ("/pcm/jobs", 401),
    ]


def test_a_malformed_key_is_an_authentication_failure(sandbox: SandboxClient) -> None:
    provider = make_provider(sandbox, {"client_id": "", "client_secret": "some-secret"})
    with pytest.raises(AuthError, match=r"^authentication failed: .*HTTP 400") as failure:
        provider.check_credentials()
    assert "grant_type and client_id are required" in str(failure.value)
    assert "some-secret" not in str(failure.value)


# --- errors, rate limits, hosts --------------------------------------------------------


def test_error_text_carries_detail_and_request_id(sandbox: SandboxClient) -> None:
    described, credentials = make_store(sandbox)
    provider = make_provider(sandbox, credentials)
    with pytest.raises(NotFound) as missing:
        next(provider.iter_errors("product-import", "no-such-job"))
    (entry,) = [e for e in sandbox.requests(described["id"]) if e["status"] == 404]
    request_id = json.loads(entry["response_body"])["errors"][0]["request_id"]
    assert "Not Found: job not found" in str(missing.value)
    assert f"request_id {request_id}" in str(missing.value)


def test_429_without_retry_after_is_backed_off_and_the_listing_completes(
    sandbox: SandboxClient,
) -> None:
    described, credentials = make_store(
        sandbox, seed=9, jobs_per_kind=3, rate_limits=True, requests_per_second=3
    )
    provider = ElasticPathProvider(
        credentials,
        base_url=sandbox.base_url("elasticpath"),
        options={"page_limit": 2},
        retry=RetryPolicy(max_attempts=8, backoff_base=0.3, backoff_cap=1.0),
        outbound=OutboundPolicy.development(),
    )
    records = [r for page in listing(provider) for r in page.records]
    assert len({r.external_id for r in records}) == 15
    log = sandbox.requests(described["id"])
    limited = [e for e in log if e["status"] == 429]
    assert limited
    assert all("Retry-After" not in e["response_headers"] for e in limited)
    assert provider.client.counters.rate_limit_waits == len(limited)
    assert_log_validates(log)


def test_registry_regions_and_listing_contract() -> None:
    assert get_provider("elasticpath") is ElasticPathProvider
    assert ElasticPathProvider.listing_names() == (LISTING,)
    assert {k.name for k in ElasticPathProvider.kinds} == TYPES
    assert all(k.listable for k in ElasticPathProvider.kinds)
    assert ElasticPathProvider.default_base_url() == "https://euwest.api.elasticpath.com"
    assert set(ElasticPathProvider.base_urls) == {"euwest", "useast"}
    assert {
        url.split("//")[1] for url in ElasticPathProvider.base_urls.values()
    } == ElasticPathProvider.documented_hosts
    credentials = {"client_id": "client-id-1", "client_secret": "client-secret-1"}
    assert ElasticPathProvider.secret_values(credentials) == ["client-id-1", "client-secret-1"]
    assert ElasticPathProvider(credentials).client.rate_limits["default"].windows == ((25, 1.0),)
    production = ElasticPathProvider(credentials, rate_limits={"default": RateLimit(((100, 1),))})
    assert production.client.rate_limits["default"].windows == ((100, 1.0),)
