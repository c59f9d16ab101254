"""The Fullstory provider against the sandbox over real HTTP on loopback."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from providers import get_provider
from providers.base import Status
from providers.errors import (
    AccessDenied,
    AuthError,
    BadResponse,
    BadTime,
    NotFound,
    NotReady,
    RateLimited,
    TransientError,
)
from providers.fullstory import EVENTS, USERS, FullstoryProvider, map_status
from providers.http import RetryPolicy
from providers.outbound import OutboundPolicy
from providers.sandbox.client import SandboxClient
from tests.factories import events, users
from tests.openapi_check import request_errors, response_errors

SPEC = "fullstory-batch"
FAST_RETRY = RetryPolicy(backoff_base=0.01, backoff_cap=0.05)


class Org:
    """A sandbox Fullstory org, created over `/_sandbox/`, fed batches over its real API."""

    def __init__(self, sandbox: SandboxClient, **options: Any) -> None:
        options.setdefault("frozen", True)
        options.setdefault("rate_limits", False)
        self.sandbox = sandbox
        described = sandbox.create_account("fullstory", **options)
        self.id = described["id"]
        self.key = described["credentials"]["api_key"]
        self.base_url = sandbox.base_url("fullstory")

    def provider(self, key: str | None = None, **kwargs: Any) -> FullstoryProvider:
        kwargs.setdefault("retry", FAST_RETRY)
        kwargs.setdefault("outbound", OutboundPolicy.development())  # the sandbox: loopback
        return FullstoryProvider(
            {"api_key": self.key if key is None else key}, base_url=self.base_url, **kwargs
        )

    def create(
        self, kind: str, objects: list[dict[str, Any]], idempotency_key: str | None = None
    ) -> str:
        """POST a batch as a Fullstory client would; returns the job id to track."""
        segment = "events" if kind == EVENTS else "users"
        headers = {"Authorization": f"Basic {self.key}"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        response = requests.post(
            f"{self.base_url}/v2/{segment}/batch",
            json={"requests": objects},
            headers=headers,
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response.json()["job"]["id"]

    def advance(self, seconds: float) -> None:
        self.sandbox.clock(self.id, advance=seconds)

    def truth(self, job_id: str) -> dict[str, Any]:
        return next(j for j in self.sandbox.state(self.id)["jobs"] if j["id"] == job_id)

    def log(self) -> list[dict[str, Any]]:
        return self.sandbox.requests(self.id)


def track_until_done(
    org: Org, provider: FullstoryProvider, jobs: dict[str, str], step: float = 10
) -> dict[str, Any]:
    """Poll every tracked id, moving the org's clock on, until every batch has ended."""
    records: dict[str, Any] = {}
    for _ in range(20):
        records = {job_id: provider.fetch_job(kind, job_id) for job_id, kind in jobs.items()}
        if all(r.is_terminal for r in records.values()):
            return records
        org.advance(step)
    raise AssertionError("batches never ended")


# --- the required end-to-end session ------------------------------------------------------


def test_realistic_session_validates_against_the_spec(sandbox: SandboxClient) -> None:
    """Create batches, track them to the end, read their errors; then check every
    request the provider sent and every answer the sandbox gave against the spec."""
    org = Org(
        sandbox,
        omit_zero_errors=False,  # the schema requires `errors`; see the departure test below
        page_size=3,
        processing_seconds=20,
        rate_limits=True,
        requests_per_second=8,
        burst=(1000, 10),
    )
    provider = org.provider()
    provider.check_credentials()
    assert [list(provider.iter_pages(kind.name)) for kind in provider.kinds] == [[], []]

    jobs = {
        org.create(EVENTS, events(10, {1, 4, 5, 7, 8, 9, 0}), idempotency_key="ev-1"): EVENTS,
        org.create(USERS, users(4, range(4))): USERS,
        org.create(USERS, users(6)): USERS,
    }
    first = provider.fetch_job(EVENTS, next(iter(jobs)))
    assert first.status is Status.RUNNING
    with pytest.raises(NotReady):
        list(provider.iter_errors(EVENTS, first.external_id))

    records = track_until_done(org, provider, jobs)
    by_status = {r.status: r for r in records.values()}
    assert set(by_status) == {Status.PARTIALLY_FAILED, Status.FAILED, Status.SUCCEEDED}
    errors = {
        r.external_id: list(provider.iter_errors(r.kind, r.external_id))
        for r in records.values()
        if r.status in (Status.PARTIALLY_FAILED, Status.FAILED)
    }
    assert sorted(len(e) for e in errors.values()) == [4, 7]

    with pytest.raises(NotFound):
        provider.fetch_job(USERS, "no-such-batch")
    # A burst of polls runs into the per-second limit: 429, Retry-After, waited out.
    for _ in range(12):
        provider.fetch_job(EVENTS, first.external_id)
    assert provider.client.counters.rate_limit_waits >= 1
    # A key rotated away is refused (401 in Fullstory's envelope).
    sandbox.control(org.id, "rotate")
    with pytest.raises(AuthError):
        provider.fetch_job(EVENTS, first.external_id)

    log = org.log()
    seen = {e["status"] for e in log}
    assert {200, 202, 401, 404, 429} <= seen
    provider_requests = [e for e in log if e["method"] == "GET"]
    assert len(provider_requests) >= 25
    for entry in log:
        assert request_errors(SPEC, entry) == [], entry
        assert response_errors(SPEC, entry) == [], entry
    for entry in provider_requests:
        assert entry["headers"]["Authorization"] == "Basic [redacted]"


