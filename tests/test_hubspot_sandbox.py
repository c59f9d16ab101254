"""The HubSpot imports sandbox: does it behave like HubSpot's CRM imports API (v3)?

Every request these tests send and every answer the sandbox gives is checked against
HubSpot's official spec, read from ../shared/specs/reference-only/ (it is not licensed for
redistribution, so it is never copied into the project; the tests skip without it).
The sandbox is served by a SandboxApp holding only it, in process (the registry is not
needed): requests go through the app's dispatch, so faults and the request log apply.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from openapi_core import Config, OpenAPI
from openapi_core.testing import MockResponse

from providers.sandbox.client import SandboxClient
from providers.sandbox.core import FixedWindowLimiter, SandboxRequest
from providers.sandbox.hubspot import KIND, HubSpotSandbox
from providers.sandbox.server import SandboxApp, SandboxHTTPServer
from tests.openapi_check import SHARED_SPECS_DIR, _cause, _request

SPEC_PATH = SHARED_SPECS_DIR / "reference-only" / "hubspot-imports-v3.openapi.json"
SERVER = "https://api.hubapi.com"

pytestmark = pytest.mark.skipif(
    not SPEC_PATH.is_file(),
    reason=f"HubSpot's spec is read from {SPEC_PATH} (not redistributable) and it is absent",
)


def load_spec() -> OpenAPI:
    """The spec, with its `*/*` error content read as JSON (HubSpot answers JSON there)."""
    with open(SPEC_PATH) as fh:
        return OpenAPI.from_dict(
            json.load(fh), config=Config(extra_media_type_deserializers={"*/*": json.loads})
        )


def spec_errors(openapi: OpenAPI, entry: dict[str, Any], *, check_request: bool) -> list[str]:
    """Why a logged request or its answer breaks the spec; empty when both validate."""
    request = _request(entry, SERVER)
    with warnings.catch_warnings():  # the spec's oauth2 scheme is not checked by openapi-core
        warnings.simplefilter("ignore", UserWarning)
        errors = list(openapi.iter_request_errors(request)) if check_request else []
        response = MockResponse(
            entry["response_body"].encode(),
            status_code=entry["status"],
            headers=entry["response_headers"],
            content_type=entry["content_type"].split(";")[0],
        )
        errors += openapi.iter_response_errors(request, response)
    return [str(e) + _cause(e) for e in errors]


class Harness:
    """One in-process SandboxApp serving only HubSpot, on a limiter clock the test moves."""

    def __init__(self) -> None:
        self.wall = 1_000_000.0  # the limiter's "real time", at the start of a 10 s window
        self.app = SandboxApp(providers=())
        self.sandbox = HubSpotSandbox(FixedWindowLimiter(lambda: self.wall), lambda: self.wall)
        self.app.sandboxes["hubspot"] = self.sandbox
        self.invalid_requests: set[int] = set()  # log entries sent malformed on purpose

    def account(self, **options: Any) -> Portal:
        options = {"frozen": True, "rate_limits": False, "jobs_per_kind": 0, **options}
        return Portal(self, self.sandbox.create_account(options))

    def get(
        self, path: str, token: str | None, query: str = "", *, invalid: bool = False
    ) -> tuple[int, Any, dict[str, str]]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        request = SandboxRequest("GET", path, query, headers, b"", "http://sandbox/hubspot")
        response = self.app.dispatch(request, "hubspot")
        if invalid:
            self.invalid_requests.add(self.app.log.entries()[-1]["seq"])
        body = json.loads(response.body) if response.body else None
        return response.status, body, response.headers


class Portal:
    """One sandbox account and its token."""

    def __init__(self, harness: Harness, account: Any) -> None:
        self.harness, self.account = harness, account
        self.sandbox = harness.sandbox

    @property
    def token(self) -> str:
        return self.account.credentials["access_token"]

    def get(self, path: str, query: str = "", **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
        return self.harness.get(path, kwargs.pop("token", self.token), query, **kwargs)

    def control(self, action: str, **payload: Any) -> dict[str, Any]:
        return self.sandbox.control(self.account, action, payload)

    def advance(self, seconds: float) -> None:
        self.account.clock.advance(seconds)

    def state(self) -> dict[str, Any]:
        return self.sandbox.state(self.account)

    def job(self, import_id: str) -> dict[str, Any]:
        status, body, _ = self.get(f"/crm/v3/imports/{import_id}")
        assert status == 200, body
        return body

    def all_listed(self, limit: int = 100) -> list[dict[str, Any]]:
        """Every listed import, following `paging.next.link` as a client would."""
        status, body, _ = self.get("/crm/v3/imports", f"limit={limit}")
        assert status == 200, body
        results = body["results"]
        while "paging" in body:
            link = urlsplit(body["paging"]["next"]["link"])
            assert link.path == "/hubspot/crm/v3/imports"
            assert parse_qs(link.query)["after"] == [body["paging"]["next"]["after"]]
            status, body, _ = self.get("/crm/v3/imports", link.query)
            assert status == 200, body
            results += body["results"]
        return results

    def errors(self, import_id: str, query: str = "") -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            status, body, _ = self.get(f"/crm/v3/imports/{import_id}/errors", query)
            assert status == 200, body
            found += body["results"]
            if "paging" not in body:
                return found
            query = urlsplit(body["paging"]["next"]["link"]).query


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    return load_spec()


@pytest.fixture
def hub(openapi: OpenAPI) -> Iterator[Harness]:
    """The harness; after the test, every logged request and answer must fit the spec."""
    harness = Harness()
    yield harness
    entries = harness.app.log.entries()
    assert entries
    for entry in entries:
        if entry["response_headers"].get("X-Sandbox-Fault") in ("502", "content_type"):
            continue  # a proxy's page, not HubSpot's answer
        check = entry["seq"] not in harness.invalid_requests
        assert spec_errors(openapi, entry, check_request=check) == [], entry


def test_list_pages_newest_first_by_after_cursor_and_next_link(hub: Harness) -> None:
    portal = hub.account(seed=3, jobs_per_kind=45)
    status, first, headers = portal.get("/crm/v3/imports")
    assert status == 200 and len(first["results"]) == 10  # the default page
    assert headers["X-HubSpot-RateLimit-Max"] == "190"
    listed = portal.all_listed(limit=20)
    ids = [int(job["id"]) for job in listed]
    assert len(ids) == 45 == len(set(ids))
    assert ids == sorted(ids, reverse=True)
    created = [job["createdAt"] for job in listed]
    assert created == sorted(created, reverse=True)
    state = portal.state()
    assert [j["id"] for j in state["jobs"]] == [job["id"] for job in listed]
    for entry, job in zip(state["jobs"], listed, strict=True):
        assert entry["kind"] == KIND
        assert entry["status"] == job["state"]
        assert entry["counters"] == job["metadata"]["counters"]
        assert entry["updated_at"] == job["updatedAt"]
        assert portal.job(job["id"]) == job
    assert {"DONE", "FAILED", "PROCESSING", "DEFERRED"} <= {j["state"] for j in listed}
    # The last page carries no paging at all; a page of exactly the rest has none either.
    status, tail, _ = portal.get("/crm/v3/imports", "limit=100")
    assert len(tail["results"]) == 45 and "paging" not in tail


def test_cursor_does_not_shift_when_imports_appear_while_paging(hub: Harness) -> None:
    portal = hub.account(seed=1, jobs_per_kind=12)
    _, page, _ = portal.get("/crm/v3/imports", "limit=5")
    new = portal.control("create_jobs", count=3)["ids"]
    _, rest, _ = portal.get("/crm/v3/imports", urlsplit(page["paging"]["next"]["link"]).query)
    seen = [j["id"] for j in page["results"] + rest["results"]]
    assert len(seen) == len(set(seen)) == 10
    assert not set(new) & set(seen)
    assert [j["id"] for j in portal.all_listed()][:3] == new[::-1]


def test_an_import_moves_on_the_clock_with_counters_and_row_errors(hub: Harness) -> None:
    portal = hub.account()
    (import_id,) = portal.control(
        "create_jobs", kind=KIND, size=200, failed=20, duration=100, deferred_seconds=30
    )["ids"]
    job = portal.job(import_id)
    assert job["state"] == "STARTED" and job["metadata"]["counters"] == {}
    portal.advance(10)
    assert portal.job(import_id)["state"] == "DEFERRED"
    assert portal.errors(import_id) == []
    portal.advance(72)  # 50 s into processing
    job = portal.job(import_id)
    counters = job["metadata"]["counters"]
    assert job["state"] == "PROCESSING"
    assert counters["TOTAL_ROWS"] == 200 and counters["UNIQUE_OBJECTS_WRITTEN"] == 90
    assert counters["CREATED_OBJECTS"] + counters["UPDATED_OBJECTS"] == 90
    assert counters["PROPERTY_VALUES_EMITTED"] == 90 * 6
    assert len(portal.errors(import_id)) == 10
    assert job["updatedAt"] > job["createdAt"]
    portal.advance(60)
    job = portal.job(import_id)
    assert job["state"] == "DONE"  # a partial failure is DONE; its rows are under /errors
    assert job["metadata"]["counters"]["UNIQUE_OBJECTS_WRITTEN"] == 180
    errors = portal.errors(import_id, "includeErrorMessage=true&limit=7")
    assert len(errors) == 20 == len({e["id"] for e in errors})
    assert all(e["errorMessage"] and e["sourceData"]["lineNumber"] >= 2 for e in errors)
    entry = next(j for j in portal.state()["jobs"] if j["id"] == import_id)
    assert (entry["error_count"], entry["completed_count"], entry["total_count"]) == (20, 180, 200)


def test_failed_canceled_and_reverted_imports(hub: Harness) -> None:
    portal = hub.account()
    failed, canceled, reverted = (
        portal.control("create_jobs", outcome=outcome, size=50, failed=2, duration=40)["ids"][0]
        for outcome in ("failed", "canceled", "reverted")
    )
    portal.advance(30)  # 28 s into processing: the cancel (at 20 s) has happened
    assert portal.job(canceled)["state"] == "CANCELED"
    assert portal.job(canceled)["metadata"]["counters"]["UNIQUE_OBJECTS_WRITTEN"] == 24
    portal.advance(20)
    assert portal.job(failed)["state"] == "FAILED"
    assert portal.job(failed)["metadata"]["counters"]["UNIQUE_OBJECTS_WRITTEN"] == 0
    records = portal.errors(failed, "includeErrorMessage=true&includeRowData=true")
    assert [e["sourceData"]["lineNumber"] for e in records][-1] == 0  # the file-wide error
    assert records[-1]["sourceData"]["rowData"] == [] and len(records) == 3
    assert all(e["sourceData"]["rowData"] for e in records[:-1])
    assert portal.job(reverted)["state"] == "DONE"
    portal.advance(3700)
    assert portal.job(reverted)["state"] == "REVERTED"
    (entry,) = [j for j in portal.sandbox.timeline(portal.account) if j["id"] == reverted]
    statuses = [status for _, status in entry["statuses"]]
    assert statuses == ["STARTED", "PROCESSING", "DONE", "REVERTED"]


def test_error_records_are_shaped_by_the_include_flags(hub: Harness) -> None:
    portal = hub.account()
    (import_id,) = portal.control("create_jobs", size=30, failed=5, duration=1)["ids"]
    portal.advance(5)
    bare = portal.errors(import_id)
    assert len(bare) == 5
    assert all("errorMessage" not in e and e["sourceData"]["rowData"] == [] for e in bare)
    full = portal.errors(import_id, "includeErrorMessage=true&includeRowData=true&limit=2")
    assert [e["id"] for e in full] == [e["id"] for e in bare]
    for record in full:
        column, value = record["knownColumnNumber"], record["invalidValue"]
        assert record["sourceData"]["rowData"][column] == value
        assert record["errorType"] and record["objectTypeId"].startswith("0-")


def test_wrong_missing_revoked_and_rotated_tokens(hub: Harness) -> None:
    portal = hub.account()
    for token in (None, "pat-na1-00000000-0000-0000-0000-000000000000"):
        status, body, headers = hub.get("/crm/v3/imports", token)
        assert status == 401 and body["category"] == "INVALID_AUTHENTICATION"
        assert body["status"] == "error" and "OAuth 2.0" in body["message"]
        assert headers["X-HubSpot-Correlation-Id"] == body["correlationId"]
    old = portal.token
    portal.control("revoke")
    assert portal.get("/crm/v3/imports")[0] == 401
    assert hub.app.log.entries()[-1]["account"] == portal.account.id
    portal.control("rotate_token")
    assert portal.token != old and portal.get("/crm/v3/imports")[0] == 200
    assert portal.get("/crm/v3/imports", token=old)[0] == 401


def test_bad_parameters_are_400_and_unknown_imports_404(hub: Harness) -> None:
    portal = hub.account(jobs_per_kind=3)
    for query in ("limit=0", "limit=101", "limit=ten", "after=%%%"):
        status, body, _ = portal.get("/crm/v3/imports", query, invalid=query == "limit=ten")
        assert status == 400 and body["category"] == "VALIDATION_ERROR", query
    status, body, _ = portal.get("/crm/v3/imports/12345")
    assert status == 404 and body["category"] == "OBJECT_NOT_FOUND"
    assert portal.get("/crm/v3/imports/abc", invalid=True)[0] == 400
    assert portal.get("/crm/v3/imports/12345/errors")[0] == 404


def test_retention_expire_and_active_only_listing(hub: Harness) -> None:
    portal = hub.account(retention_days=1)
    ended, running = (
        portal.control("create_jobs", duration=seconds)["ids"][0] for seconds in (10, 3 * 86400)
    )
    portal.advance(86400 + 20)
    assert {j["id"] for j in portal.all_listed()} == {running}
    assert portal.get(f"/crm/v3/imports/{ended}")[0] == 404
    assert portal.control("expire", ids=[running, "7"]) == {"expired": [running], "unknown": ["7"]}
    assert portal.all_listed() == [] and portal.state()["jobs"] == []

    active = hub.account(list_active_only=True)
    done, busy = (active.control("create_jobs", duration=s)["ids"][0] for s in (5, 500))
    active.advance(60)
    assert [j["id"] for j in active.all_listed()] == [busy]
    assert active.job(done)["state"] == "DONE"  # still answered by id
    assert [j["listed"] for j in active.state()["jobs"]] == [True, False]


def test_rate_limits_answer_429_with_hubspot_body_and_headers(hub: Harness) -> None:
    portal = hub.account(rate_limits=True, requests_per_ten_seconds=3, daily_limit=5)
    remaining = [portal.get("/crm/v3/imports")[2]["X-HubSpot-RateLimit-Remaining"] for _ in "abc"]
    assert remaining == ["2", "1", "0"]
    status, body, headers = portal.get("/crm/v3/imports")
    assert status == 429
    assert (body["errorType"], body["policyName"]) == ("RATE_LIMIT", "TEN_SECONDLY_ROLLING")
    assert body["message"] == "You have reached your ten_secondly_rolling limit."
    assert body["requestId"] and "Retry-After" not in headers
    hub.wall += 10  # the next window: two more, then the day is spent
    assert [portal.get("/crm/v3/imports")[0] for _ in "abc"] == [200, 200, 429]
    status, body, headers = portal.get("/crm/v3/imports")
    assert body["policyName"] == "DAILY" and headers["X-HubSpot-RateLimit-Daily-Remaining"] == "0"

    told = hub.account(rate_limits=True, requests_per_ten_seconds=1, retry_after=True)
    assert [told.get("/crm/v3/imports")[0] for _ in "ab"] == [200, 429]
    assert told.get("/crm/v3/imports")[2]["Retry-After"] == "10"
    assert hub.sandbox.limiter.violations_by_account[told.account.id] == 2


def test_controls_refuse_bad_input(hub: Harness) -> None:
    portal = hub.account()
    for payload in ({"kind": "contacts"}, {"outcome": "exploded"}, {"size": 3, "failed": 4}):
        with pytest.raises(ValueError):
            portal.control("create_jobs", **payload)
    with pytest.raises(KeyError):
        portal.control("no-such-action")
    limits = portal.control("set_rate_limit", requests_per_ten_seconds=7)
    assert limits == {"requests_per_ten_seconds": 7, "daily_limit": 650_000}
    assert portal.get("/crm/v3/imports")[2]["X-HubSpot-RateLimit-Max"] == "7"


@pytest.fixture
def served(hub: Harness) -> Iterator[SandboxClient]:
    """The harness's app over real HTTP on loopback, with its `/_sandbox/` controls."""
    server = SandboxHTTPServer(("127.0.0.1", 0), hub.app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield SandboxClient(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


def test_over_http_faults_timeline_and_new_jobs(served: SandboxClient) -> None:
    described = served.create_account(
        "hubspot", seed=5, jobs_per_kind=8, frozen=True, rate_limits=False, new_jobs_per_minute=6
    )
    account_id, token = described["id"], described["credentials"]["access_token"]
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    base = served.base_url("hubspot")
    origin = served.timeline(account_id)["now"]
    for _ in range(6):
        served.clock(account_id, advance=45)
        answer = served.timeline(account_id)
        now, entries = answer["now"], {e["id"]: e for e in answer["jobs"]}
        listed = http.get(f"{base}/crm/v3/imports", params={"limit": 100}, timeout=10).json()
        assert {j["id"] for j in listed["results"]} == set(entries)
        for job in listed["results"]:
            entry = entries[job["id"]]
            assert job["state"] == [s for at, s in entry["statuses"] if at <= now][-1]
            progress, written = entry["progress"], job["metadata"]["counters"]
            if job["state"] == "PROCESSING" and progress:
                share = (now - progress["start"]) / (progress["end"] - progress["start"])
                assert written["UNIQUE_OBJECTS_WRITTEN"] == int(progress["final"] * share)
    new = [e for e in served.timeline(account_id)["jobs"] if e["created"] > origin]
    assert len(new) == 6 * 45 * 6 // 60

    served.control(account_id, "faults", rate=1.0, mix={"429": 1})
    throttled = http.get(f"{base}/crm/v3/imports", timeout=10)
    assert throttled.status_code == 429 and throttled.json()["errorType"] == "RATE_LIMIT"
    served.control(account_id, "faults", rate=1.0, mix={"expired_cursor": 1})
    stale = http.get(f"{base}/crm/v3/imports", params={"after": "MTIz"}, timeout=10)
    assert stale.status_code == 400 and stale.json()["category"] == "VALIDATION_ERROR"
    served.control(account_id, "faults", rate=0)
    state = served.state(account_id)
    assert len(state["jobs"]) == 8 + len(new)
    log = served.requests(account_id)
    assert token not in repr(log)
