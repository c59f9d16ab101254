"""Live pages through the test client (jobcenter.admin.live): what a page and a poll cost,
when a version moves, and who may ask.

The job page, the job list, the account list and the dashboard carry a live marker and
have a version endpoint. A page costs exactly the queries it cost before live updates (it
is compared with itself with JOBCENTER_LIVE_SECONDS=0); a poll is one query on Job
Center's tables beside the session's, with 3 rows or 60, and its database work does not
grow with the jobs table. Versions follow the staff member's own teams' rows only; the
endpoints answer as the pages do (another team's job is not found). The browser side is
tests/test_browser_live.py.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection, transaction
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from jobcenter.admin.live import COMMIT_SLACK
from jobcenter.models import Job, JobError, ProviderAccount
from tests.admin_support import plain_account, seed_jobs
from tests.api_support import api_account, join, make_job
from tests.team_support import TeamWorld, team_world
from tests.test_admin_scale import MAX_GROWTH, database_work

pytestmark = pytest.mark.django_db

PAGES = ("job list", "job page", "account list", "dashboard")
WHO = ("A", "superuser")  # a team member (staff with view permissions), a superuser


def live_urls(world: TeamWorld, key: str = "A") -> dict[str, tuple[str, str]]:
    """Each live page of team `key`'s staff: (the page, its version endpoint)."""
    job = world.teams[key].job
    return {
        "job list": (
            reverse("admin:jobcenter_job_changelist"),
            reverse("admin:jobcenter_job_live"),
        ),
        "job page": (
            reverse("admin:jobcenter_job_change", args=[job.pk]),
            reverse("admin:jobcenter_job_live_object", args=[job.pk]),
        ),
        "account list": (
            reverse("admin:jobcenter_provideraccount_changelist"),
            reverse("admin:jobcenter_provideraccount_live"),
        ),
        "dashboard": (reverse("admin:index"), reverse("admin:jobcenter_dashboard_live")),
    }


def html_of(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code, response.content[:300])
    return response.content.decode()


def live_marker(html: str) -> dict[str, str] | None:
    """The attributes of the page's live marker, or None when it has none."""
    found = re.search(r'<div class="jc-live"([^>]*)>', html)
    if found is None:
        return None
    return dict(re.findall(r'([\w-]+)="([^"]*)"', found.group(1)))


def poll(client: Client, url: str, **params: Any) -> dict[str, Any]:
    response = client.get(url, params)
    assert response.status_code == 200, (url, response.status_code, response.content[:300])
    assert "no-store" in response["Cache-Control"]
    return response.json()


def versions(client: Client, world: TeamWorld) -> dict[str, str]:
    return {name: poll(client, url)["version"] for name, (_, url) in live_urls(world).items()}


def settled(world: TeamWorld) -> None:
    """Every row of the world last changed an hour ago (creating accounts stamped now)."""
    ProviderAccount.objects.update(updated_at=timezone.now() - timedelta(hours=1))


# --- what pages and polls cost --------------------------------------------------------------


@pytest.fixture(params=WHO)
def viewer(request: Any) -> tuple[TeamWorld, Client]:
    """The two teams' world, and a client logged in as each of WHO in turn."""
    world = team_world()
    return world, world.client(request.param)


@pytest.mark.parametrize("name", PAGES)
def test_a_live_page_costs_the_queries_it_costs_without_live_updates(
    viewer: tuple[TeamWorld, Client], name: str, django_assert_num_queries: Any
) -> None:
    world, client = viewer
    url, endpoint = live_urls(world)[name]
    with override_settings(JOBCENTER_LIVE_SECONDS=0):
        html_of(client, url)  # warm-up (content types, the session's first write)
        with CaptureQueriesContext(connection) as without_live:
            html = html_of(client, url)
        assert live_marker(html) is None
        # Read now: the test client's next request empties the connection's query log.
        expected = len(without_live.captured_queries)
    html_of(client, url)
    with django_assert_num_queries(expected):
        html = html_of(client, url)
    marker = live_marker(html)
    assert marker is not None and marker["data-live-url"] == endpoint
    assert marker["data-live-seconds"] == "2"
    # The job page carries its version (from the row it read); the others their render time.
    assert ("data-live-version" in marker) == (name == "job page")
    assert ("data-live-since" in marker) == (name != "job page")
    assert 'src="/static/jobcenter/live.js"' in html
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []  # nothing inline
    assert "data-live-region=" in html