def test_the_one_schema_departure_is_the_documented_missing_errors_count(
    sandbox: SandboxClient,
) -> None:
    """By default the sandbox leaves `errors` out when zero, as Fullstory documents; the
    provider reads that as 0, and it is the only thing the validator objects to."""
    org = Org(sandbox, processing_seconds=0)
    job_id = org.create(USERS, users(3))
    record = org.provider().fetch_job(USERS, job_id)
    assert "errors" not in record.raw
    assert (record.status, record.failed_count, record.completed_count) == (
        Status.SUCCEEDED,
        0,
        3,
    )
    (entry,) = [e for e in org.log() if e["method"] == "GET"]
    problems = response_errors(SPEC, entry)
    assert len(problems) == 1 and "'errors' is a required property" in problems[0]
    assert request_errors(SPEC, entry) == []


# --- status, counts, times --------------------------------------------------------------


def test_statuses_counts_and_times_follow_the_batch(sandbox: SandboxClient) -> None:
    org = Org(sandbox, processing_seconds=30)
    provider = org.provider()
    partial = org.create(EVENTS, events(8, {2, 3}))
    total = org.create(USERS, users(5, range(5)))
    clean = org.create(EVENTS, events(4))
    jobs = {partial: EVENTS, total: USERS, clean: EVENTS}

    running = provider.fetch_job(EVENTS, partial)
    assert running.status is Status.RUNNING and running.provider_status == "PROCESSING"
    assert running.total_count is None and running.completed_at is None
    assert not running.is_terminal
    truth = org.truth(partial)
    assert running.created_at == FullstoryProvider.read_time(truth["created"], "job.created")
    assert running.created_at is not None and running.created_at.tzinfo is not None

    records = track_until_done(org, provider, jobs)
    expected = {
        partial: (Status.PARTIALLY_FAILED, "FAILED", 8, 6, 2),
        total: (Status.FAILED, "FAILED", 5, 0, 5),
        clean: (Status.SUCCEEDED, "COMPLETED", 4, 4, 0),
    }
    for job_id, record in records.items():
        truth = org.truth(job_id)
        assert (
            record.status,
            record.provider_status,
            record.total_count,
            record.completed_count,
            record.failed_count,
        ) == expected[job_id]
        assert (record.completed_count, record.failed_count) == (truth["imports"], truth["errors"])
        assert record.kind == jobs[job_id] and record.external_id == job_id
        assert record.completed_at == FullstoryProvider.read_time(truth["finished"], "job.finished")
        assert record.created_at == FullstoryProvider.read_time(truth["created"], "job.created")
        assert record.raw["job"]["id"] == job_id
        assert record.errors is None  # fetched separately, once the batch has failed


def test_every_error_record_across_pages(sandbox: SandboxClient) -> None:
    org = Org(sandbox, page_size=4, processing_seconds=5)
    provider = org.provider()
    failing = {0, 3, 4, 7, 9, 10, 11, 15, 16, 19, 21}
    events_job = org.create(EVENTS, events(22, failing))
    users_job = org.create(USERS, users(9, {1, 2, 8}))
    with pytest.raises(NotReady, match="still processing"):
        list(provider.iter_errors(USERS, users_job))
    org.advance(5)

    records = list(provider.iter_errors(EVENTS, events_job))
    assert len(records) == org.truth(events_job)["error_count"] == 11
    assert [r.raw["event"]["properties"]["order"] for r in records] == sorted(failing)
    assert {r.code for r in records} == {"invalid_argument"}
    assert all("jobcenter_fail" in r.message for r in records)
    assert records[0].external_id == "customer-0" and records[0].title == "Order Completed"
    assert records[0].source == "event"
    pages = [e for e in org.log() if e["path"].endswith(f"{events_job}/errors")]
    assert len([p for p in pages if p["status"] == 200]) == math.ceil(11 / 4)
    assert "page_token=" in pages[-1]["query_string"]

    user_errors = list(provider.iter_errors(USERS, users_job))
    assert [r.external_id for r in user_errors] == ["customer-1", "customer-2", "customer-8"]
    assert user_errors[0].title == "Customer 1" and user_errors[0].source == "user"
    assert user_errors[0].raw["user"]["email"] == "customer-1@example.com"


