"""100,000 jobs: a filtered list page costs a constant number of queries and no full scan.

The plan is read from the database itself (EXPLAIN QUERY PLAN on SQLite, EXPLAIN on
PostgreSQL after ANALYZE) for exactly the SQL the API ran, for the filters staff use:
an account, some statuses, a time range, a kind. Every test runs for a superuser and for
a team member, whose queries also carry the team scoping (jobcenter.queries.scoping):
the same number of queries, and still no full scan.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from jobcenter.models import Job, ProviderAccount, Team
from providers.base import Status
from tests.api_support import BASE_TIME, api_account, make_user, token_client

JOBS = 100_000
ACCOUNTS = 8
OTHER_TEAM = (6, 7)  # these accounts are another team's: a team member never sees them
KINDS = ["product-import", "product-export", "hierarchy-duplicate", "child-products"]
STATUSES = [s.value for s in Status]
TERMINAL = {"succeeded", "partially_failed", "failed", "cancelled", "expired"}

FILTERED_QUERIES = [
    # A deploy pipeline: one account's failures in a week.
    "account={account}&status=failed&status=partially_failed"
    "&created_after=2026-02-01T00:00:00Z&created_before=2026-02-08T00:00:00Z",
    # A notebook: one kind of one account, changed in the last days, newest change first.
    "account={account}&kind=product-export&changed_after=2026-02-20T00:00:00Z"
    "&ordering=-last_changed_at",
    # Staff: everything still running, newest first.
    "status=running&status=queued&terminal=false",
    # One account, page two and on (a cursor), oldest first.
    "account={account}&ordering=created_at&page_size=100",
]


SEED_COLUMNS = (
    "account_id",
    "provider",
    "kind",
    "external_id",
    "status",
    "provider_status",
    "created_at",
    "first_seen_at",
    "last_changed_at",
    "is_terminal",
    "gone_reason",
    "tracked",
    "error_count",
    "payload",
    "digest",
)


def seed_jobs(accounts: list[ProviderAccount]) -> None:
    """Insert JOBS jobs over a year in batches of 5,000 (executemany: model instances and
    bulk_create's per-batch SQL would take most of this module's time)."""
    rng = random.Random(6)
    adapt = connection.ops.adapt_datetimefield_value
    year_ago = BASE_TIME - timedelta(days=365)
    rows = []
    for n in range(JOBS):
        status = rng.choice(STATUSES)
        created = year_ago + timedelta(seconds=rng.randrange(365 * 86400))
        changed = created + timedelta(hours=rng.randrange(48))
        rows.append(
            (
                accounts[n % len(accounts)].pk,
                "elasticpath",
                rng.choice(KINDS),
                f"scale-{n:06d}",
                status,
                status,
                None if n % 500 == 0 else adapt(created),
                adapt(created),
                adapt(changed),
                status in TERMINAL,
                "",
                False,
                0,
                "{}",
                "",
            )
        )
    placeholders = ", ".join(["%s"] * len(SEED_COLUMNS))
    sql = f"INSERT INTO jobcenter_job ({', '.join(SEED_COLUMNS)}) VALUES ({placeholders})"  # noqa: S608
    with connection.cursor() as cursor:
        for start in range(0, JOBS, 5000):
            cursor.executemany(sql, rows[start : start + 5000])
        cursor.execute("ANALYZE")


@pytest.fixture(scope="module")
def many_jobs(django_db_setup: Any, django_db_blocker: Any) -> Any:
    """100,000 jobs for the module, in a transaction rolled back at its end (instant)."""
    with django_db_blocker.unblock(), transaction.atomic():
        other = Team.objects.create(name="Scale other team")
        accounts = [
            api_account(f"scale {n}", **({"team": other} if n in OTHER_TEAM else {}))
            for n in range(ACCOUNTS)
        ]
        seed_jobs(accounts)
        yield accounts
        transaction.set_rollback(True)


@pytest.fixture(params=["viewer", "superuser"])
def viewer_client(request: Any, many_jobs: Any) -> Any:
    """A team member with view permissions (the realistic caller: permission checks and
    the team scoping are in its queries), and a superuser (no scoping)."""
    return token_client(make_user(request.param))


def job_page_query(queries: list[dict[str, str]]) -> str:
    pages = [q["sql"] for q in queries if 'FROM "jobcenter_job"' in q["sql"]]
    assert len(pages) == 1, pages
    return pages[0]


def plan(sql: str) -> str:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + sql)
            return "\n".join(row[-1] for row in cursor.fetchall())
        cursor.execute("EXPLAIN " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


def assert_no_full_scan_of_jobs(text: str) -> None:
    if connection.vendor == "sqlite":
        job_lines = [line for line in text.splitlines() if "jobcenter_job " in line + " "]
        assert job_lines, text
        for line in job_lines:
            assert line.strip().startswith("SEARCH jobcenter_job USING"), text
    else:
        assert "Seq Scan on jobcenter_job" not in text, text
        assert "Index" in text, text


@pytest.mark.django_db
@pytest.mark.parametrize("query", FILTERED_QUERIES)
def test_filtered_list_uses_an_index_and_constant_queries(
    viewer_client: Any,
    many_jobs: Any,
    query: str,
    django_assert_max_num_queries: Any,
) -> None:
    url = "/api/v1/jobs/?" + query.format(account=many_jobs[3].name)
    # Warm the per-user permission cache the way any first request does.
    assert viewer_client.get("/api/v1/jobs/?page_size=1").status_code == 200
    counts = []
    for size in (5, 500):
        with CaptureQueriesContext(connection) as captured:
            response = viewer_client.get(f"{url}&page_size={size}")
        assert response.status_code == 200, response.content[:300]
        counts.append(len(captured.captured_queries))
        first_page = job_page_query(captured.captured_queries)
    assert counts[0] == counts[1]  # the page size does not change the number of queries
    assert_no_full_scan_of_jobs(plan(first_page))
    body = response.json()
    assert body["results"]
    # The second page: still one indexed range query.
    with django_assert_max_num_queries(5), CaptureQueriesContext(connection) as captured:
        second = viewer_client.get(body["next"]) if body["next"] else response
    assert second.status_code == 200
    if body["next"]:
        assert_no_full_scan_of_jobs(plan(job_page_query(captured.captured_queries)))


@pytest.mark.django_db
def test_list_queries_are_few_and_fixed(viewer_client: Any, many_jobs: Any) -> None:
    with CaptureQueriesContext(connection) as captured:
        response = viewer_client.get(
            f"/api/v1/jobs/?account={many_jobs[0].pk}&status=failed&page_size=200"
        )
    assert response.status_code == 200
    assert len(response.json()["results"]) == 200
    # Token and user, account lookup, the page; permissions are cached from before or 2
    # more; the token's first use is recorded (an UPDATE, at most once a minute) or not.
    assert len(captured.captured_queries) <= 6, [q["sql"] for q in captured.captured_queries]


@pytest.mark.django_db
def test_every_job_of_an_account_once_over_all_pages(viewer_client: Any, many_jobs: Any) -> None:
    account = many_jobs[5]
    url: str | None = f"/api/v1/jobs/?account={account.pk}&page_size=500&ordering=-last_changed_at"
    seen: list[int] = []
    while url:
        body = viewer_client.get(url).json()
        seen += [row["id"] for row in body["results"]]
        url = body["next"]
    assert len(seen) == len(set(seen)) == Job.objects.filter(account=account).count()


@pytest.mark.django_db
def test_search_reads_error_text_through_its_indexes_on_postgresql(
    viewer_client: Any, many_jobs: Any
) -> None:
    """`search` on PostgreSQL: the error-text half is served by migration 0007's indexes
    (trigram GIN on UPPER(message), UPPER(title); btree on UPPER(code)), which must match
    the expressions Django writes for icontains and iexact, or every search reads every
    error record. SQLite has no such indexes: its scan of the smaller table stays."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's indexes; SQLite scans the error records")
    from jobcenter.models import JobError

    others = [many_jobs[n].pk for n in OTHER_TEAM]  # a team member finds none of theirs
    jobs = list(Job.objects.exclude(account_id__in=others).order_by("id")[:300])
    JobError.objects.bulk_create(
        JobError(job=job, position=n, code=f"E{n}", title=f"Row {n} invalid", message=text)
        for job in jobs
        for n, text in enumerate([f"Row of {job.external_id}: bad email", "Quota exceeded"])
    )
    with CaptureQueriesContext(connection) as captured:
        response = viewer_client.get(f"/api/v1/jobs/?search={jobs[7].external_id}")
    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [jobs[7].pk]
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE jobcenter_joberror")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # small table: ask what it could use
        text = plan(job_page_query(captured.captured_queries))
    assert "Seq Scan on jobcenter_joberror" not in text, text
    for index in ("job_error_message_trgm", "job_error_title_trgm", "job_error_code_upper"):
        assert index in text, text
