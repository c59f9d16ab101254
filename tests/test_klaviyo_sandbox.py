"""The Klaviyo sandbox over real HTTP: it must behave as Klaviyo does, and as its spec says."""

from __future__ import annotations

import base64
import re
import time
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

import requests

from providers.sandbox.client import SandboxClient
from tests.openapi_check import request_errors, response_errors

SPEC = "klaviyo-jobs"
REVISION = "2026-07-15"
CATALOG = "catalog-item-bulk-create-job"
IMPORT = "profile-bulk-import-job"
SUPPRESSION = "profile-suppression-bulk-create-job"
ALL_KINDS = [
    *(
        f"catalog-{obj}-bulk-{op}-job"
        for obj in ("item", "variant", "category")
        for op in ("create", "update", "delete")
    ),
    "coupon-code-bulk-create-job",
    IMPORT,
    SUPPRESSION,
    "profile-suppression-bulk-delete-job",
]


class Api:
    """Raw HTTP to one sandbox account, with Klaviyo's headers unless told otherwise."""

    def __init__(self, sandbox: SandboxClient, described: dict[str, Any]) -> None:
        self.sandbox = sandbox
        self.id = described["id"]
        self.key = described["credentials"]["api_key"]
        self.base = sandbox.base_url("klaviyo")
        self.session = requests.Session()

    def get(
        self,
        path_or_url: str,
        params: dict[str, Any] | None = None,
        *,
        key: str | None = None,
        revision: str | None = REVISION,
        auth: bool = True,
    ) -> requests.Response:
        headers = {"Accept": "application/vnd.api+json"}
        if auth:
            headers["Authorization"] = f"Klaviyo-API-Key {key or self.key}"
        if revision is not None:
            headers["revision"] = revision
        url = path_or_url if "://" in path_or_url else self.base + path_or_url
        return self.session.get(url, params=params, headers=headers, timeout=10)

    def state(self) -> dict[str, Any]:
        return self.sandbox.state(self.id)

    def advance(self, seconds: float) -> None:
        self.sandbox.clock(self.id, advance=seconds)

    def create(self, kind: str, **payload: Any) -> list[str]:
        return self.sandbox.control(self.id, "create_jobs", kind=kind, **payload)["ids"]


def account(sandbox: SandboxClient, **options: Any) -> Api:
    options = {"seed": 1, "jobs_per_kind": 0, "frozen": True, "rate_limits": False, **options}
    return Api(sandbox, sandbox.create_account("klaviyo", **options))


def first_error(response: requests.Response) -> dict[str, Any]:
    assert response.headers["Content-Type"] == "application/vnd.api+json"
    errors = response.json()["errors"]
    assert len(errors) == 1
    error = errors[0]
    assert {"id", "status", "code", "title", "detail"} <= set(error)
    assert error["status"] == response.status_code
    return error