def test_seeded_world_syncs_to_the_sandbox_state(sandbox: SandboxClient) -> None:
    org = Org(sandbox, seed=9, jobs_per_kind=6, page_size=7)
    provider = org.provider()
    for job in sandbox.state(org.id)["jobs"]:
        record = provider.fetch_job(job["kind"], job["id"])
        assert record.provider_status == job["status"]
        assert record.completed_count == job["imports"]
        assert record.failed_count == job["errors"]
        if record.status in (Status.FAILED, Status.PARTIALLY_FAILED):
            assert len(list(provider.iter_errors(job["kind"], job["id"]))) == job["error_count"]
            assert (record.status is Status.FAILED) == (job["imports"] == 0)


# --- errors -----------------------------------------------------------------------------


def test_unknown_id_is_not_found_with_fullstorys_message_after_one_request(
    sandbox: SandboxClient,
) -> None:
    org = Org(sandbox)
    provider = org.provider()
    with pytest.raises(NotFound) as caught:
        provider.fetch_job(EVENTS, "gone-batch-42")
    message = str(caught.value)
    assert "gone-batch-42" in message
    assert "resource_not_found: Requested resource does not exist" in message
    assert caught.value.status_code == 404
    assert len(org.log()) == 1  # a 404 is final: no retries
    with pytest.raises(NotFound):
        list(provider.iter_errors(USERS, "gone-batch-42"))
    with pytest.raises(NotFound):
        provider.fetch_job(USERS, "  ")
    assert len(org.log()) == 2


def test_wrong_key_is_an_auth_error_without_the_key(sandbox: SandboxClient) -> None:
    org = Org(sandbox)
    org.provider().check_credentials()
    assert [e["status"] for e in org.log()] == [404, 404]  # both probes: key accepted

    wrong = "na1.this-key-does-not-exist-anywhere"
    with pytest.raises(AuthError) as caught:
        org.provider(key=wrong).check_credentials()
    assert "authentication failed" in str(caught.value)
    assert "unauthorized" in str(caught.value)
    assert wrong not in str(caught.value)
    assert not isinstance(caught.value, AccessDenied)

    with pytest.raises(AuthError, match="no Fullstory API key"):
        org.provider(key="").check_credentials()

    sandbox.control(org.id, "revoke")
    with pytest.raises(AuthError) as caught:
        org.provider().fetch_job(EVENTS, "anything")
    assert org.key not in str(caught.value)


def test_a_standard_key_is_told_it_cannot_read_results(sandbox: SandboxClient) -> None:
    org = Org(sandbox, permission="standard")
    with pytest.raises(AccessDenied, match="Admin or Architect"):
        org.provider().check_credentials()


def test_429_retry_after_is_honoured_or_raised(sandbox: SandboxClient) -> None:
    org = Org(sandbox, rate_limits=True, requests_per_second=2, processing_seconds=0)
    job_id = org.create(USERS, users(1))
    patient = org.provider()
    counters = patient.client.counters
    for _ in range(100):  # until throttled once, however slowly a busy machine sends them
        assert patient.fetch_job(USERS, job_id).status is Status.SUCCEEDED
        if counters.rate_limit_waits:
            break
    assert counters.rate_limit_waits >= 1
    limited = [e for e in org.log() if e["status"] == 429]
    assert limited and all(e["response_headers"]["Retry-After"] == "1" for e in limited)
    # Each wait lasted at least what Retry-After asked for.
    assert counters.waited_seconds >= counters.rate_limit_waits * 1.0

    hasty = org.provider(retry=RetryPolicy(max_inline_retry_after=0.5))
    with pytest.raises(RateLimited) as caught:
        for _ in range(100):
            hasty.fetch_job(USERS, job_id)
    assert caught.value.retry_after == 1.0
    assert "too_many_requests" in str(caught.value)


def test_server_errors_are_retried_then_transient(sandbox: SandboxClient) -> None:
    org = Org(sandbox, processing_seconds=0)
    job_id = org.create(EVENTS, events(2))
    provider = org.provider()
    sandbox.control(org.id, "fail_next", count=2)
    assert provider.fetch_job(EVENTS, job_id).status is Status.SUCCEEDED
    assert provider.client.counters.retries == 2
    sandbox.control(org.id, "fail_next", count=10)
    with pytest.raises(TransientError, match="server_error: Server error was encountered"):
        provider.fetch_job(EVENTS, job_id)


