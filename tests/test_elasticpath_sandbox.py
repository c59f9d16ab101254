"""The Elastic Path sandbox over real HTTP: does it behave like the real PXM jobs API?

These tests speak raw HTTP (no provider module), so a sandbox that drifts from Elastic
Path's documented behaviour fails here even if the provider happens to agree with it.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
import requests

from providers.sandbox.client import SandboxClient
from providers.sandbox.elasticpath import JOB_TYPES
from tests.openapi_check import request_errors, response_errors

SPEC = "elasticpath-pcm-jobs"


class Store:
    """One sandbox store and a plain `requests` session speaking to it."""

    def __init__(self, sandbox: SandboxClient, **options: Any) -> None:
        options.setdefault("frozen", True)
        options.setdefault("rate_limits", False)
        options.setdefault("jobs_per_kind", 0)
        self.sandbox = sandbox
        self.described = sandbox.create_account("elasticpath", **options)
        self.id: str = self.described["id"]
        self.credentials: dict[str, str] = self.described["credentials"]
        self.base = sandbox.base_url("elasticpath")
        self.http = requests.Session()

    def token_response(self, **form: str) -> requests.Response:
        body = {"grant_type": "client_credentials", **self.credentials, **form}
        return self.http.post(f"{self.base}/oauth/access_token", data=body, timeout=10)

    def token(self) -> str:
        response = self.token_response()
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def get(self, path: str, token: str | None = None, **params: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token or self.token()}"}
        return self.http.get(f"{self.base}{path}", headers=headers, params=params, timeout=10)

    def all_jobs(self, token: str) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = []
        while True:
            page = self.get("/pcm/jobs", token, **{"page[offset]": len(jobs), "page[limit]": 100})
            assert page.status_code == 200, page.text
            jobs += page.json()["data"]
            if len(page.json()["data"]) < 100:
                return jobs

    def state(self) -> dict[str, Any]:
        return self.sandbox.state(self.id)

    def log(self) -> list[dict[str, Any]]:
        return self.sandbox.requests(self.id)


def assert_envelope(body: dict[str, Any], status: int, *, string_status: bool) -> None:
    """Elastic Path's error envelope: errors[] with status, title, detail, request_id."""
    (item,) = body["errors"]
    assert item["status"] == (str(status) if string_status else status)
    assert item["title"]
    assert item["detail"]


def test_token_endpoint_issues_top_level_tokens_that_expire_on_the_account_clock(
    sandbox: SandboxClient,
) -> None:
    store = Store(sandbox, token_lifetime=120)
    answer = store.token_response()
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "expires", "identifier"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 120
    assert body["identifier"] == "client_credentials"
    token = body["access_token"]
    assert store.get("/pcm/jobs", token).status_code == 200

    sandbox.clock(store.id, advance=119)
    assert store.get("/pcm/jobs", token).status_code == 200
    sandbox.clock(store.id, advance=2)
    expired = store.get("/pcm/jobs", token)
    assert expired.status_code == 401
    assert_envelope(expired.json(), 401, string_status=False)
    assert "expired" in expired.json()["errors"][0]["detail"]
    # A new token works again.
    assert store.get("/pcm/jobs", store.token()).status_code == 200
    assert store.state()["tokens_issued"] == 2


def test_token_endpoint_refuses_bad_secrets_and_malformed_forms(sandbox: SandboxClient) -> None:
    store = Store(sandbox)
    wrong = store.token_response(client_secret="not-the-secret")
    assert wrong.status_code == 401
    assert_envelope(wrong.json(), 401, string_status=True)
    no_grant = store.http.post(
        f"{store.base}/oauth/access_token",
        data={"client_id": store.credentials["client_id"]},
        timeout=10,
    )
    assert no_grant.status_code == 400
    as_json = store.http.post(
        f"{store.base}/oauth/access_token",
        json={"grant_type": "client_credentials", **store.credentials},
        timeout=10,
    )
    assert as_json.status_code == 400
    no_token = store.http.get(f"{store.base}/pcm/jobs", timeout=10)
    assert no_token.status_code == 401
    assert_envelope(no_token.json(), 401, string_status=False)
    # Implicit tokens exist but may not read PXM jobs.
    implicit = store.http.post(
        f"{store.base}/oauth/access_token",
        data={"grant_type": "implicit", "client_id": store.credentials["client_id"]},
        timeout=10,
    )
    assert implicit.json()["identifier"] == "implicit"
    assert store.get("/pcm/jobs", implicit.json()["access_token"]).status_code == 403


def test_revoke_kills_tokens_and_the_secret_and_rotate_issues_a_new_one(
    sandbox: SandboxClient,
) -> None:
    store = Store(sandbox)
    token = store.token()
    sandbox.control(store.id, "revoke")
    assert store.get("/pcm/jobs", token).status_code == 401
    assert store.token_response().status_code == 401
    assert store.state()["revoked"] is True
    rotated = sandbox.control(store.id, "rotate_secret")["credentials"]
    assert rotated["client_secret"] != store.credentials["client_secret"]
    assert store.token_response().status_code == 401  # the old secret stays dead
    store.credentials = rotated
    assert store.get("/pcm/jobs", store.token()).status_code == 200


