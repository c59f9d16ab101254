"""The Salesforce sandbox over real HTTP: does it behave like Bulk API 2.0 as documented?

There is no official spec to validate against, so each test asserts the documented
shapes field by field, citing issue 19's provider research notes (Salesforce section,
"the facts") and the Salesforce pages they name. The tests speak raw HTTP to a sandbox server of their own
(built around `SalesforceSandbox` directly, whatever the provider registry serves).
"""

from __future__ import annotations

import csv
import io
import re
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import requests

from providers.sandbox.client import SandboxClient
from providers.sandbox.salesforce import API_VERSION, SalesforceSandbox
from providers.sandbox.server import SandboxApp, SandboxHTTPServer

V = f"/services/data/v{API_VERSION}"
INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
NOT_FOUND = [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}]
# The facts, "List endpoints": what a listed job carries (no counts).
LIST_FIELDS = {
    "id",
    "operation",
    "object",
    "createdById",
    "createdDate",
    "systemModstamp",
    "state",
    "concurrencyMode",
    "contentType",
    "apiVersion",
    "jobType",
    "lineEnding",
    "columnDelimiter",
}
# The facts, "Get by id": counts and processing times (ms); query jobs count no failures.
INGEST_COUNTS = {
    "numberRecordsProcessed",
    "numberRecordsFailed",
    "retries",
    "totalProcessingTime",
    "apiActiveProcessingTime",
    "apexProcessingTime",
}
QUERY_COUNTS = {"numberRecordsProcessed", "retries", "totalProcessingTime"}
SF_TIME = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000$"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[SandboxClient, SandboxApp]]:
    """A sandbox server on loopback serving only this sandbox, under /salesforce/."""
    app = SandboxApp(providers=())
    app.sandboxes["salesforce"] = SalesforceSandbox(app.limiter)
    server = SandboxHTTPServer(("127.0.0.1", 0), app)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield SandboxClient(f"http://127.0.0.1:{server.server_address[1]}"), app
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class Org:
    """One sandbox org and a plain `requests` session speaking to it."""

    def __init__(self, served: tuple[SandboxClient, SandboxApp], **options: Any) -> None:
        options.setdefault("frozen", True)
        options.setdefault("rate_limits", False)
        options.setdefault("jobs_per_kind", 0)
        self.sandbox, self.app = served
        described = self.sandbox.create_account("salesforce", **options)
        self.id: str = described["id"]
        self.credentials: dict[str, str] = described["credentials"]
        self.base = self.sandbox.base_url("salesforce")
        self.http = requests.Session()
        self._token: str | None = None

    def token_response(self, **form: str) -> requests.Response:
        body = {"grant_type": "client_credentials", **self.credentials, **form}
        return self.http.post(f"{self.base}/services/oauth2/token", data=body, timeout=10)

    @property
    def token(self) -> str:
        if self._token is None:
            answer = self.token_response()
            assert answer.status_code == 200, answer.text
            self._token = answer.json()["access_token"]
        return self._token

    def get(self, path: str, token: str | None = None, **params: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return self.http.get(f"{self.base}{path}", headers=headers, params=params, timeout=10)

    def listing(self, kind: str, **params: Any) -> list[requests.Response]:
        """Every page of a listing, following nextRecordsUrl as the facts say."""
        pages = [self.get(f"{V}/jobs/{kind}", **params)]
        while not pages[-1].json()["done"]:
            next_url = pages[-1].json()["nextRecordsUrl"]
            pages.append(self.http.get(f"{self.base}{next_url}", headers=self.auth(), timeout=10))
        return pages

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def job(self, kind: str, job_id: str) -> dict[str, Any]:
        answer = self.get(f"{V}/jobs/{kind}/{job_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()

    def create(self, **payload: Any) -> list[str]:
        return self.sandbox.control(self.id, "create_jobs", **payload)["ids"]

    def advance(self, seconds: float) -> None:
        self.sandbox.clock(self.id, advance=seconds)

    def state(self) -> dict[str, Any]:
        return self.sandbox.state(self.id)


def test_client_credentials_token_has_the_documented_fields(served: Any) -> None:
    org = Org(served)
    answer = org.token_response()
    assert answer.status_code == 200
    body = answer.json()
    # Salesforce Help, client credentials flow: no expires_in, no refresh token.
    assert set(body) == {
        "access_token",
        "signature",
        "scope",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
    }
    assert body["token_type"] == "Bearer"
    assert body["instance_url"] == org.base  # the instance URL is the API's host root
    assert body["id"].startswith(f"{org.base}/id/00D")
    now = datetime.fromisoformat(org.sandbox.clock(org.id)["now"]).timestamp()
    assert body["issued_at"] == str(int(now * 1000))  # epoch ms on the (frozen) account clock
    assert org.get(f"{V}/jobs/ingest", body["access_token"]).status_code == 200


def test_token_endpoint_refusals_are_400_oauth_errors(served: Any) -> None:
    org = Org(served)
    url = f"{org.base}/services/oauth2/token"
    wrong = org.token_response(client_secret="not-the-secret")
    assert (wrong.status_code, wrong.json()) == (
        400,
        {"error": "invalid_client", "error_description": "invalid client credentials"},
    )
    unknown = org.token_response(client_id="3MVG9nobody")
    assert (unknown.status_code, unknown.json()["error"]) == (400, "invalid_client_id")
    password = org.token_response(grant_type="password")
    assert (password.status_code, password.json()["error"]) == (400, "unsupported_grant_type")
    as_json = org.http.post(
        url, json={"grant_type": "client_credentials", **org.credentials}, timeout=10
    )
    assert (as_json.status_code, as_json.json()["error"]) == (400, "unsupported_grant_type")
    assert org.http.get(url, timeout=10).status_code == 400
    assert org.state()["tokens_issued"] == 0


def test_sessions_time_out_on_the_account_clock_and_a_new_token_works(served: Any) -> None:
    org = Org(served, session_seconds=600)
    token = org.token
    org.advance(599)
    assert org.get(f"{V}/jobs/ingest", token).status_code == 200  # activity extends it
    org.advance(599)
    assert org.get(f"{V}/jobs/ingest", token).status_code == 200
    org.advance(600)
    expired = org.get(f"{V}/jobs/ingest", token)
    assert (expired.status_code, expired.json()) == (401, INVALID_SESSION)
    assert org.get(f"{V}/jobs/ingest", token).status_code == 401  # stays dead
    fresh = org.token_response().json()["access_token"]
    assert org.get(f"{V}/jobs/ingest", fresh).status_code == 200
    no_token = org.http.get(f"{org.base}{V}/jobs/query", timeout=10)
    assert (no_token.status_code, no_token.json()) == (401, INVALID_SESSION)


def test_revoke_tokens_forces_one_renewal_and_revoke_refuses_the_app(served: Any) -> None:
    org = Org(served)
    token = org.token
    org.sandbox.control(org.id, "revoke_tokens")
    assert org.get(f"{V}/jobs/ingest", token).json() == INVALID_SESSION
    renewed = org.token_response().json()["access_token"]
    assert org.get(f"{V}/jobs/ingest", renewed).status_code == 200
    org.sandbox.control(org.id, "revoke")
    assert org.get(f"{V}/jobs/ingest", renewed).status_code == 401
    assert org.token_response().json()["error"] == "invalid_client"
    assert org.state()["revoked"] is True
    rotated = org.sandbox.control(org.id, "rotate_secret")["credentials"]
    assert org.token_response().status_code == 400  # the old secret stays dead
    org.credentials = rotated
    assert org.token_response().status_code == 200


def test_listings_page_by_next_records_url_up_to_1000_a_page(served: Any) -> None:
    org = Org(served, seed=7, jobs_per_kind=1200)
    for kind, job_type in (("ingest", "V2Ingest"), ("query", "V2Query")):
        pages = org.listing(kind)
        assert [len(p.json()["records"]) for p in pages] == [1000, 200]
        first, last = (p.json() for p in pages)
        assert first["done"] is False
        assert first["nextRecordsUrl"].startswith(f"{V}/jobs/{kind}?queryLocator=")
        assert (last["done"], last["nextRecordsUrl"]) == (True, None)
        records = first["records"] + last["records"]
        assert len({r["id"] for r in records}) == 1200
        truth = {j["id"] for j in org.state()["jobs"] if j["kind"] == kind}
        assert {r["id"] for r in records} == truth
        for record in records:
            assert set(record) == LIST_FIELDS  # no counts in listings (the facts)
            assert record["jobType"] == job_type
            assert len(record["id"]) == 18 and record["id"].startswith("750")
            assert record["createdById"].startswith("005")
            assert isinstance(record["apiVersion"], float)
            assert (record["contentType"], record["concurrencyMode"]) == ("CSV", "Parallel")
            assert record["createdDate"] <= record["systemModstamp"]
            assert re.match(SF_TIME, record["createdDate"])
            assert re.match(SF_TIME, record["systemModstamp"])
        states = Counter(r["state"] for r in records)
        expected = {"UploadComplete", "InProgress", "JobComplete", "Failed", "Aborted"}
        assert expected <= set(states)
        assert ("Open" in states) == (kind == "ingest")  # query jobs are never Open
        for page in pages:
            assert page.headers["Content-Type"].startswith("application/json")


def test_a_listing_is_a_snapshot_and_the_filters_work(served: Any) -> None:
    org = Org(served, seed=2, jobs_per_kind=30, page_size=20)
    first = org.get(f"{V}/jobs/ingest").json()
    (new_id,) = org.create(kind="ingest")
    rest = org.http.get(f"{org.base}{first['nextRecordsUrl']}", headers=org.auth(), timeout=10)
    seen = {r["id"] for r in first["records"] + rest.json()["records"]}
    assert rest.json()["done"] and len(seen) == 30 and new_id not in seen
    assert new_id in {r["id"] for p in org.listing("ingest") for r in p.json()["records"]}
    for params in ({"jobType": "Classic"}, {"isPkChunkingEnabled": "true"}):
        empty = org.get(f"{V}/jobs/ingest", **params).json()
        assert empty == {"done": True, "records": [], "nextRecordsUrl": None}
    pages = org.listing("query", jobType="V2Query", concurrencyMode="parallel")
    assert sum(len(p.json()["records"]) for p in pages) == 30
    assert "jobType=V2Query" in pages[0].json()["nextRecordsUrl"]
    bad = org.get(f"{V}/jobs/ingest", queryLocator="made-up")
    assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_versions_the_facts_support_are_served_and_others_are_not(served: Any) -> None:
    org = Org(served)
    # Ingest from API 41.0, query from 47.0 (the facts, "Hosts, auth").
    assert org.get("/services/data/v41.0/jobs/ingest").status_code == 200
    assert org.get("/services/data/v47.0/jobs/query").status_code == 200
    assert org.get("/services/data/v67.0/jobs/query/").status_code == 200
    for path in ("v40.0/jobs/ingest", "v46.0/jobs/query", "v99.0/jobs/ingest", "v62.0/jobs/bulk"):
        answer = org.get(f"/services/data/{path}")
        assert (answer.status_code, answer.json()) == (404, NOT_FOUND)


def test_an_ingest_job_moves_through_its_states_and_its_counts_grow(served: Any) -> None:
    org = Org(served)
    (job_id,) = org.create(
        kind="ingest", size=100, failed=10, duration=100, open_seconds=5, queued_seconds=5
    )
    path = f"{V}/jobs/ingest/{job_id}"
    opened = org.job("ingest", job_id)
    assert opened["state"] == "Open"
    assert opened["contentUrl"] == f"services/data/v{API_VERSION}/jobs/ingest/{job_id}/batches"
    assert set(opened) >= INGEST_COUNTS | LIST_FIELDS
    assert (opened["numberRecordsProcessed"], opened["numberRecordsFailed"]) == (0, 0)
    org.advance(5.5)
    assert org.job("ingest", job_id)["state"] == "UploadComplete"
    org.advance(55)  # halfway through its 100 s of processing
    running = org.job("ingest", job_id)
    assert running["state"] == "InProgress" and "contentUrl" not in running
    assert (running["numberRecordsProcessed"], running["numberRecordsFailed"]) == (50, 5)
    assert 50_000 <= running["totalProcessingTime"] <= 50_500
    rows = list(csv.reader(io.StringIO(org.get(f"{path}/failedResults/").text)))
    assert len(rows) == 1 + 5  # the rows failed so far match numberRecordsFailed
    org.advance(50)
    done = org.job("ingest", job_id)
    # Partial failure is JobComplete with numberRecordsFailed > 0 (the facts, "States").
    assert (done["state"], done["numberRecordsProcessed"], done["numberRecordsFailed"]) == (
        "JobComplete",
        100,
        10,
    )
    assert done["systemModstamp"] > done["createdDate"] and "errorMessage" not in done
    answer = org.get(f"{path}/failedResults/")
    assert answer.headers["Content-Type"] == "text/csv"
    header, *rows = list(csv.reader(io.StringIO(answer.text)))
    assert answer.text.startswith('"sf__Id","sf__Error",')  # sf__ columns first, then the record's
    assert header == ["sf__Id", "sf__Error", "Name", "ShippingCity", "NumberOfEmployees", "Website"]
    assert len(rows) == 10
    for record_id, error, *values in rows:
        assert record_id == ""  # an insert that failed created no record
        assert re.match(r"^[A-Z_]+:.+", error) and len(values) == 4
    (truth,) = org.state()["jobs"]
    assert truth["errors"] == [row[1] for row in rows] and truth["error_count"] == 10
    assert org.get(f"{V}/jobs/query/{job_id}").json() == NOT_FOUND  # wrong kind


def test_failed_results_omit_sf_id_before_api_53_and_keep_ids_of_updates(served: Any) -> None:
    org = Org(served)
    (job_id,) = org.create(kind="ingest", size=3, failed=2, operation="update", object="Contact")
    org.advance(200)
    new = list(csv.reader(io.StringIO(org.get(f"{V}/jobs/ingest/{job_id}/failedResults").text)))
    assert new[0] == ["sf__Id", "sf__Error", "Id", "FirstName", "LastName", "Email"]
    assert all(row[0] == row[2] and row[0].startswith("003") for row in new[1:])
    old = org.get(f"/services/data/v52.0/jobs/ingest/{job_id}/failedResults/").text
    assert old.splitlines()[0] == '"sf__Error",Id,FirstName,LastName,Email'


def test_query_jobs_failed_and_aborted_jobs(served: Any) -> None:
    org = Org(served)
    (query_id,) = org.create(kind="query", size=40, duration=10, queued_seconds=2)
    (failed_id,) = org.create(kind="query", size=30, duration=10, outcome="Failed")
    (aborted_id,) = org.create(kind="ingest", size=50, duration=10, outcome="Aborted")
    first = org.job("query", query_id)
    assert first["state"] == "UploadComplete" and first["jobType"] == "V2Query"
    assert set(first) >= QUERY_COUNTS and "numberRecordsFailed" not in first
    org.advance(100)
    done = org.job("query", query_id)
    assert (done["state"], done["numberRecordsProcessed"], done["retries"]) == (
        "JobComplete",
        40,
        0,
    )
    assert org.get(f"{V}/jobs/query/{query_id}/failedResults/").status_code == 404
    failed = org.job("query", failed_id)
    assert failed["state"] == "Failed" and failed["errorMessage"]
    assert failed["numberRecordsProcessed"] == 10  # it stopped part of the way
    aborted = org.job("ingest", aborted_id)
    assert aborted["state"] == "Aborted" and aborted["numberRecordsProcessed"] == 25


def test_terminal_jobs_are_deleted_after_seven_days_and_expire_deletes_now(served: Any) -> None:
    org = Org(served, session_seconds=30 * 86_400)
    finished, gone = org.create(kind="ingest", count=2, duration=10)
    (running,) = org.create(kind="query", duration=8 * 86_400)  # not terminal after 7 days
    assert org.sandbox.control(org.id, "expire", ids=[gone, "750nope"]) == {
        "expired": [gone],
        "unknown": ["750nope"],
    }
    assert org.get(f"{V}/jobs/ingest/{gone}").json() == NOT_FOUND
    org.advance(7 * 86_400 - 60)
    assert org.get(f"{V}/jobs/ingest/{finished}").status_code == 200
    org.advance(120)
    assert org.get(f"{V}/jobs/ingest/{finished}").status_code == 404
    assert org.get(f"{V}/jobs/ingest").json()["records"] == []
    assert org.job("query", running)["state"] == "InProgress"
    assert [j["id"] for j in org.state()["jobs"]] == [running]


def test_the_daily_api_allocation_answers_403_request_limit_exceeded(served: Any) -> None:
    org = Org(served, rate_limits=True, api_requests_per_day=3)
    usage = [org.get(f"{V}/jobs/ingest").headers["Sforce-Limit-Info"] for _ in range(3)]
    assert usage == ["api-usage=1/3", "api-usage=2/3", "api-usage=3/3"]
    over = org.get(f"{V}/jobs/ingest")
    assert over.status_code == 403  # not 429 (the facts, "Limits and retention")
    assert over.json() == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]
    assert "Retry-After" not in over.headers
    assert org.token_response().status_code == 200  # the token endpoint is not counted
    org.sandbox.control(org.id, "set_api_limit", requests_per_day=10)
    assert org.get(f"{V}/jobs/ingest").headers["Sforce-Limit-Info"] == "api-usage=4/10"


def test_timeline_is_what_the_api_answers_as_new_jobs_appear(served: Any) -> None:
    org = Org(served, seed=4, jobs_per_kind=3, new_jobs_per_minute=12, new_job_seconds=[20, 40])
    before = {j["id"] for j in org.state()["jobs"]}
    processing_seen = 0
    for _ in range(12):
        org.advance(7)
        answer = org.sandbox.timeline(org.id)
        now, entries = answer["now"], {e["id"]: e for e in answer["jobs"]}
        jobs = org.state()["jobs"]
        assert {j["id"] for j in jobs} == set(entries)
        for job in jobs:
            entry = entries[job["id"]]
            assert job["state"] == [s for at, s in entry["statuses"] if at <= now][-1]
            progress = entry["progress"]
            if job["state"] == "InProgress":
                processing_seen += 1
                elapsed = now - progress["start"]
                length = progress["end"] - progress["start"]
                assert job["numberRecordsProcessed"] == int(progress["final"] * elapsed / length)
    assert processing_seen >= 5
    new = [j for j in org.state()["jobs"] if j["id"] not in before]
    assert len(new) == 12 * 7 * 12 // 60
    assert Counter(j["kind"] for j in new) == {"ingest": 8, "query": 8}


def test_faults_use_salesforce_envelopes_and_the_log_hides_secrets(served: Any) -> None:
    org = Org(served, seed=1, jobs_per_kind=5, page_size=2)
    token = org.token
    next_url = org.get(f"{V}/jobs/ingest").json()["nextRecordsUrl"]
    org.sandbox.control(org.id, "faults", rate=1, mix={"expired_cursor": 1})
    stale = org.http.get(f"{org.base}{next_url}", headers=org.auth(), timeout=10)
    assert stale.status_code == 400 and stale.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"
    org.sandbox.control(org.id, "faults", rate=1, mix={"500": 1})
    broken = org.get(f"{V}/jobs/ingest")
    assert broken.status_code == 500 and set(broken.json()[0]) == {"message", "errorCode"}
    org.sandbox.control(org.id, "faults", rate=0)
    org.token_response(client_secret="wrong-secret")
    log = org.sandbox.requests(org.id)
    text = repr(log)
    assert org.credentials["client_secret"] not in text and token not in text
    assert "wrong-secret" not in text
    assert any(e["path"] == "/services/oauth2/token" for e in log)


def test_bad_controls_are_refused(served: Any) -> None:
    org = Org(served)
    for payload in (
        {"kind": "bulk"},
        {"kind": "ingest", "size": 2, "failed": 3},
        {"kind": "query", "failed": 1},
        {"kind": "ingest", "outcome": "Exploded"},
        {"kind": "query", "api_version": "46.0"},
        {"kind": "ingest", "object": "Widget__c"},
    ):
        with pytest.raises(requests.HTTPError):
            org.sandbox.control(org.id, "create_jobs", **payload)
    with pytest.raises(requests.HTTPError):
        org.sandbox.control(org.id, "no-such-action")
    assert org.sandbox.control(org.id, "set_session_seconds", seconds=5) == {"session_seconds": 5.0}