def test_the_job_list_costs_the_same_with_more_rows(django_assert_num_queries: Any) -> None:
    world = team_world()
    client = world.client("A")
    url = reverse("admin:jobcenter_job_changelist")
    html_of(client, url)
    with CaptureQueriesContext(connection) as few:
        html_of(client, url)
    for number in range(40):
        make_job(world.teams["A"].account, 1000 + number)
    with django_assert_num_queries(len(few.captured_queries)):
        html = html_of(client, url)
    assert html.count('<th class="field-external_id">') == 42


def own_queries(captured: list[dict[str, str]]) -> list[str]:
    """The queries that read accounts or jobs (not the session, user, permissions, teams)."""
    return [
        q["sql"]
        for q in captured
        if "jobcenter_job" in q["sql"] or "jobcenter_provideraccount" in q["sql"]
    ]


@pytest.mark.parametrize("name", PAGES)
def test_a_poll_is_one_query_whatever_the_rows(
    viewer: tuple[TeamWorld, Client], name: str, django_assert_num_queries: Any
) -> None:
    world, client = viewer
    _, endpoint = live_urls(world)[name]
    poll(client, endpoint)
    with CaptureQueriesContext(connection) as few:
        poll(client, endpoint, since="0")
    assert len(own_queries(few.captured_queries)) == 1, own_queries(few.captured_queries)
    account = world.teams["A"].account
    for number in range(60):
        make_job(account, 1000 + number, status="running", is_terminal=False)
    for number in range(5):
        api_account(f"More accounts {number}", team=world.teams["A"].team)
    with django_assert_num_queries(len(few.captured_queries)):
        poll(client, endpoint, since="0")


@pytest.mark.django_db(transaction=True)  # committed rows, as in tests/test_admin_scale.py
def test_a_polls_database_work_does_not_grow_with_the_jobs_table(
    viewer: tuple[TeamWorld, Client],
) -> None:
    """SQLite's own instruction count of each poll (0 elsewhere) at 5,000 and 20,000 jobs,
    as tests/test_admin_scale.py counts pages: the newest change is read from the top of
    the `job_last_changed` index, not by reading the jobs."""
    world, client = viewer
    team = world.teams["A"].team
    accounts = {
        provider: plain_account(f"Scale {provider}", provider, team=team)
        for provider in ("klaviyo", "elasticpath", "fullstory")
    }
    endpoints = [url for name, (_, url) in live_urls(world).items() if name != "job page"]
    work = {}
    for jobs in (5_000, 20_000):
        Job.objects.filter(account__in=accounts.values()).delete()
        with transaction.atomic():
            seed_jobs(accounts, jobs, timezone.now())
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE" if connection.vendor == "sqlite" else "VACUUM ANALYZE")
        for url in endpoints:
            poll(client, url)  # warm-up
        work[jobs] = [database_work(client, url) for url in endpoints]
    for small, large in zip(work[5_000], work[20_000], strict=True):
        assert large <= small * MAX_GROWTH + 2, work  # 2: a few hundred instructions of noise


# --- when a version moves -------------------------------------------------------------------


def test_versions_follow_the_staff_members_own_rows_only() -> None:
    world = team_world()
    settled(world)
    client = world.client("A")
    before = versions(client, world)
    assert len(set(before.values())) == len(before)  # four different things
    assert versions(client, world) == before  # nothing changed: nothing moves

    # Team B's job and account change: nothing of team A's staff moves.
    now = timezone.now()
    other = world.teams["B"]
    Job.objects.filter(pk=other.job.pk).update(status="running", last_changed_at=now)
    ProviderAccount.objects.filter(pk=other.account.pk).update(last_sync_at=now)
    make_job(other.account, 5000, last_changed_at=now)
    assert versions(client, world) == before

    # A sync changes team A's job: its page, the job list and the dashboard move.
    own = world.teams["A"]
    Job.objects.filter(pk=own.job.pk).update(status="succeeded", last_changed_at=now)
    after_job = versions(client, world)
    moved = {name for name in PAGES if after_job[name] != before[name]}
    assert moved == {"job page", "job list", "dashboard"}

    # The run ends (last_sync_at): the account list and the dashboard move.
    ProviderAccount.objects.filter(pk=own.account.pk).update(last_sync_at=now)
    after_run = versions(client, world)
    moved = {name for name in PAGES if after_run[name] != after_job[name]}
    assert moved == {"account list", "dashboard"}

    # A new job of team A moves the job list and the dashboard.
    make_job(own.account, 5001, last_changed_at=now + timedelta(seconds=1))
    after_new = versions(client, world)
    moved = {name for name in PAGES if after_new[name] != after_run[name]}
    assert moved == {"job list", "dashboard"}

    # The superuser sees team B's changes too.
    root = world.client("superuser")
    seen = versions(root, world)
    Job.objects.filter(pk=other.job.pk).update(last_changed_at=now + timedelta(seconds=2))
    assert versions(root, world)["job list"] != seen["job list"]