def test_seeded_store_has_every_type_and_status_with_their_meta(sandbox: SandboxClient) -> None:
    store = Store(sandbox, seed=5, jobs_per_kind=20)
    token = store.token()
    jobs = store.all_jobs(token)
    assert len(jobs) == 100
    assert {j["attributes"]["type"] for j in jobs} == set(JOB_TYPES)
    statuses = Counter(j["attributes"]["status"] for j in jobs)
    assert set(statuses) == {"pending", "started", "success", "failed", "cancelled"}
    assert statuses["started"] == 1  # one job at a time per store
    for job in jobs:
        assert job["type"] == "pim-job"
        assert set(job["attributes"]) == {
            "started_at",
            "completed_at",
            "created_at",
            "updated_at",
            "type",
            "status",
        }
        meta = job["meta"]
        assert meta["x_request_id"]
        kind, status = job["attributes"]["type"], job["attributes"]["status"]
        if kind == "hierarchy-duplicate":
            assert meta["copied_from"] and meta["hierarchy_id"]
        if kind == "product-export":
            assert meta["filter"]
            if status == "success":
                assert isinstance(meta["file_locations"], list)
            else:
                assert meta["file_locations"] is None
        if status in ("pending", "cancelled"):
            assert job["attributes"]["started_at"] is None
        if status in ("success", "failed"):
            assert job["attributes"]["completed_at"] >= job["attributes"]["started_at"]
    exports = [
        j
        for j in jobs
        if j["attributes"]["type"] == "product-export" and j["attributes"]["status"] == "success"
    ]
    assert any(j["meta"]["file_locations"] for j in exports)
    # Newest first, times as Go writes them (milliseconds, trailing zeros cut, Z).
    created = [j["attributes"]["created_at"] for j in jobs]
    assert created == sorted(created, reverse=True)
    assert all(c.endswith("Z") and len(c) <= len("2024-01-05T13:46:42.142Z") for c in created)


def test_state_matches_what_the_api_answers(sandbox: SandboxClient) -> None:
    store = Store(sandbox, seed=2, jobs_per_kind=4)
    token = store.token()
    jobs = {j["id"]: j for j in store.all_jobs(token)}
    state = store.state()
    assert state["provider"] == "elasticpath"
    assert {j["id"] for j in state["jobs"]} == set(jobs)
    for entry in state["jobs"]:
        job = jobs[entry["id"]]
        assert entry["kind"] == job["attributes"]["type"]
        assert entry["status"] == job["attributes"]["status"]
        for name in ("created_at", "started_at", "completed_at", "updated_at"):
            assert entry[name] == job["attributes"][name]
        assert entry["meta"] == job["meta"]
        errors = store.get(f"/pcm/jobs/{entry['id']}/errors", token).json()["data"]
        assert entry["error_count"] == len(errors)
        assert entry["errors"] == [e["attributes"]["message"] for e in errors]
        assert (entry["error_count"] > 0) == (entry["status"] == "failed")


def test_jobs_run_one_at_a_time_oldest_pending_first(sandbox: SandboxClient) -> None:
    store = Store(sandbox)
    ids = sandbox.control(store.id, "create_jobs", type="product-import", count=3, duration=60)[
        "ids"
    ]
    ids += sandbox.control(
        store.id, "create_jobs", type="product-export", count=1, duration=60, outcome="failed"
    )["ids"]
    token = store.token()

    def statuses() -> list[str]:
        return [
            store.get(f"/pcm/jobs/{i}", token).json()["data"]["attributes"]["status"] for i in ids
        ]

    assert statuses() == ["pending"] * 4  # picked up a moment after creation
    sandbox.clock(store.id, advance=1)
    assert statuses() == ["started", "pending", "pending", "pending"]
    sandbox.clock(store.id, advance=60)
    assert statuses() == ["success", "started", "pending", "pending"]
    # The export has no errors until it has failed, and no files when it fails.
    assert store.get(f"/pcm/jobs/{ids[3]}/errors", token).json() == {"data": []}
    sandbox.clock(store.id, advance=180)
    assert statuses() == ["success", "success", "success", "failed"]
    failed = store.get(f"/pcm/jobs/{ids[3]}", token).json()["data"]
    assert failed["meta"]["file_locations"] is None
    errors = store.get(f"/pcm/jobs/{ids[3]}/errors", token).json()["data"]
    assert errors and all(
        e["type"] == "pim-job-error" and e["attributes"]["message"] for e in errors
    )
    first, second = (store.get(f"/pcm/jobs/{i}", token).json()["data"] for i in ids[:2])
    assert second["attributes"]["started_at"] >= first["attributes"]["completed_at"]