def walk(api: Api, path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every page of a list, following links.next; the pages as received."""
    pages = []
    response = api.get(path, params)
    while True:
        assert response.status_code == 200, response.text
        pages.append(response.json())
        next_url = pages[-1]["links"].get("next")
        if not next_url:
            return pages
        assert len(pages) < 200
        response = api.get(next_url)


def ids_of(pages: list[dict[str, Any]]) -> list[str]:
    return [job["id"] for page in pages for job in page["data"]]


# --- the world and its clock ---------------------------------------------------------


def test_a_seed_builds_the_same_world_with_every_kind(sandbox: SandboxClient) -> None:
    one = account(sandbox, seed=42, jobs_per_kind=30).state()
    two = account(sandbox, seed=42, jobs_per_kind=30).state()
    other = account(sandbox, seed=43, jobs_per_kind=30).state()

    def shape(state: dict[str, Any]) -> list[tuple]:
        return [(j["kind"], j["id"], j["total_count"], j["failed_count"]) for j in state["jobs"]]

    assert shape(one) == shape(two)
    assert shape(one) != shape(other)
    assert len(one["jobs"]) == 30 * 13
    assert {j["kind"] for j in one["jobs"]} == set(ALL_KINDS)
    assert {"queued", "processing", "complete", "cancelled"} <= {j["status"] for j in one["jobs"]}
    for job in one["jobs"]:
        if job["kind"].startswith("profile-suppression"):
            assert job["failed_count"] is None and job["error_count"] == 0
        elif job["status"] == "complete":
            assert job["error_count"] == job["failed_count"]
            assert job["completed_count"] + job["failed_count"] == job["total_count"]
        else:
            assert job["error_count"] == 0


def test_a_job_moves_from_queued_to_complete_as_the_clock_advances(sandbox) -> None:
    api = account(sandbox)
    (job_id,) = api.create(
        CATALOG,
        outcome="partial",
        total_count=40,
        failed_count=10,
        queued_seconds=60,
        processing_seconds=600,
    )
    path = f"/api/{CATALOG}s/{job_id}"

    queued = api.get(path).json()["data"]
    assert queued["type"] == CATALOG and queued["id"] == job_id
    assert queued["links"]["self"] == f"{api.base}{path}/"
    assert queued["attributes"]["status"] == "queued"
    assert queued["attributes"]["completed_count"] == 0
    assert queued["attributes"]["completed_at"] is None

    api.advance(60 + 300)  # half way through processing
    running = api.get(path).json()["data"]["attributes"]
    assert running["status"] == "processing"
    assert running["completed_count"] == 15  # 30 that will succeed, half done
    assert running["failed_count"] == 0 and running["errors"] == []

    api.advance(301)
    done = api.get(path).json()["data"]["attributes"]
    assert done["status"] == "complete"
    assert (done["completed_count"], done["failed_count"]) == (30, 10)
    assert len(done["errors"]) == 10
    assert len({e["id"] for e in done["errors"]}) == 10
    assert all(e["source"]["pointer"].startswith("/data/") for e in done["errors"])
    completed_at = datetime.fromisoformat(done["completed_at"])
    assert datetime.fromisoformat(done["expires_at"]) - completed_at == timedelta(days=7)
    (listed,) = api.get(f"/api/{CATALOG}s").json()["data"]
    assert listed["attributes"] == done
    (state,) = api.state()["jobs"]
    assert (state["status"], state["error_count"], state["completed_at"]) == (
        "complete",
        10,
        done["completed_at"],
    )

    api.advance(7 * 86400)  # past expires_at: gone from the list, the state and by id
    assert api.get(path).status_code == 404
    assert api.get(f"/api/{CATALOG}s").json()["data"] == []
    assert api.state()["jobs"] == []


def test_cancelled_jobs_keep_their_progress_and_expire_too(sandbox) -> None:
    api = account(sandbox)
    (job_id,) = api.create(
        IMPORT, outcome="cancel", total_count=100, queued_seconds=0, processing_seconds=100
    )
    api.advance(75)
    attributes = api.get(f"/api/{IMPORT}s/{job_id}").json()["data"]["attributes"]
    assert attributes["status"] == "cancelled"
    assert attributes["completed_count"] == 50  # cancelled half way
    assert attributes["started_at"] is not None and attributes["completed_at"] is None
    assert attributes["expires_at"] is not None


def test_expire_control_and_new_jobs_per_minute(sandbox) -> None:
    api = account(sandbox, new_jobs_per_minute=13)
    assert api.state()["jobs"] == []
    api.advance(61)  # one job of each kind every 60/13 seconds
    first = api.state()["jobs"]
    assert sorted(j["kind"] for j in first) == sorted(ALL_KINDS)
    api.advance(60)
    assert len(api.state()["jobs"]) == 26
    twin = account(sandbox, new_jobs_per_minute=13)
    twin.advance(121)
    assert {j["id"] for j in twin.state()["jobs"]} == {j["id"] for j in api.state()["jobs"]}

    gone = first[0]
    result = sandbox.control(api.id, "expire", ids=[gone["id"], "01NOSUCHJOB"])
    assert result == {"expired": [gone["id"]], "unknown": ["01NOSUCHJOB"]}
    assert api.get(f"/api/{gone['kind']}s/{gone['id']}").status_code == 404
    assert gone["id"] not in {j["id"] for j in api.state()["jobs"]}


# --- lists -----------------------------------------------------------------------------


def test_lists_page_by_100_newest_first_with_next_and_prev_links(sandbox) -> None:
    api = account(sandbox, jobs_per_kind=250)
    pages = walk(api, f"/api/{CATALOG}s")
    assert [len(p["data"]) for p in pages] == [100, 100, 50]
    listed = ids_of(pages)
    expected = [j["id"] for j in api.state()["jobs"] if j["kind"] == CATALOG]
    assert listed == expected  # the state lists newest first too
    created = [job["attributes"]["created_at"] for p in pages for job in p["data"]]
    assert created == sorted(created, reverse=True)
    assert "prev" not in pages[0]["links"]
    assert pages[1]["links"]["next"].startswith(api.base + f"/api/{CATALOG}s?")
    back = api.get(pages[2]["links"]["prev"]).json()
    assert ids_of([back]) == ids_of([pages[1]])
    assert pages[0]["links"]["self"] == f"{api.base}/api/{CATALOG}s"


def test_profile_imports_honour_page_size_and_sort(sandbox) -> None:
    api = account(sandbox, jobs_per_kind=23)
    pages = walk(api, f"/api/{IMPORT}s", {"page[size]": 7, "sort": "created_at"})
    assert [len(p["data"]) for p in pages] == [7, 7, 7, 2]
    created = [job["attributes"]["created_at"] for p in pages for job in p["data"]]
    assert created == sorted(created)
    assert "page%5Bsize%5D=7" in pages[0]["links"]["next"]
    assert len(api.get(f"/api/{IMPORT}s").json()["data"]) == 20  # default page size
    newest = walk(api, f"/api/{SUPPRESSION}s", {"sort": "-created"})
    created = [job["attributes"]["created_at"] for p in newest for job in p["data"]]
    assert created == sorted(created, reverse=True)


def test_filters_select_by_status_as_each_endpoint_allows(sandbox) -> None:
    api = account(sandbox, jobs_per_kind=120)
    state = api.state()["jobs"]
    for kind, status in [(CATALOG, "complete"), (SUPPRESSION, "cancelled")]:
        pages = walk(api, f"/api/{kind}s", {"filter": f'equals(status,"{status}")'})
        expected = [j["id"] for j in state if j["kind"] == kind and j["status"] == status]
        assert expected and ids_of(pages) == expected
    pages = walk(api, f"/api/{IMPORT}s", {"filter": "any(status,['queued','processing'])"})
    expected = [
        j["id"] for j in state if j["kind"] == IMPORT and j["status"] in ("queued", "processing")
    ]
    assert expected and sorted(ids_of(pages)) == sorted(expected)

    rejected = [
        (CATALOG, "filter", "any(status,['queued'])"),  # catalog lists allow only equals
        (IMPORT, "filter", 'equals(status,"cancelled")'),  # not a filterable import status
        (CATALOG, "filter", 'equals(created_at,"2026-01-01")'),  # no time filters anywhere
        (SUPPRESSION, "filter", "equals(status,"),
        (CATALOG, "sort", "-created_at"),  # catalog lists cannot sort
        (IMPORT, "sort", "-created"),
        (CATALOG, "page[size]", 10),  # only profile imports take a page size
        (IMPORT, "page[size]", 101),
        (CATALOG, f"fields[{CATALOG}]", "status,started_at"),
    ]
    for kind, name, value in rejected:
        response = api.get(f"/api/{kind}s", {name: value})
        assert response.status_code == 400, (kind, name, value)
        error = first_error(response)
        assert error["code"] == "invalid"
        assert error["source"] == {"parameter": name}


def test_sparse_fieldsets_return_only_the_asked_attributes(sandbox) -> None:
    api = account(sandbox, jobs_per_kind=3)
    fields = "status,created_at,total_count,failed_count"
    data = api.get(f"/api/{CATALOG}s", {f"fields[{CATALOG}]": fields}).json()["data"]
    assert data and all(set(j["attributes"]) == set(fields.split(",")) for j in data)
    full = api.get(f"/api/{IMPORT}s").json()["data"][0]
    assert set(full["attributes"]) == {
        "status",
        "created_at",
        "total_count",
        "completed_count",
        "failed_count",
        "completed_at",
        "expires_at",
        "started_at",
    }
    assert full["relationships"]["import-errors"]["links"]["related"].endswith("/import-errors/")
    suppression = api.get(f"/api/{SUPPRESSION}s").json()["data"][0]["attributes"]
    assert "failed_count" not in suppression and "skipped_count" in suppression


def test_import_errors_are_paged_once_the_import_completes(sandbox) -> None:
    api = account(sandbox)
    (job_id,) = api.create(
        IMPORT,
        outcome="partial",
        total_count=500,
        failed_count=250,
        queued_seconds=0,
        processing_seconds=30,
    )
    path = f"/api/{IMPORT}s/{job_id}/import-errors"
    assert api.get(path).json() == {"data": [], "links": {"self": f"{api.base}{path}"}}
    api.advance(31)
    pages = walk(api, path, {"page[size]": 100})
    assert [len(p["data"]) for p in pages] == [100, 100, 50]
    errors = [e for p in pages for e in p["data"]]
    assert len({e["id"] for e in errors}) == 250
    assert all(e["type"] == "import-error" for e in errors)
    assert all(e["attributes"]["original_payload"]["type"] == "profile" for e in errors)
    assert len(api.get(path).json()["data"]) == 20
    (state,) = api.state()["jobs"]
    assert state["error_count"] == 250 and state["failed_count"] == 250
    assert api.get(f"/api/{IMPORT}s/01NOSUCHJOB/import-errors").status_code == 404


# --- errors as Klaviyo answers them ----------------------------------------------------


def test_auth_and_revision_errors_in_klaviyos_envelope(sandbox) -> None:
    api = account(sandbox, jobs_per_kind=1)
    path = f"/api/{CATALOG}s"
    assert api.get(path).status_code == 200

    missing = api.get(path, auth=False)
    assert missing.status_code == 401
    assert first_error(missing)["code"] == "not_authenticated"
    wrong = api.get(path, key="pk_" + "0" * 34)
    assert wrong.status_code == 401
    error = first_error(wrong)
    assert error["code"] == "authentication_failed"
    assert error["detail"] == "Incorrect authentication credentials."

    for revision in (None, "July 2026", "2026-13-01", "2021-01-01", "2099-01-15"):
        response = api.get(path, revision=revision)
        assert response.status_code == 400, revision
        assert first_error(response)["source"] == {"parameter": "revision"}
    assert api.get(path, revision="2024-02-01").status_code == 200  # served by 2023-12-15
    assert api.get(path, revision="2026-07-15.pre").status_code == 200

    assert api.get(f"{path}/01NOSUCHJOB").status_code == 404
    assert first_error(api.get(f"{path}/01NOSUCHJOB"))["code"] == "not_found"
    assert api.get("/api/no-such-jobs").status_code == 404
    assert api.get(path, {"unknown": "1"}).status_code == 400
    posted = api.session.post(
        api.base + path,
        headers={"Authorization": f"Klaviyo-API-Key {api.key}", "revision": REVISION},
        timeout=10,
    )
    assert posted.status_code == 405

    sandbox.control(api.id, "revoke")
    revoked = api.get(path)
    assert revoked.status_code == 401
    assert first_error(revoked)["code"] == "authentication_failed"


def test_cursors_are_signed_scoped_and_expire_after_three_days(sandbox) -> None:
    api = account(sandbox, jobs_per_kind=150)
    next_url = api.get(f"/api/{CATALOG}s").json()["links"]["next"]
    cursor = re.search(r"page%5Bcursor%5D=([^&]+)", next_url).group(1)
    assert api.get(next_url).status_code == 200

    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    _index, issued, signature = raw.split(":")
    forged = base64.urlsafe_b64encode(f"0:{issued}:{signature}".encode()).decode().rstrip("=")
    for bad in (forged, "bm90LWEtY3Vyc29y", cursor[:-3]):
        response = api.get(f"/api/{CATALOG}s", {"page[cursor]": bad})
        assert response.status_code == 400
        assert first_error(response)["source"] == {"parameter": "page[cursor]"}
    # A cursor of one list means nothing to another.
    assert (
        api.get("/api/catalog-item-bulk-update-jobs", {"page[cursor]": cursor}).status_code == 400
    )

    api.advance(2 * 86400)
    assert api.get(next_url).status_code == 200
    api.advance(1.5 * 86400)
    expired = api.get(next_url)
    assert expired.status_code == 400
    assert "expired" in first_error(expired)["detail"]


def test_rate_limits_answer_429_with_retry_after(sandbox) -> None:
    api = account(sandbox, jobs_per_kind=1, rate_limits=True)
    job_id = api.create(IMPORT)[0]
    path = f"/api/{IMPORT}s/{job_id}"
    answers = []
    for _ in range(300):  # profile imports allow 10/s (150/min): a burst is throttled
        answers.append(api.get(path))
        if answers[-1].status_code == 429:
            break
    throttled = answers[-1]
    assert throttled.status_code == 429
    error = first_error(throttled)
    assert error["code"] == "throttled"
    seconds = int(throttled.headers["Retry-After"])
    assert 1 <= seconds <= 60
    assert re.fullmatch(
        r"Request was throttled\. Expected available in \d+ seconds\.", error["detail"]
    )
    assert "RateLimit-Remaining" not in throttled.headers
    ok = [r for r in answers if r.status_code == 200]
    assert ok and all(r.headers["RateLimit-Limit"] == "150" for r in ok)
    remaining = [int(r.headers["RateLimit-Remaining"]) for r in ok]
    # One less per request, unless a new steady window began during the burst.
    steps = list(pairwise(remaining))
    assert sum(b == a - 1 for a, b in steps) >= len(steps) - 1
    # Other endpoints have their own windows.
    assert api.get(f"/api/{CATALOG}s").status_code == 200
    time.sleep(seconds)
    assert api.get(path).status_code == 200


# --- the spec --------------------------------------------------------------------------


def test_every_answer_validates_against_the_spec(sandbox) -> None:
    """Lists, gets, import errors, and the 400, 401, 404 and 429 answers, checked against
    the spec; then every answer the Klaviyo sandbox gave in this session."""
    api = account(sandbox, jobs_per_kind=5)
    api.create(IMPORT, outcome="fail", total_count=3, queued_seconds=0, processing_seconds=0)
    for kind in ALL_KINDS:
        pages = walk(api, f"/api/{kind}s")
        api.get(f"/api/{kind}s/{pages[0]['data'][0]['id']}")
    for job in api.state()["jobs"]:
        if job["kind"] == IMPORT:
            walk(api, f"/api/{IMPORT}s/{job['id']}/import-errors", {"page[size]": 2})
    api.get(f"/api/{CATALOG}s/01NOSUCHJOB")
    api.get(f"/api/{CATALOG}s", {"filter": "nonsense"})
    api.get(f"/api/{CATALOG}s", key="pk_" + "1" * 34)
    limited = account(sandbox, jobs_per_kind=1, rate_limits=True)
    for _ in range(300):  # until throttled, however slowly a busy machine sends them
        if limited.get(f"/api/{IMPORT}s").status_code == 429:
            break

    entries = [e for e in sandbox.requests() if e["provider"] == "klaviyo"]
    mine = [e for e in entries if e["account"] in (api.id, limited.id)]
    assert {200, 400, 404, 429} <= {e["status"] for e in mine}
    assert any(e["status"] == 401 for e in entries)
    for entry in mine:
        assert not request_errors(SPEC, entry), entry["query_string"]
    checked = 0
    for entry in entries:
        # Answers on paths and methods the spec has (not the deliberate 404/405 probes),
        # and not the faults other tests inject on purpose (an HTML 502, a cut-off body).
        if entry["method"] != "GET" or "/no-such-" in entry["path"]:
            continue
        if "X-Sandbox-Fault" in entry.get("response_headers", {}):
            continue
        problems = response_errors(SPEC, entry)
        assert not problems, (entry["status"], entry["path"], entry["query_string"], problems)
        checked += 1
    assert checked >= len(mine)
