"""KlaviyoProvider against the Klaviyo sandbox over real HTTP (and its spec)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter

from providers import get_provider
from providers.base import JobRecord, Status
from providers.errors import AuthError, BadResponse, InvalidCursor, NotFound, RateLimited
from providers.http import LocalTokenBucketStore, RetryPolicy
from providers.klaviyo import KlaviyoProvider, job_record
from providers.outbound import OutboundPolicy
from providers.sandbox.client import SandboxClient
from tests.openapi_check import request_errors, response_errors

SPEC = "klaviyo-jobs"
CATALOG = "catalog-item-bulk-create-job"
COUPON = "coupon-code-bulk-create-job"
IMPORT = "profile-bulk-import-job"
SUPPRESSION = "profile-suppression-bulk-create-job"
ALL_KINDS = {
    *(
        f"catalog-{obj}-bulk-{op}-job"
        for obj in ("item", "variant", "category")
        for op in ("create", "update", "delete")
    ),
    COUPON,
    IMPORT,
    SUPPRESSION,
    "profile-suppression-bulk-delete-job",
}
NO_RETRY = RetryPolicy(max_attempts=1)


def new_account(sandbox: SandboxClient, **options: Any) -> dict[str, Any]:
    options = {"seed": 1, "jobs_per_kind": 0, "frozen": True, "rate_limits": False, **options}
    return sandbox.create_account("klaviyo", **options)


def provider_for(
    sandbox: SandboxClient, described: dict[str, Any], **kwargs: Any
) -> KlaviyoProvider:
    credentials = kwargs.pop("credentials", described["credentials"])
    kwargs.setdefault("outbound", OutboundPolicy.development())  # the sandbox is on loopback
    return KlaviyoProvider(credentials, base_url=sandbox.base_url("klaviyo"), **kwargs)


def list_all(provider: KlaviyoProvider, kind: str) -> list[JobRecord]:
    return [record for page in provider.iter_pages(kind) for record in page.records]


def when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@pytest.fixture(scope="module")
def world(sandbox: SandboxClient) -> dict[str, Any]:
    """One seeded account (two pages of every catalog kind), listed once, with its state."""
    described = new_account(sandbox, seed=5, jobs_per_kind=130)
    provider = provider_for(sandbox, described)
    records = {kind: list_all(provider, kind) for kind in provider.listing_names()}
    return {
        "described": described,
        "provider": provider,
        "records": records,
        "state": sandbox.state(described["id"]),
    }


# --- listing and mapping ---------------------------------------------------------------


def test_the_registry_knows_thirteen_listable_kinds() -> None:
    assert get_provider("klaviyo") is KlaviyoProvider
    assert {k.name for k in KlaviyoProvider.kinds} == ALL_KINDS
    assert set(KlaviyoProvider.listing_names()) == ALL_KINDS
    assert all(k.listable and k.rate_tier == k.name for k in KlaviyoProvider.kinds)
    limits = KlaviyoProvider.rate_limits
    assert limits[IMPORT].windows == ((10, 1), (150, 60))
    assert limits[CATALOG].windows == ((75, 1), (750, 60))
    assert limits["catalog-category-bulk-create-job"].windows == ((350, 1), (3500, 60))
    assert limits["profile-bulk-import-job:import-errors"].windows == ((10, 1), (150, 60))


def test_every_kind_is_listed_equal_to_the_sandbox_state(world) -> None:
    records: dict[str, list[JobRecord]] = world["records"]
    state = world["state"]["jobs"]
    assert set(records) == ALL_KINDS
    for kind, listed in records.items():
        expected = [j for j in state if j["kind"] == kind]
        assert [r.external_id for r in listed] == [j["id"] for j in expected], kind
        for record, job in zip(listed, expected, strict=True):
            assert record.kind == kind
            assert record.provider_status == job["status"]
            assert record.total_count == job["total_count"]
            assert record.completed_count == job["completed_count"]
            assert record.failed_count == job["failed_count"]
            assert record.created_at == when(job["created_at"])
            assert record.completed_at == when(job["completed_at"])
            assert record.expires_at == when(job["expires_at"])
            assert record.created_at.tzinfo is not None
            assert record.raw["id"] == job["id"] and record.raw["type"] == kind
            if kind == IMPORT:
                assert record.started_at == when(job["started_at"])
            if kind.startswith("profile-suppression"):
                assert record.failed_count is None
                assert record.raw["attributes"]["skipped_count"] == job["skipped_count"]
            if kind.startswith(("catalog-", "coupon-")):
                assert record.errors is not None
                assert len(record.errors) == job["error_count"]
            else:
                assert record.errors is None  # asked of iter_errors instead


def test_statuses_are_derived_from_counts_for_complete_jobs(world) -> None:
    seen: set[Status] = set()
    for listed in world["records"].values():
        for record in listed:
            seen.add(record.status)
            expected = {
                "queued": Status.QUEUED,
                "processing": Status.RUNNING,
                "cancelled": Status.CANCELLED,
            }.get(record.provider_status)
            if record.provider_status == "complete":
                failed = record.failed_count or 0
                expected = (
                    Status.SUCCEEDED
                    if failed == 0
                    else Status.FAILED
                    if failed == record.total_count
                    else Status.PARTIALLY_FAILED
                )
            assert record.status == expected, record.raw
    assert {
        Status.QUEUED,
        Status.RUNNING,
        Status.SUCCEEDED,
        Status.PARTIALLY_FAILED,
        Status.FAILED,
        Status.CANCELLED,
    } <= seen


def test_fetch_by_id_gives_the_listed_record(world) -> None:
    provider: KlaviyoProvider = world["provider"]
    for kind, listed in world["records"].items():
        record = listed[len(listed) // 2]
        fetched = provider.fetch_job(kind, record.external_id)
        assert fetched.digest == record.digest, kind
        assert fetched.status == record.status
    with pytest.raises(NotFound):
        provider.fetch_job(CATALOG, "01NOSUCHJOB0000000000000000")


def test_outcomes_map_to_statuses_as_the_clock_advances(sandbox) -> None:
    described = new_account(sandbox)
    provider = provider_for(sandbox, described)

    def create(kind: str, outcome: str, **extra: Any) -> str:
        return sandbox.control(
            described["id"],
            "create_jobs",
            kind=kind,
            outcome=outcome,
            queued_seconds=10,
            processing_seconds=100,
            **extra,
        )["ids"][0]

    jobs = {
        (CATALOG, "succeed"): create(CATALOG, "succeed", total_count=20),
        (CATALOG, "partial"): create(CATALOG, "partial", total_count=20, failed_count=5),
        (COUPON, "fail"): create(COUPON, "fail", total_count=7),
        (IMPORT, "cancel"): create(IMPORT, "cancel", total_count=20),
        (SUPPRESSION, "succeed"): create(SUPPRESSION, "succeed", total_count=20),
    }
    for kind, _ in jobs:
        assert provider.fetch_job(kind, jobs[(kind, _)]).status == Status.QUEUED
    sandbox.clock(described["id"], advance=40)
    running = provider.fetch_job(CATALOG, jobs[(CATALOG, "partial")])
    assert running.status == Status.RUNNING and 0 < running.completed_count < 15
    sandbox.clock(described["id"], advance=100)
    final = {key: provider.fetch_job(key[0], job_id) for key, job_id in jobs.items()}
    assert final[(CATALOG, "succeed")].status == Status.SUCCEEDED
    assert final[(CATALOG, "partial")].status == Status.PARTIALLY_FAILED
    assert (
        final[(CATALOG, "partial")].completed_count,
        final[(CATALOG, "partial")].failed_count,
    ) == (15, 5)
    assert final[(COUPON, "fail")].status == Status.FAILED
    assert len(final[(COUPON, "fail")].errors or []) == 7
    assert final[(IMPORT, "cancel")].status == Status.CANCELLED
    assert final[(SUPPRESSION, "succeed")].status == Status.SUCCEEDED
    assert final[(SUPPRESSION, "succeed")].failed_count is None
    assert all(r.is_terminal for r in final.values())


def test_status_matching_ignores_case_and_keeps_unknown_values() -> None:
    def resource(status: str, failed: int = 0) -> dict[str, Any]:
        return {
            "type": CATALOG,
            "id": "01ABC",
            "attributes": {
                "status": status,
                "created_at": "2026-07-01T10:00:00.123456+00:00",
                "total_count": 4,
                "completed_count": None,
                "failed_count": failed,
            },
            "links": {"self": "https://a.klaviyo.com/api/x/01ABC/"},
        }

    assert job_record(CATALOG, resource("COMPLETE", 1)).status == Status.PARTIALLY_FAILED
    assert job_record(CATALOG, resource("Processing")).status == Status.RUNNING
    odd = job_record(CATALOG, resource("paused"))
    assert (odd.status, odd.provider_status) == (Status.UNKNOWN, "paused")
    assert odd.completed_count == 0  # null means none yet (the spec's default)
    assert odd.errors is None  # the payload carried no errors attribute
    with pytest.raises(BadResponse):
        job_record(CATALOG, {"type": CATALOG, "id": "01ABC"})
    with pytest.raises(BadResponse):
        job_record(CATALOG, {**resource("queued"), "type": COUPON})


# --- errors ----------------------------------------------------------------------------


def test_errors_inline_paged_or_none_by_kind(sandbox) -> None:
    described = new_account(sandbox)
    provider = provider_for(sandbox, described)

    def create(kind: str, **payload: Any) -> str:
        return sandbox.control(
            described["id"],
            "create_jobs",
            kind=kind,
            queued_seconds=0,
            processing_seconds=1,
            **payload,
        )["ids"][0]

    catalog = create(CATALOG, outcome="partial", total_count=30, failed_count=12)
    imported = create(IMPORT, outcome="partial", total_count=1000, failed_count=250)
    suppression = create(SUPPRESSION, outcome="succeed")
    sandbox.clock(described["id"], advance=5)

    errors = list(provider.iter_errors(CATALOG, catalog))
    assert len(errors) == 12
    assert all(e.message and e.code and e.title and e.source.startswith("/data/") for e in errors)
    assert len({e.external_id for e in errors}) == 12

    before = provider.client.counters.requests
    import_errors = list(provider.iter_errors(IMPORT, imported))
    assert provider.client.counters.requests - before == 3  # 100 + 100 + 50
    assert len(import_errors) == 250
    assert len({e.external_id for e in import_errors}) == 250
    assert all(e.raw["attributes"]["original_payload"] for e in import_errors)
    assert all(e.message for e in import_errors)

    assert list(provider.iter_errors(SUPPRESSION, suppression)) == []
    state = {j["id"]: j for j in sandbox.state(described["id"])["jobs"]}
    assert state[catalog]["error_count"] == 12 and state[imported]["error_count"] == 250


def test_a_wrong_or_revoked_key_is_an_auth_error_that_names_no_key(sandbox) -> None:
    described = new_account(sandbox, jobs_per_kind=1)
    wrong_key = "pk_" + "0123456789abcdef" * 2 + "ff"
    wrong = provider_for(sandbox, described, credentials={"api_key": wrong_key})
    with pytest.raises(AuthError) as caught:
        wrong.check_credentials()
    text = str(caught.value)
    assert "authentication failed" in text
    assert "Incorrect authentication credentials" in text
    assert wrong_key not in text
    assert wrong.client.counters.requests == 1  # never retried

    right = provider_for(sandbox, described)
    right.check_credentials()
    sandbox.control(described["id"], "revoke")
    with pytest.raises(AuthError, match="authentication_failed"):
        list(right.iter_pages(CATALOG))


# --- cursors ---------------------------------------------------------------------------


def test_a_later_run_resumes_from_the_saved_cursor(sandbox) -> None:
    described = new_account(sandbox, jobs_per_kind=250)
    first_run = provider_for(sandbox, described)
    first_page = next(first_run.iter_pages(CATALOG))
    cursor = first_page.next_cursor
    assert cursor and cursor.startswith(sandbox.base_url("klaviyo") + f"/api/{CATALOG}s?")

    later = provider_for(sandbox, described)
    pages = list(later.iter_pages(CATALOG, cursor))
    assert [len(p.records) for p in pages] == [100, 50]
    assert pages[-1].next_cursor is None
    assert later.client.counters.requests == 2
    ids = [r.external_id for r in first_page.records] + [
        r.external_id for p in pages for r in p.records
    ]
    expected = [j["id"] for j in sandbox.state(described["id"])["jobs"] if j["kind"] == CATALOG]
    assert ids == expected


def test_refused_or_foreign_cursors_are_invalid_cursors(sandbox) -> None:
    described = new_account(sandbox, jobs_per_kind=150)
    provider = provider_for(sandbox, described)
    cursor = next(provider.iter_pages(CATALOG)).next_cursor
    assert cursor

    tampered = re.sub(r"(page%5Bcursor%5D=)[^&]+", r"\1bm90LWEtY3Vyc29y", cursor)
    with pytest.raises(InvalidCursor, match="Invalid page cursor"):
        list(provider.iter_pages(CATALOG, tampered))

    before = provider.client.counters.requests
    with pytest.raises(InvalidCursor):  # a cursor of another list: refused before sending
        list(provider.iter_pages("catalog-item-bulk-update-job", cursor))
    with pytest.raises(InvalidCursor):  # ... or of another origin
        list(provider.iter_pages(CATALOG, cursor.replace("127.0.0.1", "localhost")))
    assert provider.client.counters.requests == before

    sandbox.clock(described["id"], advance=4 * 86400)  # Klaviyo's cursors expire
    with pytest.raises(InvalidCursor, match="expired"):
        list(provider.iter_pages(CATALOG, cursor))
    visible = [j["id"] for j in sandbox.state(described["id"])["jobs"] if j["kind"] == CATALOG]
    assert [r.external_id for r in list_all(provider, CATALOG)] == visible  # starting again


def test_a_next_link_to_another_host_is_not_followed(sandbox) -> None:
    described = new_account(sandbox, jobs_per_kind=120)
    # The same sandbox under another origin: had the client followed it, the log would say.
    foreign = sandbox.base_url("klaviyo").replace("127.0.0.1", "localhost")
    sandbox.control(described["id"], "set_link_base", url=foreign)
    provider = provider_for(sandbox, described)
    with pytest.raises(BadResponse, match="another host"):
        list(provider.iter_pages(CATALOG))
    assert provider.client.counters.requests == 1
    log = sandbox.requests(described["id"])
    assert len(log) == 1 and "page%5Bcursor%5D" not in log[0]["query_string"]


def test_malformed_answers_are_bad_responses_with_an_excerpt() -> None:
    """What the sandbox never sends: a list without data, a spinning cursor, HTML."""

    class Canned(BaseAdapter):
        def __init__(self, bodies: list[tuple[str, str]]) -> None:
            super().__init__()
            self.bodies = bodies

        def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
            content_type, body = self.bodies.pop(0) if len(self.bodies) > 1 else self.bodies[0]
            response = requests.Response()
            response.status_code = 200
            response._content = body.encode()
            response.headers["Content-Type"] = content_type
            response.url = request.url or ""
            response.request = request
            return response

        def close(self) -> None:
            pass

    def provider_with(*bodies: tuple[str, str]) -> KlaviyoProvider:
        provider = KlaviyoProvider({"api_key": "pk_" + "a" * 34})
        provider.client.session.mount("https://a.klaviyo.com", Canned(list(bodies)))
        return provider

    api = "application/vnd.api+json"
    with pytest.raises(BadResponse) as caught:
        list(provider_with((api, '{"links": {}, "meta": {}}')).iter_pages(CATALOG))
    assert '"links"' in caught.value.excerpt
    spinning = json.dumps(
        {"data": [], "links": {"self": "x", "next": "https://a.klaviyo.com/api/x?page=2"}}
    )
    with pytest.raises(BadResponse, match="repeated"):
        list(provider_with((api, spinning)).iter_pages(CATALOG))
    with pytest.raises(BadResponse, match="instead of JSON"):
        list(provider_with(("text/html", "<html>maintenance</html>")).iter_pages(CATALOG))


# --- rate limits -----------------------------------------------------------------------


def test_a_429_is_rate_limited_with_retry_after_or_waited_out(sandbox) -> None:
    described = new_account(sandbox, rate_limits=True)
    (job_id,) = sandbox.control(described["id"], "create_jobs", kind=IMPORT)["ids"]
    impatient = provider_for(sandbox, described, retry=NO_RETRY)
    with pytest.raises(RateLimited) as caught:
        for _ in range(300):  # 10/s (150/min) on profile imports: throttled, however slow
            impatient.fetch_job(IMPORT, job_id)
    assert caught.value.retry_after is not None and caught.value.retry_after >= 1
    assert "throttled" in str(caught.value)
    patient = provider_for(sandbox, described)  # waits a short Retry-After in place
    assert patient.fetch_job(IMPORT, job_id).external_id == job_id


def test_the_token_bucket_keeps_requests_under_the_limit(sandbox) -> None:
    described = new_account(sandbox, rate_limits=True)
    (job_id,) = sandbox.control(described["id"], "create_jobs", kind=IMPORT)["ids"]
    provider = provider_for(sandbox, described, bucket_store=LocalTokenBucketStore())
    for _ in range(12):
        provider.fetch_job(IMPORT, job_id)
    assert all(e["status"] == 200 for e in sandbox.requests(described["id"]))


# --- the spec --------------------------------------------------------------------------


def test_a_realistic_session_validates_against_the_spec(sandbox) -> None:
    """List every kind, fetch by id, fetch errors, hit 400/401/404/429: every request the
    provider sent and every answer it got must match Klaviyo's OpenAPI spec."""
    described = new_account(sandbox, seed=9, jobs_per_kind=110)
    account_id = described["id"]
    (imported,) = sandbox.control(
        account_id,
        "create_jobs",
        kind=IMPORT,
        outcome="partial",
        total_count=400,
        failed_count=150,
        queued_seconds=0,
        processing_seconds=1,
    )["ids"]
    sandbox.clock(account_id, advance=2)
    provider = provider_for(sandbox, described)
    provider.check_credentials()
    listed = {kind: list_all(provider, kind) for kind in provider.listing_names()}
    for kind, records in listed.items():
        provider.fetch_job(kind, records[0].external_id)
        failed = [r for r in records if r.status in (Status.FAILED, Status.PARTIALLY_FAILED)]
        if failed:
            assert list(provider.iter_errors(kind, failed[0].external_id))
    assert len(list(provider.iter_errors(IMPORT, imported))) == 150
    with pytest.raises(NotFound):
        provider.fetch_job(COUPON, "01NOSUCHJOB0000000000000000")
    cursor = next(provider.iter_pages(CATALOG)).next_cursor or ""
    with pytest.raises(InvalidCursor):
        list(
            provider.iter_pages(CATALOG, cursor.replace("page%5Bcursor%5D=", "page%5Bcursor%5D=x"))
        )
    sandbox.control(account_id, "revoke")
    with pytest.raises(AuthError):
        provider.check_credentials()

    limited = new_account(sandbox, rate_limits=True, jobs_per_kind=1)
    impatient = provider_for(sandbox, limited, retry=NO_RETRY)
    with pytest.raises(RateLimited):
        for _ in range(300):  # until throttled, however slowly a busy machine sends them
            list(impatient.iter_pages(IMPORT))

    log = sandbox.requests(account_id) + sandbox.requests(limited["id"])
    assert {200, 400, 401, 404, 429} <= {entry["status"] for entry in log}
    assert len(log) > 40
    for entry in log:
        where = (entry["status"], entry["path"], entry["query_string"])
        assert not request_errors(SPEC, entry), (where, request_errors(SPEC, entry))
        assert not response_errors(SPEC, entry), (where, response_errors(SPEC, entry))