def test_only_pending_jobs_can_be_cancelled_and_the_queue_moves_up(
    sandbox: SandboxClient,
) -> None:
    store = Store(sandbox)
    ids = sandbox.control(store.id, "create_jobs", type="price-import", count=3, duration=100)[
        "ids"
    ]
    sandbox.clock(store.id, advance=1)
    token = store.token()
    cancel = store.http.post(
        f"{store.base}/pcm/jobs/{ids[0]}/cancel",
        headers={"Authorization": f"Bearer {token}"},
        json={},
        timeout=10,
    )
    assert cancel.status_code == 422  # it has started
    assert_envelope(cancel.json(), 422, string_status=True)
    cancel = store.http.post(
        f"{store.base}/pcm/jobs/{ids[1]}/cancel",
        headers={"Authorization": f"Bearer {token}"},
        json={},
        timeout=10,
    )
    assert cancel.status_code == 200
    assert cancel.json()["data"]["attributes"]["status"] == "cancelled"
    sandbox.clock(store.id, advance=100)
    third = store.get(f"/pcm/jobs/{ids[2]}", token).json()["data"]["attributes"]
    assert third["status"] == "started"  # it moved up behind the first


def test_offset_paging_limits_and_the_soft_offset_limit(sandbox: SandboxClient) -> None:
    store = Store(sandbox, seed=1, jobs_per_kind=6)
    token = store.token()
    default = store.get("/pcm/jobs", token).json()
    assert len(default["data"]) == 25
    assert default["meta"]["results"]["total"] == 30
    assert default["meta"]["page"] == {"limit": 25, "offset": 0, "current": 1, "total": 2}
    tail = store.get("/pcm/jobs", token, **{"page[offset]": 25}).json()
    assert len(tail["data"]) == 5
    assert {j["id"] for j in tail["data"]}.isdisjoint(j["id"] for j in default["data"])
    too_big = store.get("/pcm/jobs", token, **{"page[limit]": 101})
    assert too_big.status_code == 400
    assert_envelope(too_big.json(), 400, string_status=True)
    assert store.get("/pcm/jobs", token, **{"page[offset]": 10_000}).status_code == 200
    too_deep = store.get("/pcm/jobs", token, **{"page[offset]": 10_001})
    assert too_deep.status_code == 400
    assert "10000" in too_deep.json()["errors"][0]["detail"]
    missing = store.get("/pcm/jobs/00000000-0000-0000-0000-000000000000", token)
    assert missing.status_code == 404
    assert_envelope(missing.json(), 404, string_status=True)


def test_results_total_can_lie_as_in_the_spec_example(sandbox: SandboxClient) -> None:
    store = Store(sandbox, seed=1, jobs_per_kind=2, misreport_total=True)
    body = store.get("/pcm/jobs").json()
    assert len(body["data"]) == 10
    assert body["meta"]["results"]["total"] == 1


def test_rate_limit_answers_429_without_retry_after(sandbox: SandboxClient) -> None:
    store = Store(sandbox, rate_limits=True, requests_per_second=3)
    token = store.token()  # the token endpoint is not counted
    time.sleep(1 - time.time() % 1 + 0.02)  # start at the top of a fixed window
    started = time.time()
    answers = []
    for _ in range(100):  # until throttled, however slowly a busy machine sends them
        answers.append(store.get("/pcm/jobs", token))
        if answers[-1].status_code == 429:
            break
    windows = int(time.time()) - int(started) + 1  # the fixed windows the burst touched
    codes = [a.status_code for a in answers]
    assert codes[-1] == 429 and codes[:3] == [200, 200, 200]
    # Three a window: exactly three 200s when the burst fit in one (as on an idle machine).
    assert codes.count(200) <= 3 * windows, (codes, windows)
    limited = answers[-1]
    assert "Retry-After" not in limited.headers
    assert_envelope(limited.json(), 429, string_status=False)


def test_request_log_keeps_the_secret_and_tokens_out_and_spec_validates(
    sandbox: SandboxClient,
) -> None:
    store = Store(sandbox, seed=4, jobs_per_kind=2)
    token = store.token()
    jobs = store.all_jobs(token)
    store.get(f"/pcm/jobs/{jobs[0]['id']}", token)
    store.get(f"/pcm/jobs/{jobs[0]['id']}/errors", token)
    store.token_response(client_secret="wrong-secret")
    log = store.log()
    assert [e["path"] for e in log].count("/oauth/access_token") == 2
    text = repr(log)
    assert store.credentials["client_secret"] not in text
    assert token not in text
    for entry in log:
        assert request_errors(SPEC, entry) == [], entry
        assert response_errors(SPEC, entry) == [], entry


def test_unknown_controls_and_bad_outcomes_are_refused(sandbox: SandboxClient) -> None:
    store = Store(sandbox)
    with pytest.raises(requests.HTTPError):
        sandbox.control(store.id, "no-such-action")
    with pytest.raises(requests.HTTPError):
        sandbox.control(store.id, "create_jobs", type="product-import", outcome="exploded")
    assert sandbox.control(store.id, "set_token_lifetime", seconds=5) == {"token_lifetime": 5}
    assert store.token_response().json()["expires_in"] == 5
