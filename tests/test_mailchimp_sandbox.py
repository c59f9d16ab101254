"""The Mailchimp sandbox over real HTTP: does it behave like Mailchimp's batch operations?

The sandbox is served here by its own SandboxApp on loopback (it is not in the provider
registry yet), and every answer it gives is checked against Mailchimp's official
OpenAPI 3.1 document, read from `../shared/specs/reference-only/` (never copied into the
project); without that file the spec checks are skipped with a message.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import requests
from openapi_core import Config, OpenAPI
from openapi_core.testing import MockResponse

from providers.sandbox.client import SandboxClient
from providers.sandbox.core import SandboxRequest
from providers.sandbox.mailchimp import ARCHIVE_HOST, KIND, MailchimpSandbox
from providers.sandbox.server import SandboxApp, SandboxHTTPServer
from tests.openapi_check import _cause, _request

SPEC_PATH = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "specs"
    / "reference-only"
    / "mailchimp-batches.openapi.json"
)
SPEC_SERVER = "https://api.mailchimp.com"
# openapi-core checks no OAuth 2 scheme (the spec offers it beside the Bearer key).
pytestmark = pytest.mark.filterwarnings("ignore:Unsupported scheme type:UserWarning")


@cache
def mailchimp_spec() -> OpenAPI:
    """Mailchimp's spec; its error answers are application/problem+json (RFC 9457)."""
    config = Config(extra_media_type_deserializers={"application/problem+json": json.loads})
    return OpenAPI.from_dict(json.loads(SPEC_PATH.read_text()), config=config)


