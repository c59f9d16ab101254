"""The job list and the dashboard with 100,000 jobs: size-independent work, few queries.

What a page costs the database is counted, not timed: SQLite's own count of the
virtual-machine instructions it ran (the same on every run, however busy the machine).
A page whose queries are served by indexes and capped counts does the same work at
50,000 and at 100,000 jobs; one that read the whole table would do twice as much. Render
times on the wall clock are printed (run with -s) but asserted nowhere: the 1 s target
is measured by `make bench` (bench/large.py), on a machine left alone.

Each test runs for a superuser and for a team member (staff with view permissions, in
the team that holds the accounts): the team scoping (jobcenter.queries.scoping) must
keep the pages on their indexes and their capped counts capped.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from jobcenter.admin.common import CappedCountPaginator
from jobcenter.models import Job, ProviderAccount, Team, TeamMembership
from tests.admin_support import plain_account, seed_jobs

# Committed, as a real database is: 100,000 rows left uncommitted in one transaction
# spill out of SQLite's page cache and make every read slower than production's.
pytestmark = pytest.mark.django_db(transaction=True)

JOBS = 100_000
# Work at 100,000 jobs over work at 50,000 (about 1.0 today; a scan of the table: 2.0).
MAX_GROWTH = 1.25
MAX_QUERIES = 12  # session, user, a capped count, the page, the account filter, ...
TEAM = "Scale team"

PAGES = {
    "job list": lambda: reverse("admin:jobcenter_job_changelist"),
    "failed Klaviyo jobs": lambda: (
        reverse("admin:jobcenter_job_changelist") + "?provider=klaviyo&status=failed"
    ),
    "dashboard": lambda: reverse("admin:index"),
    # No index serves "not ended" yet (see the report): a scan, so not held to the growth.
    "stuck jobs": lambda: reverse("admin:jobcenter_job_changelist") + "?stuck=yes",
}
GROWTH_PAGES = ["job list", "failed Klaviyo jobs", "dashboard"]


@pytest.fixture(params=["superuser", "team member"])
def staff_client(request: Any, admin_client: Any) -> Any:
    """The superuser's client, or a team member's: staff with every view permission of
    Job Center, in the team that `team_accounts` puts the accounts in."""
    if request.param == "superuser":
        return admin_client
    member = User.objects.create_user("member", password="pw", is_staff=True)
    member.user_permissions.set(
        Permission.objects.filter(content_type__app_label="jobcenter", codename__startswith="view_")
    )
    TeamMembership.objects.create(team=Team.objects.get_or_create(name=TEAM)[0], user=member)
    client = Client()
    client.force_login(member)
    return client


def team_accounts(accounts: dict[str, ProviderAccount]) -> dict[str, ProviderAccount]:
    """The accounts, in the team member's team (another team holds one more, without jobs)."""
    team = Team.objects.get_or_create(name=TEAM)[0]
    ProviderAccount.objects.filter(pk__in=[a.pk for a in accounts.values()]).update(team=team)
    plain_account("other team's", "klaviyo", team=Team.objects.create(name="Other team"))
    return accounts


def render(client: Any, url: str) -> Any:
    response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    return response


def database_work(client: Any, url: str) -> int:
    """Hundreds of SQLite virtual-machine instructions one render ran (0 elsewhere)."""
    if connection.vendor != "sqlite":
        return 0
    connection.ensure_connection()
    ticks = [0]

    def tick() -> int:
        ticks[0] += 1
        return 0  # carry on

    connection.connection.set_progress_handler(tick, 100)
    try:
        render(client, url)
    finally:
        connection.connection.set_progress_handler(None, 100)
    return ticks[0]


def seeded_work(client: Any, accounts: dict, jobs: int) -> tuple[dict[str, int], dict[str, float]]:
    """Each page's database work and its least wall time (for the report) at `jobs` jobs."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM jobcenter_job")
    with transaction.atomic():
        seed_jobs(accounts, jobs, timezone.now())
    with connection.cursor() as cursor:
        # What a long-lived database has; the planner uses it.
        cursor.execute("ANALYZE" if connection.vendor == "sqlite" else "VACUUM ANALYZE")
    assert Job.objects.count() == jobs
    urls = {name: url() for name, url in PAGES.items()}
    for url in urls.values():
        render(client, url)  # warm-up
    work = {name: database_work(client, url) for name, url in urls.items()}
    wall = {}
    for name, url in urls.items():
        times = []
        for _ in range(3):
            started = time.perf_counter()
            render(client, url)
            times.append(time.perf_counter() - started)
        wall[name] = min(times)
    return work, wall


def test_job_list_and_dashboard_stay_fast_and_few_queries_at_100k_jobs(
    staff_client: Any, django_assert_max_num_queries: Any, capsys: Any
) -> None:
    accounts = team_accounts(
        {
            provider: plain_account(f"{provider} scale", provider)
            for provider in ("klaviyo", "elasticpath", "fullstory")
        }
    )
    half, _ = seeded_work(staff_client, accounts, JOBS // 2)
    full, wall = seeded_work(staff_client, accounts, JOBS)
    with capsys.disabled():
        for name in PAGES:
            print(
                f"\n[admin scale] {name}: database work {half[name]} at {JOBS // 2:,} jobs, "
                f"{full[name]} at {JOBS:,}; wall {wall[name] * 1000:.1f} ms (not asserted)"
            )
    if connection.vendor == "sqlite":
        for name in GROWTH_PAGES:
            assert 0 < full[name] <= MAX_GROWTH * half[name], (name, half[name], full[name])

    for url in PAGES.values():
        with django_assert_max_num_queries(MAX_QUERIES):
            render(staff_client, url())


def test_the_job_list_never_counts_the_whole_table(staff_client: Any) -> None:
    accounts = team_accounts(
        {p: plain_account(f"{p} count", p) for p in ("klaviyo", "elasticpath", "fullstory")}
    )
    seed_jobs(accounts, CappedCountPaginator.cap + 500, timezone.now())
    with CaptureQueriesContext(connection) as captured:
        response = render(staff_client, reverse("admin:jobcenter_job_changelist"))
    counts = [q["sql"] for q in captured.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts, "the capped count runs"
    for sql in counts:
        assert "LIMIT" in sql.upper(), sql
    text = response.content.decode()
    assert f"More than {CappedCountPaginator.cap} jobs match" in text
    # The capped list still pages: page 2 exists, and so does the last counted page.
    assert (
        render(staff_client, reverse("admin:jobcenter_job_changelist") + "?p=2").status_code == 200
    )
