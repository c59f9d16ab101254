"""Jobs, snapshots, errors and sync runs: filters, ordering, paging, detail, tracking.

Every test runs for a superuser and for a member of the team that holds the accounts
(`api_account`'s): the team scoping changes neither the answers nor the query counts.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.db.models import F
from django.http import QueryDict

from jobcenter.models import Job, JobError, JobSnapshot, SyncRun
from jobcenter.queries.filters import ErrorFilter, JobFilter, SnapshotFilter, SyncRunFilter
from tests.api_support import (
    BASE_TIME,
    api_account,
    grant,
    make_job,
    make_user,
    seed_history,
    token_client,
)

pytestmark = pytest.mark.django_db

V1 = "/api/v1"
NULLS_LARGEST = connection.features.nulls_order_largest


@pytest.fixture(params=["superuser", "team member"])
def client(request: Any) -> Any:
    cache.clear()  # throttle counters
    if request.param == "superuser":
        return token_client(make_user("superuser"))
    return token_client(grant(make_user("viewer"), "change_job"))  # views, and tracking


@pytest.fixture
def seeded() -> dict[str, Any]:
    account = api_account()
    return {"account": account, **seed_history(account)}


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.content[:500]
    return [row["external_id"] for row in response.json()["results"]]


def all_pages(client: Any, url: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content[:500]
        rows += response.json()["results"]
        url = response.json()["next"]
    return rows


# --- filters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", None),
        ("status=failed", ["job-00002"]),
        ("status=failed&status=running", ["job-00003", "job-00002"]),
        ("terminal=false", "undated-and-running"),
        ("terminal=true&gone=false", ["job-00002", "job-00001"]),
        ("gone=true", ["job-00005"]),
        ("tracked=true", ["job-00004"]),
        ("kind=product-import&provider=elasticpath", None),
        ("kind=price-import", []),
        ("provider=klaviyo", []),
        ("account=EP+main", None),
        (
            "created_after=2026-03-01T12:02:00Z&created_before=2026-03-01T12:05:00Z",
            ["job-00003", "job-00002"],
        ),
        ("changed_after=2026-03-01T12:05:00%2B00:00", ["job-00005"]),
        ("changed_after=2026-03-02T09:51:00%2B21:46", ["job-00005"]),
        ("changed_before=2026-03-01T12:02:00Z", ["job-00001"]),
        ("search=job-00003", ["job-00003"]),
        ("search=is+taken", ["job-00002"]),
        ("search=E-SKU", ["job-00002"]),
        ("search=job-0000", []),
        ("ordering=created_at", "ascending"),
        ("ordering=-id", ["job-00005", "job-00004", "job-00003", "job-00002", "job-00001"]),
    ],
)
def test_job_filters(client: Any, seeded: dict[str, Any], query: str, expected: Any) -> None:
    # job-00004 has no created_at yet: NULL sorts where the database puts it.
    dated = ["job-00005", "job-00003", "job-00002", "job-00001"]
    newest_first = ["job-00004", *dated] if NULLS_LARGEST else [*dated, "job-00004"]
    if expected is None:
        expected = newest_first
    elif expected == "ascending":
        expected = newest_first[::-1]
    elif expected == "undated-and-running":
        expected = [j for j in newest_first if j in ("job-00003", "job-00004")]
    assert ids(client.get(f"{V1}/jobs/?{query}")) == expected


def test_account_filter_takes_id_or_name(client: Any, seeded: dict[str, Any]) -> None:
    other = api_account("EP second")
    make_job(other, 9)
    by_id = ids(client.get(f"{V1}/jobs/?account={other.pk}"))
    by_name = ids(client.get(f"{V1}/jobs/?account=EP second"))
    assert by_id == by_name == ["job-00009"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=nope", "status"),
        ("status=failed&status=bogus", "status"),
        ("kind=no-such-kind", "kind"),
        ("provider=acme", "provider"),
        ("account=nobody", "account"),
        ("account=50%25+off", "account"),
        ("account=%C2%B2", "account"),
        ("account=99999999999999999999999", "account"),
        ("created_after=yesterday", "created_after"),
        ("changed_before=2026-13-45T00:00:00Z", "changed_before"),
        ("created_after=0001-01-01T00:00:00%2B05:00", "created_after"),
        (
            "cursor=eyJvIjpbIi1jcmVhdGVkX2F0IiwiLWlkIl0sInYiOlsiMDAwMS0wMS0wMVQwMDowMDowMCswNTowMCIsMV0sImIiOmZhbHNlfQ",
            "cursor",
        ),
        ("terminal=maybe", "terminal"),
        ("gone=2", "gone"),
        ("ordering=status", "ordering"),
        ("ordering=-payload", "ordering"),
        ("search=" + "x" * 201, "search"),
        ("search=a%00b", "search"),
        ("page_size=0", "page_size"),
        ("page_size=501", "page_size"),
        ("page_size=ten", "page_size"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=eyJvIjpbXX0", "cursor"),
    ],
)
def test_bad_filters_are_400_with_the_field(
    client: Any, seeded: dict[str, Any], query: str, field: str
) -> None:
    response = client.get(f"{V1}/jobs/?{query}")
    assert response.status_code == 400, response.content[:300]
    assert field in response.json()


def test_filtersets_work_on_a_plain_queryset(seeded: dict[str, Any]) -> None:
    """What the exports do: a QueryDict and a queryset, no request, no view."""
    jobs = JobFilter(QueryDict("status=failed&account=EP main"), queryset=Job.objects.all())
    assert jobs.is_valid()
    assert [j.external_id for j in jobs.qs] == ["job-00002"]
    snapshots = SnapshotFilter(QueryDict("status=running"), queryset=JobSnapshot.objects.all())
    assert [s.job.external_id for s in snapshots.qs] == ["job-00003"]
    errors = ErrorFilter(QueryDict("search=1 is taken"), queryset=JobError.objects.all())
    assert [e.position for e in errors.qs] == [1]
    runs = SyncRunFilter(QueryDict("outcome=succeeded"), queryset=SyncRun.objects.all())
    assert list(runs.qs) == [seeded["run"]]
    bad = JobFilter(QueryDict("status=nope"), queryset=Job.objects.all())
    assert not bad.is_valid()
    assert "status" in bad.errors


def test_filterset_orders_even_without_an_ordering_parameter(seeded: dict[str, Any]) -> None:
    qs = JobFilter(QueryDict(""), queryset=Job.objects.all()).qs
    assert qs.query.order_by == ("-created_at", "-id")


# --- paging -------------------------------------------------------------------------------


def test_pages_cover_every_job_once_even_with_inserts_between_pages(client: Any) -> None:
    account = api_account()
    for n in range(1, 26):
        # Equal created_at for pairs: the id breaks the ties.
        make_job(account, n, created_at=BASE_TIME + timedelta(minutes=n // 2))
    make_job(account, 90, created_at=None)
    first = client.get(f"{V1}/jobs/?page_size=7")
    seen = [row["external_id"] for row in first.json()["results"]]
    assert first.json()["previous"] is None
    # A newer job arrives while the caller pages: it is before the cursor, not a repeat.
    make_job(account, 99, created_at=BASE_TIME + timedelta(days=1))
    seen += [row["external_id"] for row in all_pages(client, first.json()["next"])]
    expected = list(
        Job.objects.exclude(external_id="job-00099")
        .order_by("-created_at", "-id")
        .values_list("external_id", flat=True)
    )
    assert seen == expected
    assert len(seen) == len(set(seen)) == 26


def test_previous_link_goes_back(client: Any) -> None:
    account = api_account()
    for n in range(1, 11):
        make_job(account, n)
    page1 = client.get(f"{V1}/jobs/?page_size=4").json()
    page2 = client.get(page1["next"]).json()
    back = client.get(page2["previous"]).json()
    assert [r["id"] for r in back["results"]] == [r["id"] for r in page1["results"]]
    assert back["previous"] is None
    assert back["next"] is not None


def test_ordering_ascending_pages(client: Any) -> None:
    account = api_account()
    for n in range(1, 8):
        make_job(account, n, completed_at=None if n % 3 == 0 else BASE_TIME + timedelta(hours=n))
    rows = all_pages(client, f"{V1}/jobs/?ordering=completed_at&page_size=2")
    dated = ["job-00001", "job-00002", "job-00004", "job-00005", "job-00007"]
    undated = ["job-00003", "job-00006"]
    expected = dated + undated if NULLS_LARGEST else undated + dated
    assert [r["external_id"] for r in rows] == expected


def test_cursor_of_another_ordering_is_refused(client: Any, seeded: dict[str, Any]) -> None:
    page = client.get(f"{V1}/jobs/?page_size=2").json()
    cursor = page["next"].split("cursor=")[1].split("&")[0]
    response = client.get(f"{V1}/jobs/?ordering=id&cursor={cursor}")
    assert response.status_code == 400
    assert "cursor" in response.json()


# --- detail and nested lists ---------------------------------------------------------------


def test_job_detail_embeds_latest_snapshots_and_first_errors(
    client: Any, django_assert_max_num_queries: Any
) -> None:
    account = api_account()
    job = make_job(account, 1, status="failed")
    JobSnapshot.objects.bulk_create(
        JobSnapshot(
            job=job, observed_at=BASE_TIME + timedelta(minutes=i), status="running", digest=str(i)
        )
        for i in range(30)
    )
    JobError.objects.bulk_create(
        JobError(job=job, position=i, message=f"row {i} failed") for i in range(30)
    )
    client.get(f"{V1}/jobs/{job.pk}/")  # the token's last use is written once a minute
    # Token and user, the team member's permissions (2), the job, its snapshots and errors.
    with django_assert_max_num_queries(6):
        response = client.get(f"{V1}/jobs/{job.pk}/")
    body = response.json()
    assert response.status_code == 200
    assert body["payload"] == {"id": "job-00001"}
    assert body["account_name"] == "EP main"
    assert len(body["snapshots"]) == 20
    assert body["snapshots"][0]["digest"] == "29"  # newest first
    assert [e["position"] for e in body["errors"]] == list(range(20))


def test_job_detail_ignores_list_filters(client: Any, seeded: dict[str, Any]) -> None:
    job = seeded["jobs"][0]
    assert client.get(f"{V1}/jobs/{job.pk}/?status=failed").status_code == 200


@pytest.mark.parametrize("path", ["/jobs/{}/", "/jobs/{}/snapshots/", "/jobs/{}/errors/"])
@pytest.mark.parametrize("bad", ["999999", "abc", "99999999999999999999999"])
def test_missing_or_malformed_job_ids_are_404(client: Any, path: str, bad: str) -> None:
    response = client.get(V1 + path.format(bad))
    assert response.status_code == 404


def test_job_snapshots_and_errors_lists(client: Any, seeded: dict[str, Any]) -> None:
    job = seeded["jobs"][1]
    snapshots = client.get(f"{V1}/jobs/{job.pk}/snapshots/").json()["results"]
    assert [s["job"] for s in snapshots] == [job.pk]
    errors = client.get(f"{V1}/jobs/{job.pk}/errors/").json()["results"]
    assert [e["message"] for e in errors] == ["SKU 0 is taken", "SKU 1 is taken"]
    other = seeded["jobs"][0]
    assert client.get(f"{V1}/jobs/{other.pk}/errors/").json()["results"] == []


def test_snapshot_list_filters_by_observed_time_and_job_fields(
    client: Any, seeded: dict[str, Any]
) -> None:
    response = client.get(
        f"{V1}/snapshots/?observed_after=2026-03-01T12:01:00Z"
        "&observed_before=2026-03-01T12:04:00Z&terminal=true&ordering=observed_at"
    )
    jobs = {j.pk: j.external_id for j in seeded["jobs"]}
    assert [jobs[s["job"]] for s in response.json()["results"]] == ["job-00002"]


def test_sync_runs_filter_by_account_outcome_and_time(client: Any, seeded: dict[str, Any]) -> None:
    account = seeded["account"]
    failed = SyncRun.objects.create(
        account=account, trigger="api", outcome="failed", started_at=BASE_TIME
    )
    rows = client.get(f"{V1}/sync-runs/?account={account.name}&outcome=failed").json()["results"]
    assert [r["id"] for r in rows] == [failed.pk]
    assert rows[0]["account_name"] == "EP main"
    before = client.get(f"{V1}/sync-runs/?started_before=2026-03-02T00:00:00Z").json()
    assert [r["id"] for r in before["results"]] == [failed.pk]
    assert client.get(f"{V1}/sync-runs/?outcome=great").status_code == 400


# --- tracking -------------------------------------------------------------------------------


def test_track_creates_then_finds(client: Any, seeded: dict[str, Any]) -> None:
    body = {"account": "EP main", "kind": "product-export", "external_id": " exp-1 "}
    first = client.post(f"{V1}/jobs/track/", body, format="json")
    assert first.status_code == 201, first.content
    assert first.json()["tracked"] is True
    assert first.json()["external_id"] == "exp-1"
    assert first.json()["status"] == "unknown"
    again = client.post(f"{V1}/jobs/track/", body, format="json")
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (
            {"account": "nobody", "kind": "product-import", "external_id": "x"},
            "account",
            "No account",
        ),
        (
            {"account": "EP main", "kind": "profile-bulk-import-job", "external_id": "x"},
            "kind",
            "has no job kind",
        ),
        (
            {"account": "EP main", "kind": "product-import", "external_id": "a b"},
            "external_id",
            "spaces",
        ),
        (
            {"account": "EP main", "kind": "product-import", "external_id": "x" * 300},
            "external_id",
            "at most 255",
        ),
        ({"account": "EP main", "kind": "product-import"}, "external_id", "required"),
        (
            {"account": ["EP main"], "kind": "product-import", "external_id": "x"},
            "account",
            "valid string",
        ),
    ],
)
def test_track_refuses_like_the_admin_form(
    client: Any, seeded: dict[str, Any], body: dict, field: str, words: str
) -> None:
    before = Job.objects.count()
    response = client.post(f"{V1}/jobs/track/", body, format="json")
    assert response.status_code == 400
    assert words in str(response.json()[field])
    assert Job.objects.count() == before


def test_track_is_json_only(client: Any, seeded: dict[str, Any]) -> None:
    response = client.post(
        f"{V1}/jobs/track/", "account=EP+main", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 415


def test_track_is_throttled(client: Any, seeded: dict[str, Any], monkeypatch: Any) -> None:
    from rest_framework.throttling import ScopedRateThrottle

    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"jobcenter-track": "2/min"})
    body = {"account": "EP main", "kind": "product-import", "external_id": "t"}
    codes = [client.post(f"{V1}/jobs/track/", body, format="json").status_code for _ in range(3)]
    assert codes == [201, 200, 429]
    # Reads are not throttled.
    assert client.get(f"{V1}/jobs/").status_code == 200


@pytest.mark.parametrize("ordering", ["-created_at", "created_at"])
def test_pages_forth_and_back_across_the_jobs_without_a_value(client: Any, ordering: str) -> None:
    """Rows with and without the leading key are read apart; paging must not notice."""
    account = api_account()
    for n in range(1, 30):
        created = None if n % 4 == 0 else BASE_TIME + timedelta(minutes=n // 3)
        make_job(account, n, created_at=created)
    pages = [client.get(f"{V1}/jobs/?ordering={ordering}&page_size=3").json()]
    while pages[-1]["next"]:
        assert len(pages) < 20, "paging does not end"  # 29 jobs, 3 a page
        pages.append(client.get(pages[-1]["next"]).json())
    forward = [row["id"] for page in pages for row in page["results"]]
    field = ordering.lstrip("-")
    nulls = "first" if ordering.startswith("-") == NULLS_LARGEST else "last"
    expected = Job.objects.order_by(
        getattr(F(field), "desc" if ordering.startswith("-") else "asc")(
            **{f"nulls_{nulls}": True}
        ),
        "-id" if ordering.startswith("-") else "id",
    ).values_list("id", flat=True)
    assert forward == list(expected)
    # Back from the last page, each previous page is the one seen going forwards.
    page = pages[-1]
    for earlier in reversed(pages[:-1]):
        page = client.get(page["previous"]).json()
        assert [row["id"] for row in page["results"]] == [row["id"] for row in earlier["results"]]
    assert page["previous"] is None
