"""The job list and the dashboard with 100,000 jobs: fast, and a bounded number of queries.

Each page's work is compared with the same page over an empty jobs table in the same run
(a ratio is stable across machines); the absolute bound on the wall clock is the issue's
1 s. Run with -s to see the figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from jobcenter.admin.common import CappedCountPaginator
from jobcenter.models import Job
from tests.admin_support import plain_account, seed_jobs

# Committed, as a real database is: 100,000 rows left uncommitted in one transaction
# spill out of SQLite's page cache and make every read slower than production's.
pytestmark = pytest.mark.django_db(transaction=True)

JOBS = 100_000
MAX_RATIO = 5.0
MAX_SECONDS = 1.0
MAX_QUERIES = 12  # session, user, a capped count, the page, the account filter, ...

PAGES = {
    "job list": lambda: reverse("admin:jobcenter_job_changelist"),
    "failed Klaviyo jobs": lambda: (
        reverse("admin:jobcenter_job_changelist") + "?provider=klaviyo&status=failed"
    ),
    "dashboard": lambda: reverse("admin:index"),
    # No index serves "not ended" yet (see the report): a scan, held to the absolute bound.
    "stuck jobs": lambda: reverse("admin:jobcenter_job_changelist") + "?stuck=yes",
}
RATIO_PAGES = ["job list", "failed Klaviyo jobs", "dashboard"]


def render(client: Any, url: str) -> Any:
    response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    return response


@dataclass
class Cost:
    wall: float  # seconds on the clock: what a staff member waits
    work: float  # seconds of work: this process's CPU plus the database server's time


def measure(client: Any, url: str) -> Cost:
    """One render's wall time and its work.

    The work is the CPU time of this process (the test client, Django, and SQLite, which
    runs in-process) plus, on a database server, the time its queries took. Unlike wall
    time it does not grow when other processes share the machine (CI runs several test
    suites on two cores), so the ratio compares the pages and not the neighbours.
    """
    server = connection.vendor != "sqlite"
    with CaptureQueriesContext(connection) as queries:
        wall, cpu = time.perf_counter(), time.process_time()
        render(client, url)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    db = sum(float(q["time"]) for q in queries.captured_queries) if server else 0.0
    return Cost(wall=wall, work=cpu + db)


def costs(client: Any, rounds: int = 7) -> dict[str, Cost]:
    """The least wall time and the least work of each page over `rounds` rounds, after a
    warm-up round; pages taken in turn, so a busy moment does not land on one only."""
    urls = {name: url() for name, url in PAGES.items()}
    for url in urls.values():
        render(client, url)
    best = {name: Cost(float("inf"), float("inf")) for name in urls}
    for _ in range(rounds):
        for name, url in urls.items():
            cost = measure(client, url)
            best[name].wall = min(best[name].wall, cost.wall)
            best[name].work = min(best[name].work, cost.work)
    return best


def test_job_list_and_dashboard_stay_fast_and_few_queries_at_100k_jobs(
    admin_client: Any, django_assert_max_num_queries: Any, capsys: Any
) -> None:
    accounts = {
        provider: plain_account(f"{provider} scale", provider)
        for provider in ("klaviyo", "elasticpath", "fullstory")
    }
    empty = costs(admin_client)

    with transaction.atomic():
        seed_jobs(accounts, JOBS, timezone.now())
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # what a long-lived database has; the planner uses it
    assert Job.objects.count() == JOBS

    full = costs(admin_client)
    with capsys.disabled():
        for name in PAGES:
            print(
                f"\n[admin scale] {name}: work {empty[name].work * 1000:.1f} ms empty, "
                f"{full[name].work * 1000:.1f} ms at {JOBS:,} jobs, ratio "
                f"{full[name].work / empty[name].work:.2f}; wall {empty[name].wall * 1000:.1f}"
                f" -> {full[name].wall * 1000:.1f} ms"
            )
    for name in PAGES:
        assert full[name].wall < MAX_SECONDS, (name, full[name])
    for name in RATIO_PAGES:
        assert full[name].work / empty[name].work <= MAX_RATIO, (name, empty[name], full[name])

    for url in PAGES.values():
        with django_assert_max_num_queries(MAX_QUERIES):
            render(admin_client, url())


def test_the_job_list_never_counts_the_whole_table(admin_client: Any) -> None:
    accounts = {p: plain_account(f"{p} count", p) for p in ("klaviyo", "elasticpath", "fullstory")}
    seed_jobs(accounts, CappedCountPaginator.cap + 500, timezone.now())
    with CaptureQueriesContext(connection) as captured:
        response = render(admin_client, reverse("admin:jobcenter_job_changelist"))
    counts = [q["sql"] for q in captured.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts, "the capped count runs"
    for sql in counts:
        assert "LIMIT" in sql.upper(), sql
    text = response.content.decode()
    assert f"More than {CappedCountPaginator.cap} jobs match" in text
    # The capped list still pages: page 2 exists, and so does the last counted page.
    assert (
        render(admin_client, reverse("admin:jobcenter_job_changelist") + "?p=2").status_code == 200
    )
