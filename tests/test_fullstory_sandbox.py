"""The Fullstory sandbox over raw HTTP: it must behave like Fullstory's batch import API."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
import requests

from providers.sandbox.client import SandboxClient
from tests.openapi_check import request_errors, response_errors

SPEC = "fullstory-batch"


class Org:
    """A sandbox account and a raw HTTP session that speaks for it."""

    def __init__(self, sandbox: SandboxClient, **options: Any) -> None:
        options.setdefault("frozen", True)
        options.setdefault("rate_limits", False)
        self.sandbox = sandbox
        self.described = sandbox.create_account("fullstory", **options)
        self.id = self.described["id"]
        self.key = self.described["credentials"]["api_key"]
        self.base = sandbox.base_url("fullstory")
        self.http = requests.Session()

    def call(
        self, method: str, path: str, *, key: str | None = None, **kwargs: Any
    ) -> requests.Response:
        headers = {"Authorization": f"Basic {self.key if key is None else key}"}
        headers.update(kwargs.pop("headers", {}))
        return self.http.request(method, self.base + path, headers=headers, timeout=10, **kwargs)

    def create(self, kind: str, objects: list[dict[str, Any]], **body: Any) -> str:
        response = self.call("POST", f"/v2/{kind}/batch", json={"requests": objects, **body})
        assert response.status_code == 200, response.text
        return response.json()["job"]["id"]

    def advance(self, seconds: float) -> None:
        self.sandbox.clock(self.id, advance=seconds)

    def state(self) -> dict[str, Any]:
        return self.sandbox.state(self.id)

    def job_state(self, job_id: str) -> dict[str, Any]:
        return next(j for j in self.state()["jobs"] if j["id"] == job_id)

    def pages(self, kind: str, job_id: str, what: str, **params: str) -> list[dict[str, Any]]:
        pages = []
        token = None
        while True:
            query = dict(params, **({"page_token": token} if token else {}))
            response = self.call("GET", f"/v2/{kind}/batch/{job_id}/{what}", params=query)
            assert response.status_code == 200, response.text
            pages.append(response.json())
            token = pages[-1].get("next_page_token")
            if not token:
                return pages


def events(n: int, fail: set[int] = frozenset()) -> list[dict[str, Any]]:  # type: ignore[assignment]
    return [
        {
            "user": {"uid": f"u{i}"},
            "name": "Order Completed",
            "timestamp": "2024-05-01T10:00:00Z",
            "properties": {"order": i, **({"jobcenter_fail": True} if i in fail else {})},
        }
        for i in range(n)
    ]


def users(n: int, fail: set[int] = frozenset()) -> list[dict[str, Any]]:  # type: ignore[assignment]
    return [
        {
            "uid": f"u{i}",
            "display_name": f"User {i}",
            "email": f"u{i}@example.com",
            "properties": {"plan": "paid", **({"jobcenter_fail": True} if i in fail else {})},
        }
        for i in range(n)
    ]


def assert_error_body(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"message", "code"} and body["code"] == code and body["message"]
    return body


# --- lifecycle --------------------------------------------------------------------------


def test_a_batch_processes_on_the_account_clock_then_ends(sandbox: SandboxClient) -> None:
    org = Org(sandbox, processing_seconds=30)
    response = org.call("POST", "/v2/events/batch", json={"requests": events(4, {1, 3})})
    assert response.status_code == 200
    job = response.json()["job"]
    assert set(job) == {"id", "status", "created"} and job["status"] == "PROCESSING"
    assert job["created"].endswith("Z")

    status = org.call("GET", f"/v2/events/batch/{job['id']}").json()
    assert status == {"imports": 0, "job": job}  # no `errors` while none are counted

    org.advance(29)
    assert org.call("GET", f"/v2/events/batch/{job['id']}").json()["job"]["status"] == (
        "PROCESSING"
    )
    org.advance(1)
    status = org.call("GET", f"/v2/events/batch/{job['id']}").json()
    assert status["imports"] == 2 and status["errors"] == 2
    assert status["job"]["status"] == "FAILED"
    assert status["job"]["finished"] > status["job"]["created"]

    clean = org.create("users", users(3))
    org.advance(30)
    status = org.call("GET", f"/v2/users/batch/{clean}").json()
    assert status["job"]["status"] == "COMPLETED"
    assert status["imports"] == 3 and "errors" not in status  # omitted when zero, as documented

    strict = Org(sandbox, omit_zero_errors=False, processing_seconds=0)
    clean = strict.create("users", users(1))
    assert strict.call("GET", f"/v2/users/batch/{clean}").json()["errors"] == 0


def test_results_answer_202_while_processing_then_page_with_string_totals(
    sandbox: SandboxClient,
) -> None:
    org = Org(sandbox, page_size=4)
    job_id = org.create("events", events(11, {0, 2, 4, 6, 8, 10}), shared={"context": {}})
    for what in ("errors", "imports"):
        response = org.call("GET", f"/v2/events/batch/{job_id}/{what}")
        assert response.status_code == 202 and response.content == b""
    org.advance(60)

    error_pages = org.pages("events", job_id, "errors")
    assert len(error_pages) == 2
    assert [len(p["results"]) for p in error_pages] == [4, 2]
    assert all(p["total_records"] == "6" for p in error_pages)
    assert "next_page_token" not in error_pages[-1]
    results = [r for p in error_pages for r in p["results"]]
    assert [r["event"]["properties"]["order"] for r in results] == [0, 2, 4, 6, 8, 10]
    assert all(
        r["code"] == "invalid_argument" and "jobcenter_fail" in r["message"] for r in results
    )
    assert all(r["shared"] == {"context": {}} for r in results)

    import_pages = org.pages("events", job_id, "imports", include_schema="true")
    imported = [r for p in import_pages for r in p["results"]]
    assert [r["properties"]["order"] for r in imported] == [1, 3, 5, 7, 9]
    assert all(r["user"]["uid"] and r["user"]["id"] for r in imported)
    assert imported[0]["schema"] == {"properties": {"order": "int"}}
    assert import_pages[0]["total_records"] == "5"

    bad = org.call("GET", f"/v2/events/batch/{job_id}/errors", params={"page_token": "x!"})
    assert_error_body(bad, 400, "invalid_argument")
    # A token belongs to its own listing: the imports token is refused on /errors.
    token = import_pages[0]["next_page_token"]
    bad = org.call("GET", f"/v2/events/batch/{job_id}/errors", params={"page_token": token})
    assert_error_body(bad, 400, "invalid_argument")


def test_users_results_keep_the_submitted_user(sandbox: SandboxClient) -> None:
    org = Org(sandbox, processing_seconds=1)
    job_id = org.create("users", users(3, {1}))
    org.advance(1)
    (errors_page,) = org.pages("users", job_id, "errors")
    assert errors_page["results"][0]["user"] == users(3)[1] | {
        "properties": {"plan": "paid", "jobcenter_fail": True}
    }
    (imports_page,) = org.pages("users", job_id, "imports")
    assert [u["uid"] for u in imports_page["results"]] == ["u0", "u2"]
    assert all(u["id"].isdigit() for u in imports_page["results"])
    clean = org.create("users", users(2))
    org.advance(1)
    assert org.pages("users", clean, "errors") == [{"results": [], "total_records": "0"}]


def test_documented_object_rules_fail_single_objects(sandbox: SandboxClient) -> None:
    org = Org(sandbox, processing_seconds=0)
    job_id = org.create(
        "events",
        [
            {"name": "ok", "properties": {"fine_name": 1}},
            {"name": "bad name", "properties": {"1starts_with_digit": 1}},
            {"name": "too big", "properties": {"blob": "x" * 9000}},
            {"name": "own context", "context": {"browser": {"url": "https://a.example"}}},
        ],
        shared={"context": {"browser": {"url": "https://shared.example"}}},
    )
    (page,) = org.pages("events", job_id, "errors")
    assert [(r["event"]["name"], r["code"]) for r in page["results"]] == [
        ("bad name", "invalid_property_name"),
        ("too big", "property_too_large"),
        ("own context", "invalid_argument"),
    ]
    status = org.call("GET", f"/v2/events/batch/{job_id}").json()
    assert (status["imports"], status["errors"], status["job"]["status"]) == (1, 3, "FAILED")


def test_error_share_is_deterministic_per_seed(sandbox: SandboxClient) -> None:
    def failing(seed: int) -> list[int]:
        org = Org(sandbox, seed=seed, error_share=0.3, processing_seconds=0, page_size=500)
        job_id = org.create("users", users(200))
        (page,) = org.pages("users", job_id, "errors")
        return [int(r["user"]["uid"][1:]) for r in page["results"]]

    first = failing(5)
    assert 30 <= len(first) <= 90
    assert failing(5) == first
    assert failing(6) != first


# --- errors in Fullstory's envelope -------------------------------------------------------


def test_keys_are_checked_as_fullstory_does(sandbox: SandboxClient) -> None:
    org = Org(sandbox)
    job_id = org.create("events", events(1))
    path = f"/v2/events/batch/{job_id}"
    assert org.call("GET", path).status_code == 200
    assert org.described["credentials"]["api_key"].startswith("na1.")
    encoded = base64.b64encode(org.key.encode()).decode()
    for header in (f"Basic {encoded}", f"Bearer {org.key}", org.key, "Basic na1.wrong"):
        response = org.http.get(org.base + path, headers={"Authorization": header}, timeout=10)
        assert_error_body(response, 401, "unauthorized")
    assert_error_body(org.http.get(org.base + path, timeout=10), 401, "unauthorized")

    old = org.key
    rotated = sandbox.control(org.id, "rotate")["credentials"]["api_key"]
    assert rotated != old
    assert_error_body(org.call("GET", path, key=old), 401, "unauthorized")
    assert org.call("GET", path, key=rotated).status_code == 200
    sandbox.control(org.id, "revoke")
    assert_error_body(org.call("GET", path, key=rotated), 401, "unauthorized")
    assert org.state()["revoked"] is True


def test_unknown_ids_and_routes_are_404(sandbox: SandboxClient) -> None:
    org = Org(sandbox)
    job_id = org.create("events", events(1))
    body = assert_error_body(org.call("GET", "/v2/events/batch/nope"), 404, "resource_not_found")
    assert body["message"] == "Requested resource does not exist"
    # An events batch is not a users batch.
    assert_error_body(org.call("GET", f"/v2/users/batch/{job_id}"), 404, "resource_not_found")
    assert_error_body(org.call("GET", "/v2/events/batch/nope/errors"), 404, "resource_not_found")
    assert_error_body(org.call("GET", "/v2/nothing"), 404, "resource_not_found")


@pytest.mark.parametrize(
    ("kind", "body", "code"),
    [
        ("events", {}, "required_field"),
        ("events", {"requests": []}, "required_field"),
        ("events", {"requests": [{"properties": {}}]}, "required_field"),
        ("users", {"requests": [{"email": "x@example.com"}]}, "required_field"),
        ("users", {"requests": "nope"}, "invalid_argument"),
        ("events", [1, 2], "invalid_argument"),
    ],
)
def test_malformed_creates_are_400(sandbox: SandboxClient, kind: str, body: Any, code: str) -> None:
    org = Org(sandbox)
    assert_error_body(org.call("POST", f"/v2/{kind}/batch", json=body), 400, code)
    assert org.state()["jobs"] == []


def test_body_that_is_not_json_is_400(sandbox: SandboxClient) -> None:
    org = Org(sandbox)
    response = org.call(
        "POST",
        "/v2/users/batch",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert_error_body(response, 400, "invalid_argument")


def test_idempotency_key_returns_the_first_job(sandbox: SandboxClient) -> None:
    org = Org(sandbox)
    headers = {"Idempotency-Key": "batch-1"}
    first = org.call("POST", "/v2/users/batch", json={"requests": users(2)}, headers=headers)
    again = org.call("POST", "/v2/users/batch", json={"requests": users(2)}, headers=headers)
    assert first.json()["job"]["id"] == again.json()["job"]["id"]
    other = org.call("POST", "/v2/users/batch", json={"requests": users(3)}, headers=headers)
    assert_error_body(other, 400, "invalid_argument")
    # Keys are per kind: the same key on events makes a new events batch.
    events_job = org.call("POST", "/v2/events/batch", json={"requests": events(1)}, headers=headers)
    assert events_job.status_code == 200
    assert len(org.state()["jobs"]) == 2


def test_standard_keys_may_not_read_results(sandbox: SandboxClient) -> None:
    org = Org(sandbox, permission="standard", processing_seconds=0)
    job_id = org.create("events", events(2, {0}))
    assert org.call("GET", f"/v2/events/batch/{job_id}").status_code == 200
    for what in ("errors", "imports"):
        assert_error_body(org.call("GET", f"/v2/events/batch/{job_id}/{what}"), 403, "forbidden")


def test_rate_limit_answers_429_with_retry_after_seconds(sandbox: SandboxClient) -> None:
    org = Org(sandbox, rate_limits=True, requests_per_second=3)
    job_id = org.create("events", events(1))
    statuses = []
    limited = None
    started = time.time()
    for _ in range(100):  # until throttled, however slowly a busy machine sends them
        response = org.call("GET", f"/v2/events/batch/{job_id}")
        statuses.append(response.status_code)
        if response.status_code == 429:
            limited = response
            break
    windows = int(time.time()) - int(started) + 1  # the fixed windows the burst touched
    # Three a second: at most three 200s in each window the burst touched.
    assert limited is not None and statuses.count(200) <= 3 * windows, (statuses, windows)
    assert_error_body(limited, 429, "too_many_requests")
    assert int(limited.headers["Retry-After"]) == 1
    time.sleep(float(limited.headers["Retry-After"]))
    assert org.call("GET", f"/v2/events/batch/{job_id}").status_code == 200


def test_in_progress_ceiling_and_run_slots(sandbox: SandboxClient) -> None:
    org = Org(sandbox, processing_seconds=10, max_running=1, max_in_progress=2)
    first = org.create("users", users(1))
    second = org.create("users", users(1))
    refused = org.call("POST", "/v2/users/batch", json={"requests": users(1)})
    assert_error_body(refused, 429, "too_many_requests")
    assert int(refused.headers["Retry-After"]) == 10  # until the first batch ends
    # One run slot: the second batch waits for the first, then takes its 10 s.
    org.advance(10)
    assert org.job_state(first)["status"] == "COMPLETED"
    assert org.job_state(second)["status"] == "PROCESSING"
    assert org.job_state(second)["started"] == org.job_state(first)["finished"]
    assert org.create("users", users(1))
    org.advance(10)
    assert org.job_state(second)["status"] == "COMPLETED"

    objects = Org(sandbox, max_in_progress_objects=5)
    objects.create("events", events(4))
    refused = objects.call("POST", "/v2/events/batch", json={"requests": events(2)})
    assert_error_body(refused, 429, "too_many_requests")


def test_fail_next_answers_500_server_error(sandbox: SandboxClient) -> None:
    org = Org(sandbox)
    sandbox.control(org.id, "fail_next", count=2)
    for _ in range(2):
        assert_error_body(org.call("GET", "/v2/events/batch/x"), 500, "server_error")
    assert org.call("GET", "/v2/events/batch/x").status_code == 404


# --- seeded worlds and the state tests compare with --------------------------------------


def test_seeded_jobs_and_state_match_the_api(sandbox: SandboxClient) -> None:
    org = Org(sandbox, seed=3, jobs_per_kind=8, page_size=500)
    state = org.state()
    assert state["provider"] == "fullstory" and state["account"] == org.id
    assert state["now"].endswith("+00:00")
    jobs = state["jobs"]
    assert len(jobs) == 16
    assert {j["kind"] for j in jobs} == {"events-batch-import", "users-batch-import"}
    assert {j["status"] for j in jobs} == {"PROCESSING", "COMPLETED", "FAILED"}
    failed = [j for j in jobs if j["status"] == "FAILED"]
    assert any(j["imports"] == 0 for j in failed) and any(j["imports"] > 0 for j in failed)
    for job in jobs:
        assert set(job) == {
            "kind",
            "id",
            "status",
            "imports",
            "errors",
            "created",
            "started",
            "finished",
            "requests",
            "error_count",
        }
        segment = job["kind"].split("-")[0]
        answer = org.call("GET", f"/v2/{segment}/batch/{job['id']}").json()
        assert answer["job"]["status"] == job["status"]
        assert answer["job"]["created"] == job["created"]
        assert answer["job"].get("finished") == job["finished"]
        assert answer["imports"] == job["imports"]
        assert answer.get("errors", 0) == job["errors"]
        if job["status"] == "PROCESSING":
            assert job["imports"] == job["errors"] == 0 and job["finished"] is None
            assert job["error_count"] <= job["requests"]
        else:
            assert job["imports"] + job["errors"] == job["requests"]
            assert job["errors"] == job["error_count"]
            (page,) = org.pages(segment, job["id"], "errors")
            assert int(page["total_records"]) == len(page["results"]) == job["error_count"]
    # The same seed builds the same world.
    again = Org(sandbox, seed=3, jobs_per_kind=8).state()["jobs"]
    assert [(j["id"], j["requests"], j["error_count"]) for j in again] == [
        (j["id"], j["requests"], j["error_count"]) for j in jobs
    ]


def test_create_jobs_control_and_unknown_controls(sandbox: SandboxClient) -> None:
    org = Org(sandbox, processing_seconds=5)
    made = sandbox.control(
        org.id, "create_jobs", kind="users-batch-import", count=2, size=4, failed=1
    )
    assert made["kind"] == "users-batch-import" and len(made["ids"]) == 2
    org.advance(5)
    for job_id in made["ids"]:
        job = org.job_state(job_id)
        assert (job["status"], job["imports"], job["errors"]) == ("FAILED", 3, 1)
    with pytest.raises(requests.HTTPError):
        sandbox.control(org.id, "no_such_action")
    with pytest.raises(requests.HTTPError):
        sandbox.control(org.id, "create_jobs", kind="orders")
    with pytest.raises(requests.HTTPError):
        sandbox.create_account("fullstory", error_share=2)


# --- the log against the spec --------------------------------------------------------------


def test_every_logged_exchange_validates_against_the_spec(sandbox: SandboxClient) -> None:
    org = Org(sandbox, omit_zero_errors=False, page_size=2, processing_seconds=5)
    failed = org.create("events", events(5, {0, 1, 2}))
    clean = org.create("users", users(2))
    org.call("GET", f"/v2/events/batch/{failed}/errors")  # 202
    org.call("GET", f"/v2/users/batch/{clean}/imports")  # 202
    org.advance(5)
    org.pages("events", failed, "errors")
    org.pages("events", failed, "imports", include_schema="true")
    org.pages("users", clean, "imports")
    org.pages("users", clean, "errors")
    for kind, job_id in (("events", failed), ("users", clean)):
        org.call("GET", f"/v2/{kind}/batch/{job_id}")
    org.call("GET", "/v2/users/batch/unknown")  # 404
    org.call("POST", "/v2/events/batch", json={"shared": {}})  # 400: no `requests`
    sandbox.control(org.id, "fail_next", count=1)
    org.call("GET", f"/v2/users/batch/{clean}")  # 500
    sandbox.control(org.id, "revoke")
    org.call("GET", f"/v2/users/batch/{clean}")  # 401

    log = sandbox.requests(org.id)
    statuses = sorted({e["status"] for e in log})
    assert statuses == [200, 202, 400, 401, 404, 500]
    for entry in log:
        assert response_errors(SPEC, entry) == [], entry
        if entry["status"] == 400:
            # The spec refuses the malformed create too: the sandbox's 400 is right.
            assert request_errors(SPEC, entry) != []
        else:
            assert request_errors(SPEC, entry) == [], entry


def test_omitted_errors_is_the_one_documented_departure_from_the_schema(
    sandbox: SandboxClient,
) -> None:
    """`errors` is required by the schema, yet documented as absent when none failed."""
    org = Org(sandbox, processing_seconds=0)
    org.call("GET", f"/v2/users/batch/{org.create('users', users(1))}")
    (entry,) = [e for e in sandbox.requests(org.id) if e["method"] == "GET"]
    problems = response_errors(SPEC, entry)
    assert len(problems) == 1 and "'errors' is a required property" in problems[0]


def test_the_checker_refuses_a_bent_answer(sandbox: SandboxClient) -> None:
    org = Org(sandbox, omit_zero_errors=False, processing_seconds=0)
    job_id = org.create("events", events(2, {0}))
    org.pages("events", job_id, "errors")
    org.call("GET", f"/v2/events/batch/{job_id}")
    log = sandbox.requests(org.id)
    page = next(e for e in log if e["path"].endswith("/errors"))
    assert response_errors(SPEC, page) == []
    # total_records as a number, an empty 200 body, a status outside the enum: all refused.
    bent = dict(page, response_body=page["response_body"].replace('"1"', "1"))
    assert response_errors(SPEC, bent) != []
    assert response_errors(SPEC, dict(page, response_body="")) != []
    status = next(e for e in log if e["method"] == "GET" and e["path"].endswith(job_id))
    assert response_errors(SPEC, status) == []
    bent = dict(status, response_body=status["response_body"].replace("FAILED", "DONE"))
    assert response_errors(SPEC, bent) != []
    # And a request without the Authorization header is refused.
    create = next(e for e in log if e["method"] == "POST")
    headers = {k: v for k, v in create["headers"].items() if k.lower() != "authorization"}
    assert request_errors(SPEC, dict(create, headers=headers)) != []