def test_the_job_page_carries_the_version_its_endpoint_gives_until_the_job_changes() -> None:
    world = team_world()
    client = world.client("A")
    job = world.teams["A"].job
    url, endpoint = live_urls(world)["job page"]
    embedded = live_marker(html_of(client, url))["data-live-version"]
    assert poll(client, endpoint)["version"] == embedded

    # What a sync does to a job without changing its own fields: it is seen again
    # (last_seen_at), its error records are fetched (errors_fetched_at, error_count).
    now = timezone.now()
    steps = [
        {"last_seen_at": now, "last_checked_at": now},
        {"errors_fetched_at": now, "error_count": 2},
        {"gone_at": now},
    ]
    seen = {embedded}
    for changes in steps:
        if "error_count" in changes:
            JobError.objects.create(job=job, position=1, message="Second error")
        Job.objects.filter(pk=job.pk).update(**changes)
        version = poll(client, endpoint)["version"]
        assert version not in seen, changes
        seen.add(version)
        html = html_of(client, url)
        assert live_marker(html)["data-live-version"] == version
    assert "Second error" in html


def test_the_first_poll_says_whether_anything_changed_after_the_page_was_read() -> None:
    """Lists and the dashboard send their render time with the first poll: a change
    stamped before it but within the commit slack may have been invisible to the page."""
    world = team_world()
    settled(world)
    client = world.client("A")
    url, endpoint = live_urls(world)["job list"]
    since = float(live_marker(html_of(client, url))["data-live-since"])
    assert poll(client, endpoint, since=since)["stale"] is False
    assert "stale" not in poll(client, endpoint)  # later polls compare versions

    job = world.teams["A"].job
    stamped = timezone.now() - COMMIT_SLACK / 2
    Job.objects.filter(pk=job.pk).update(last_changed_at=stamped)
    assert poll(client, endpoint, since=stamped.timestamp() + 1)["stale"] is True
    later = stamped + COMMIT_SLACK * 2
    assert poll(client, endpoint, since=later.timestamp())["stale"] is False
    # The dashboard and the account list count account edits and sync ends too.
    for name in ("dashboard", "account list"):
        _, endpoint = live_urls(world)[name]
        assert poll(client, endpoint, since=later.timestamp())["stale"] is False
        ProviderAccount.objects.filter(pk=world.teams["A"].account.pk).update(last_sync_at=later)
        assert poll(client, endpoint, since=later.timestamp())["stale"] is True
        ProviderAccount.objects.update(last_sync_at=None)
    assert poll(client, endpoint, since="not a time")["stale"] is True  # fetch once, to be sure


# --- who may ask ------------------------------------------------------------------------------


def test_another_teams_job_is_not_found_and_polls_need_the_pages_permissions() -> None:
    world = team_world()
    member = world.client("A")
    other_job = world.teams["B"].job
    assert (
        member.get(reverse("admin:jobcenter_job_live_object", args=[other_job.pk])).status_code
        == 404
    )
    assert member.get(reverse("admin:jobcenter_job_change", args=[other_job.pk])).status_code == 302

    # Staff who may view accounts but not jobs: the account list only.
    viewer = User.objects.create_user("accounts-only", password="pw", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_provideraccount"))
    join(viewer, world.teams["A"].team)
    client = Client()
    client.force_login(viewer)
    urls = live_urls(world)
    assert client.get(urls["account list"][1]).status_code == 200
    for name in ("job list", "job page", "dashboard"):
        assert client.get(urls[name][1]).status_code == 403, name

    # Staff in no team: the dashboard is not theirs; lists answer for no rows at all.
    loner = world.client("noteam")
    assert loner.get(urls["dashboard"][1]).status_code == 403
    assert loner.get(urls["job page"][1]).status_code == 404
    empty = poll(loner, urls["job list"][1])["version"]
    make_job(world.teams["A"].account, 6000, last_changed_at=timezone.now())
    assert poll(loner, urls["job list"][1])["version"] == empty

    # Nobody logged in: the admin's login page, as for any admin URL.
    for _, endpoint in urls.values():
        response = Client().get(endpoint)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


@override_settings(JOBCENTER_LIVE_SECONDS=0)
def test_live_updates_off_means_no_marker_and_no_endpoints() -> None:
    world = team_world()
    client = world.client("superuser")
    for url, endpoint in live_urls(world).values():
        html = html_of(client, url)
        assert live_marker(html) is None and "live.js" not in html
        assert client.get(endpoint).status_code == 404