def test_no_credentials_in_logs(sandbox: SandboxClient, caplog: pytest.LogCaptureFixture) -> None:
    org = Org(sandbox, processing_seconds=0)
    job_id = org.create(EVENTS, events(1, {0}))
    sandbox.control(org.id, "fail_next", count=1)
    with caplog.at_level(logging.DEBUG, logger="providers"):
        provider = org.provider()
        provider.fetch_job(EVENTS, job_id)
        list(provider.iter_errors(EVENTS, job_id))
    assert caplog.records
    assert org.key not in caplog.text


# --- the class-level facts and the pure mapping -----------------------------------------


def test_registry_hosts_and_headers() -> None:
    assert get_provider("fullstory") is FullstoryProvider
    assert FullstoryProvider.default_base_url() == "https://api.fullstory.com"
    assert FullstoryProvider.base_urls["eu1"] == "https://api.eu1.fullstory.com"
    assert FullstoryProvider.listing_names() == ()
    assert [k.name for k in FullstoryProvider.kinds] == [EVENTS, USERS]
    provider = FullstoryProvider({"api_key": "na1.abc"})
    assert provider.base_url == "https://api.fullstory.com"
    assert provider.client.auth_headers == {"Authorization": "Basic na1.abc"}
    pasted = FullstoryProvider({"api_key": "Basic na1.abc"})
    assert pasted.client.auth_headers == {"Authorization": "Basic na1.abc"}
    eu = FullstoryProvider({"api_key": "eu1.abc"}, base_url=FullstoryProvider.base_urls["eu1"])
    assert (
        eu.client.url_for("/v2/users/batch/x") == "https://api.eu1.fullstory.com/v2/users/batch/x"
    )
    assert provider.secret_values({"api_key": "na1.abc"}) == ["na1.abc"]
    with pytest.raises(KeyError):
        list(provider.iter_pages("orders"))


@pytest.mark.parametrize(
    ("status", "imports", "errors", "expected"),
    [
        ("PROCESSING", 0, 0, Status.RUNNING),
        ("COMPLETED", 5, 0, Status.SUCCEEDED),
        ("FAILED", 3, 2, Status.PARTIALLY_FAILED),
        ("FAILED", 0, 4, Status.FAILED),
        ("FAILED", 0, 0, Status.FAILED),  # taken at its word
        ("COMPLETED", 3, 1, Status.PARTIALLY_FAILED),  # counts win: failures stay visible
        ("failed", 1, 1, Status.PARTIALLY_FAILED),  # case-insensitive
        ("UNKNOWN", 0, 0, Status.UNKNOWN),  # the proto zero value
        ("PENDING", 0, 0, Status.UNKNOWN),  # a value the spec does not know
    ],
)
def test_status_mapping(status: str, imports: int, errors: int, expected: Status) -> None:
    assert map_status(status, imports, errors) is expected


def test_status_answers_the_sandbox_cannot_give() -> None:
    """Shapes no correct server sends, so the sandbox never does: parsed defensively."""
    provider = FullstoryProvider({"api_key": "na1.abc"})
    unknown = provider.job_record(EVENTS, {"job": {"id": "j", "status": "UNKNOWN"}}, "j")
    assert (unknown.status, unknown.provider_status) == (Status.UNKNOWN, "UNKNOWN")
    assert (unknown.completed_count, unknown.failed_count, unknown.total_count) == (0, 0, None)
    as_strings = provider.job_record(
        USERS, {"imports": "7", "errors": "1", "job": {"id": "j", "status": "FAILED"}}, "j"
    )
    assert (as_strings.status, as_strings.total_count) == (Status.PARTIALLY_FAILED, 8)
    for body in ({}, {"job": {"id": "j"}}, [], {"imports": "x", "job": {"status": "FAILED"}}):
        with pytest.raises(BadResponse):
            provider.job_record(EVENTS, body, "j")


def test_times_are_read_as_protobuf_writes_them_and_a_naive_one_is_refused() -> None:
    def read(value: object) -> datetime | None:
        return FullstoryProvider.read_time(value, "job.created")

    assert read("2024-05-01T10:00:00Z") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert read("2024-05-01T10:00:00.123456789Z") == datetime(
        2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC
    )
    assert read("2017-01-15T01:30:15.01Z") == datetime(2017, 1, 15, 1, 30, 15, 10000, tzinfo=UTC)
    assert read(None) is None
    for value in ("yesterday", "2024-05-01T10:00:00", 1714557600):  # no zone: not guessed
        with pytest.raises(BadTime, match=r"Fullstory's job\.created"):
            read(value)