def spec_errors(entry: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Why a logged request, and why its answer, break Mailchimp's spec (empty: they hold)."""
    openapi = mailchimp_spec()
    request = _request(entry, SPEC_SERVER)
    response = MockResponse(
        (entry.get("response_body") or "").encode(),
        status_code=entry["status"],
        headers=entry.get("response_headers") or {},
        content_type=(entry.get("content_type") or "").split(";")[0],
    )
    return (
        [str(e) + _cause(e) for e in openapi.iter_request_errors(request)],
        [str(e) + _cause(e) for e in openapi.iter_response_errors(request, response)],
    )


class Served:
    """A SandboxApp serving only the Mailchimp sandbox on a free loopback port."""

    def __init__(self) -> None:
        self.app = SandboxApp(providers=())
        self.app.sandboxes["mailchimp"] = MailchimpSandbox(self.app.limiter)
        self.server = SandboxHTTPServer(("127.0.0.1", 0), self.app)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.client = SandboxClient(f"http://127.0.0.1:{self.server.server_address[1]}")


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    served = Served()
    yield served
    served.server.shutdown()
    served.server.server_close()


class Account:
    """One sandbox Mailchimp account and a plain `requests` session speaking to it."""

    def __init__(self, served: Served, **options: Any) -> None:
        options.setdefault("frozen", True)
        options.setdefault("jobs_per_kind", 0)
        self.served = served
        self.sandbox = served.client
        described = self.sandbox.create_account("mailchimp", **options)
        self.id: str = described["id"]
        self.key: str = described["credentials"]["api_key"]
        self.base = self.sandbox.base_url("mailchimp")
        self.http = requests.Session()

    def get(self, path: str, *, auth: str | None = None, **params: Any) -> requests.Response:
        header = auth if auth is not None else basic("anystring", self.key)
        headers = {"Authorization": header} if header else {}
        return self.http.get(f"{self.base}{path}", headers=headers, params=params, timeout=30)

    def batch(self, batch_id: str) -> dict[str, Any]:
        answer = self.get(f"/3.0/batches/{batch_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()

    def all_batches(self, count: int = 1000) -> list[dict[str, Any]]:
        batches: list[dict[str, Any]] = []
        while True:
            page = self.get("/3.0/batches", count=count, offset=len(batches)).json()
            batches += page["batches"]
            if len(batches) >= page["total_items"] or not page["batches"]:
                return batches

    def control(self, action: str, **payload: Any) -> dict[str, Any]:
        return self.sandbox.control(self.id, action, **payload)

    def advance(self, seconds: float) -> None:
        self.sandbox.clock(self.id, advance=seconds)

    def assert_spec_valid(self) -> None:
        """Every answer this account gave holds to the spec, and the sandbox refused with
        400 exactly the requests the spec does not allow."""
        if not SPEC_PATH.is_file():
            pytest.skip(f"Mailchimp's spec is absent ({SPEC_PATH}): answers not checked")
        log = self.sandbox.requests(self.id)
        assert log
        for entry in log:
            if not entry["path"].startswith("/3.0/batches"):
                continue  # the trimmed spec holds the batches paths only
            request_errors, response_errors = spec_errors(entry)
            assert response_errors == [], entry
            assert bool(request_errors) == (entry["status"] == 400), (request_errors, entry)


def basic(user: str, key: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()


def assert_problem(answer: requests.Response, status: int, title: str) -> dict[str, Any]:
    """Mailchimp's RFC 9457 document: type, title, status, detail, instance."""
    assert answer.status_code == status
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    body = answer.json()
    assert set(body) == {"type", "title", "status", "detail", "instance"}
    assert body["status"] == status and body["title"] == title and body["detail"]
    assert answer.headers["X-Request-Id"] == body["instance"]
    return body


def test_api_key_auth_basic_with_any_username_or_bearer_and_401s(served: Served) -> None:
    account = Account(served, dc="us6")
    assert account.key.endswith("-us6") and len(account.key.split("-")[0]) == 32
    assert account.get("/3.0/batches").status_code == 200
    assert account.get("/3.0/batches", auth=basic("", account.key)).status_code == 200
    assert account.get("/3.0/batches", auth=f"Bearer {account.key}").status_code == 200
    assert_problem(account.get("/3.0/batches", auth=""), 401, "API Key Missing")
    wrong = account.get("/3.0/batches", auth=basic("x", "0" * 32 + "-us6"))
    assert "wrong datacenter" in assert_problem(wrong, 401, "API Key Invalid")["detail"]
    # Base64 is required: the key sent as is is not a key.
    assert_problem(account.get("/3.0/batches", auth=f"Basic {account.key}"), 401, "API Key Invalid")

    account.control("revoke")
    assert_problem(account.get("/3.0/batches"), 401, "API Key Invalid")
    new_key = account.control("rotate_key")["credentials"]["api_key"]
    assert new_key != account.key and new_key.endswith("-us6")
    assert_problem(account.get("/3.0/batches"), 401, "API Key Invalid")  # the old key stays dead
    account.key = new_key
    assert account.get("/3.0/batches").status_code == 200
    assert account.key not in repr(account.sandbox.requests(account.id))
    account.assert_spec_valid()


def test_batches_run_one_at_a_time_through_every_status(served: Served) -> None:
    account = Account(served)
    made = account.control("create_jobs", count=2, size=100, failed=10, duration=100)
    assert made["kind"] == KIND
    first, second = made["ids"]

    def view(batch_id: str) -> tuple[str, int, int]:
        batch = account.batch(batch_id)
        return batch["status"], batch["finished_operations"], batch["errored_operations"]

    fresh = account.batch(first)
    assert fresh["status"] == "pending" and fresh["total_operations"] == 100
    assert fresh["completed_at"] == "" and fresh["response_body_url"] == ""
    assert fresh["submitted_at"].endswith("+00:00")
    account.advance(2.5)  # picked up: preprocessing takes the first tenth
    assert view(first) == ("preprocessing", 0, 0) and view(second)[0] == "pending"
    account.advance(10 + 40)  # half way through the operations
    status, finished, errored = view(first)
    assert status == "started" and 0 < finished < 100 and 0 <= errored < 10
    account.advance(40)
    assert view(first) == ("finalizing", 100, 10)
    assert account.batch(first)["response_body_url"] == ""
    account.advance(10)
    done = account.batch(first)
    assert (done["status"], done["finished_operations"], done["errored_operations"]) == (
        "finished",
        100,
        10,
    )
    assert done["completed_at"] >= done["submitted_at"]
    assert done["response_body_url"] == f"{ARCHIVE_HOST}/{first}-response.tar.gz"
    assert account.batch(first) == done  # finished is final: nothing moves any more
    assert view(second)[0] == "preprocessing"  # the queue moved up
    rels = {link["rel"]: link for link in done["_links"]}
    assert rels["self"]["href"] == f"{account.base}/3.0/batches/{first}"
    account.assert_spec_valid()


def test_listing_pages_by_count_and_offset_with_total_items(served: Served) -> None:
    account = Account(served, seed=3, jobs_per_kind=25)
    default = account.get("/3.0/batches").json()
    assert len(default["batches"]) == 10 and default["total_items"] == 25
    pages = [
        account.get("/3.0/batches", count=7, offset=offset).json()["batches"]
        for offset in range(0, 28, 7)
    ]
    ids = [b["id"] for page in pages for b in page]
    assert len(ids) == 25 and len(set(ids)) == 25
    assert ids[:10] == [b["id"] for b in default["batches"]]
    submitted = [b["submitted_at"] for page in pages for b in page]
    assert submitted == sorted(submitted)  # submission order
    statuses = Counter(b["status"] for page in pages for b in page)
    assert statuses["started"] == 1 and statuses["pending"] >= 1 and statuses["finished"] >= 20
    assert account.get("/3.0/batches", count=5, offset=25).json()["batches"] == []
    assert len(account.get("/3.0/batches", count=1000).json()["batches"]) == 25
    assert_problem(account.get("/3.0/batches", count=1001), 400, "Invalid Resource")
    assert_problem(account.get("/3.0/batches/no-such-batch"), 404, "Resource Not Found")
    assert_problem(account.get("/3.0/campaigns"), 404, "Resource Not Found")

    newest = Account(served, seed=3, jobs_per_kind=25, order="newest_first")
    listed = [b["submitted_at"] for b in newest.all_batches()]
    assert listed == sorted(listed, reverse=True)
    account.assert_spec_valid()


def test_fields_and_exclude_fields_use_dot_notation(served: Served) -> None:
    account = Account(served, seed=1, jobs_per_kind=3)
    sparse = account.get("/3.0/batches", fields="batches.id,batches.status,total_items").json()
    assert set(sparse) == {"batches", "total_items"}
    assert all(set(b) == {"id", "status"} for b in sparse["batches"])
    lean = account.get("/3.0/batches", exclude_fields="_links,batches._links").json()
    assert "_links" not in lean and all("_links" not in b for b in lean["batches"])
    assert "total_operations" in lean["batches"][0]
    one = account.get(f"/3.0/batches/{sparse['batches'][0]['id']}", fields="id,status").json()
    assert set(one) == {"id", "status"}
    account.assert_spec_valid()


def test_finished_batches_expire_after_retention_and_on_demand(served: Served) -> None:
    account = Account(served, retention_days=1)
    kept, dropped = account.control("create_jobs", count=2, size=5, duration=60)["ids"]
    expired = account.control("expire", ids=[dropped, "unknown-id"])
    assert expired == {"expired": [dropped], "unknown": ["unknown-id"]}
    assert_problem(account.get(f"/3.0/batches/{dropped}"), 404, "Resource Not Found")
    assert [b["id"] for b in account.all_batches()] == [kept]
    account.advance(86_400)  # finished a minute in, so still listed for a minute more
    assert account.batch(kept)["status"] == "finished"
    account.advance(120)
    assert_problem(account.get(f"/3.0/batches/{kept}"), 404, "Resource Not Found")
    assert account.get("/3.0/batches").json() == {
        "batches": [],
        "total_items": 0,
        "_links": account.get("/3.0/batches").json()["_links"],
    }
    account.assert_spec_valid()


def status_at(entry: dict[str, Any], moment: float) -> str:
    return [status for at, status in entry["statuses"] if at <= moment][-1]


def test_state_and_timeline_are_what_the_api_answers_as_the_clock_moves(
    served: Served,
) -> None:
    account = Account(
        served, seed=7, jobs_per_kind=6, new_jobs_per_minute=6, new_job_seconds=[20, 90]
    )
    origin = account.sandbox.timeline(account.id)["now"]
    started_seen = 0
    for _ in range(12):
        account.advance(13)
        answer = account.sandbox.timeline(account.id)
        now, entries = answer["now"], {job["id"]: job for job in answer["jobs"]}
        state = account.sandbox.state(account.id)
        listed = {b["id"]: b for b in account.all_batches()}
        assert [j["id"] for j in state["jobs"]] == list(listed) == list(entries)
        for job in state["jobs"]:
            batch, entry = listed[job["id"]], entries[job["id"]]
            assert job["kind"] == entry["kind"] == KIND
            for name in ("status", "total_operations", "finished_operations"):
                assert job[name] == batch[name]
            assert job["errored_operations"] == batch["errored_operations"]
            assert batch["status"] == status_at(entry, now), entry
            progress = entry["progress"]
            if batch["status"] == "started":
                started_seen += 1
                share = (now - progress["start"]) / (progress["end"] - progress["start"])
                assert batch["finished_operations"] == int(progress["final"] * share)
    assert started_seen >= 5
    new = [e for e in entries.values() if e["created"] > origin]
    assert len(new) == int(12 * 13 / 60 * 6)
    assert all(e["statuses"][0][1] == "pending" for e in new)
    account.assert_spec_valid()


def test_simultaneous_connections_beyond_the_limit_get_429_without_retry_after(
    served: Served,
) -> None:
    account = Account(served, max_connections=3, response_seconds=30)
    request = SandboxRequest(
        "GET", "/3.0/batches", "", {"Authorization": basic("x", account.key)}, b"", account.base
    )
    # Called in process, each answer holds its connection 30 s without making us wait.
    answers = [served.app.dispatch(request, "mailchimp") for _ in range(4)]
    assert [a.status for a in answers] == [200, 200, 200, 429]
    assert answers[0].delay == 30
    throttled = json.loads(answers[3].body)
    assert throttled["title"] == "Too Many Requests" and "simultaneous" in throttled["detail"]
    assert "Retry-After" not in answers[3].headers
    account.control("set_rate_limit", response_seconds=0)
    assert served.app.dispatch(request, "mailchimp").status == 429  # three still held
    account.control("set_rate_limit", max_connections=10)
    assert served.app.dispatch(request, "mailchimp").status == 200
    account.assert_spec_valid()


def test_connections_held_open_over_http_are_counted(served: Served) -> None:
    account = Account(served, max_connections=2, response_seconds=2)
    codes: list[int] = []
    lock = threading.Lock()

    def call() -> None:
        code = requests.get(
            f"{account.base}/3.0/batches",
            headers={"Authorization": f"Bearer {account.key}"},
            timeout=60,
        ).status_code
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes.count(200) >= 2 and codes.count(429) >= 1, codes
    account.assert_spec_valid()


def test_injected_faults_speak_mailchimps_error_document(served: Served) -> None:
    account = Account(served)
    account.control("faults", rate=1, mix={"429": 1})
    limited = account.get("/3.0/batches")
    assert_problem(limited, 429, "Too Many Requests")
    assert "Retry-After" not in limited.headers
    account.control("faults", rate=1, mix={"500": 1})
    assert_problem(account.get("/3.0/batches"), 500, "Internal Server Error")
    account.control("faults", rate=0)
    assert account.get("/3.0/batches").status_code == 200
    account.assert_spec_valid()


def test_controls_refuse_bad_input_and_more_than_500_pending(served: Served) -> None:
    account = Account(served)
    for payload in ({"size": 0}, {"size": 3, "failed": 4}, {"kind": "import"}, {"duration": 0}):
        with pytest.raises(requests.HTTPError):
            account.control("create_jobs", **payload)
    with pytest.raises(requests.HTTPError):
        account.control("no-such-action")
    assert len(account.control("create_jobs", count=500, size=1, duration=5)["ids"]) == 500
    with pytest.raises(requests.HTTPError):
        account.control("create_jobs", count=1)
    assert account.sandbox.state(account.id)["pending"] == 500
    unlimited = Account(served, rate_limits=False)
    assert len(unlimited.control("create_jobs", count=501, size=1)["ids"]) == 501


def test_ten_thousand_batches_page_by_thousands(served: Served) -> None:
    account = Account(served, seed=2, jobs_per_kind=10_000)
    batches = account.all_batches()
    assert len(batches) == 10_000 and len({b["id"] for b in batches}) == 10_000
    state = account.sandbox.state(account.id)
    assert [j["id"] for j in state["jobs"]] == [b["id"] for b in batches]
    assert sum(1 for b in batches if b["status"] == "started") == 1
    assert len(account.sandbox.requests(account.id)) == 10
