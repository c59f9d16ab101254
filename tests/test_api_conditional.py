"""Conditional GETs: every list and detail of /api/v1/ carries a weak ETag and answers a
matching `If-None-Match` with a 304 in two queries (the token, the user's permissions
with it, and the answer's fingerprint), whatever the list holds.

The ETag moves with whatever the answer shows: a sync that changes a job's status, error
records fetched or added, a job marked gone (against the sandbox over real HTTP, through
the sync engine); and it is never shared by two users, two filters or two pages.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission, User
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIRequestFactory

from jobcenter.api import views
from jobcenter.api.authentication import TokenAuthentication
from jobcenter.api.conditional import serializer_columns
from jobcenter.models import Job, JobError, JobSnapshot, SyncRun, Team
from jobcenter.sync.engine import sync_account
from tests.api_support import (
    BASE_TIME,
    api_account,
    api_key,
    grant,
    join,
    make_user,
    seed_history,
    token_client,
)
from tests.factories import sandbox_account

V1 = "/api/v1"
ENDPOINTS = [
    "/jobs/",
    "/jobs/{job}/",
    "/jobs/{job}/snapshots/",
    "/jobs/{job}/errors/",
    "/snapshots/",
    "/snapshots/{snapshot}/",
    "/errors/",
    "/errors/{error}/",
    "/accounts/",
    "/accounts/{account}/",
    "/sync-runs/",
    "/sync-runs/{run}/",
]


@pytest.fixture(params=["superuser", "team member"])
def client(request: Any) -> Any:
    cache.clear()
    if request.param == "superuser":
        return token_client(make_user("superuser"))
    return token_client(make_user("viewer"))


@pytest.fixture
def seeded() -> dict[str, Any]:
    account = api_account()
    return {"account": account, **seed_history(account)}


def url_of(template: str, seeded: dict[str, Any]) -> str:
    return V1 + template.format(
        job=seeded["jobs"][1].pk,
        snapshot=seeded["snapshots"][0].pk,
        error=seeded["errors"][0].pk,
        account=seeded["account"].pk,
        run=seeded["run"].pk,
    )


def etag_of(client: Any, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, response.content[:300]
    etag = response["ETag"]
    assert etag.startswith('W/"'), etag
    return etag


def again(client: Any, url: str, etag: str) -> Any:
    return client.get(url, HTTP_IF_NONE_MATCH=etag)


def viewer_of(team: Team, name: str) -> User:
    """A staff member with view permissions in `team`."""
    user = User.objects.create_user(name, password="pw-not-used", is_staff=True)
    join(user, team)
    return grant(user, "view_job", "view_jobsnapshot", "view_joberror", "view_syncrun")


# --- the protocol ------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("template", ENDPOINTS)
def test_every_list_and_detail_answers_304_to_its_etag_in_two_queries(
    client: Any, seeded: dict[str, Any], template: str, django_assert_max_num_queries: Any
) -> None:
    url = url_of(template, seeded)
    first = client.get(url)  # the token's last use is written at most once a minute
    etag = first["ETag"]
    assert first["Cache-Control"] == "private, no-cache"
    with django_assert_max_num_queries(2):
        response = again(client, url, etag)
    assert response.status_code == 304
    assert response.content == b""
    assert response["ETag"] == etag
    assert response["Cache-Control"] == first["Cache-Control"]
    assert response["Vary"] == first["Vary"]
    for header in ("Accept", "Authorization", "Cookie"):
        assert header in response["Vary"]


@pytest.mark.django_db
def test_if_none_match_compares_weakly_and_takes_lists_and_star(
    client: Any, seeded: dict[str, Any]
) -> None:
    url = f"{V1}/jobs/"
    etag = etag_of(client, url)
    strong = etag.removeprefix("W/")
    assert again(client, url, strong).status_code == 304
    assert again(client, url, f'"other", {etag}').status_code == 304
    assert again(client, url, "*").status_code == 304
    assert again(client, url, '"other", W/"stale"').status_code == 200
    assert again(client, url, "not an etag").status_code == 200
    # A stale tag gets the answer, with the same tag as before (nothing changed).
    stale = again(client, url, 'W/"0123456789abcdef0123456789abcdef"')
    assert stale.status_code == 200
    assert stale["ETag"] == etag


@pytest.mark.django_db
def test_head_answers_304_too(client: Any, seeded: dict[str, Any]) -> None:
    url = f"{V1}/jobs/{seeded['jobs'][0].pk}/"
    etag = etag_of(client, url)
    assert client.head(url)["ETag"] == etag
    assert client.head(url, HTTP_IF_NONE_MATCH=etag).status_code == 304


@pytest.mark.django_db
def test_errors_come_before_any_304(client: Any, seeded: dict[str, Any]) -> None:
    """Bad input is a 400 with field errors, a missing row a 404, with or without a tag."""
    for bad in ("status=nope", "page_size=0", "cursor=garbage", "changed_after=yesterday"):
        response = client.get(f"{V1}/jobs/?{bad}", HTTP_IF_NONE_MATCH="*")
        assert response.status_code == 400, bad
        assert bad.split("=")[0] in response.json()
    for path in ("/jobs/999999/", "/jobs/999999/errors/", "/jobs/abc/snapshots/"):
        assert client.get(V1 + path, HTTP_IF_NONE_MATCH="*").status_code == 404


@pytest.mark.django_db
def test_another_teams_rows_are_404_whatever_the_tag(seeded: dict[str, Any]) -> None:
    outsider = token_client(viewer_of(Team.objects.create(name="Other team"), "outsider"))
    job = seeded["jobs"][1]
    insider = token_client(make_user("viewer"))
    for path in (
        f"/jobs/{job.pk}/",
        f"/jobs/{job.pk}/errors/",
        f"/errors/{seeded['errors'][0].pk}/",
    ):
        etag = etag_of(insider, V1 + path)
        assert outsider.get(V1 + path, HTTP_IF_NONE_MATCH=etag).status_code == 404
        assert outsider.get(V1 + path, HTTP_IF_NONE_MATCH="*").status_code == 404


@pytest.mark.django_db
def test_the_browsable_api_gets_no_etag(seeded: dict[str, Any]) -> None:
    browser = Client()
    browser.force_login(make_user("superuser"))
    page = browser.get(f"{V1}/jobs/", HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    assert "ETag" not in page
    assert page["Cache-Control"] == "private, no-cache"
    json_answer = browser.get(f"{V1}/jobs/", HTTP_ACCEPT="application/json")
    assert (
        browser.get(
            f"{V1}/jobs/", HTTP_ACCEPT="application/json", HTTP_IF_NONE_MATCH=json_answer["ETag"]
        ).status_code
        == 304
    )


# --- never shared ------------------------------------------------------------------------


@pytest.mark.django_db
def test_two_filters_orderings_pages_or_representations_never_share_an_etag(
    seeded: dict[str, Any],
) -> None:
    client = token_client(make_user("superuser"))
    urls = [
        f"{V1}/jobs/",
        f"{V1}/jobs/?status=failed",
        f"{V1}/jobs/?status=failed&status=running",
        f"{V1}/jobs/?ordering=last_changed_at",
        f"{V1}/jobs/?page_size=2",
        f"{V1}/jobs/?page_size=3",
        f"{V1}/jobs/?gone=true",  # the same one row as ...
        f"{V1}/jobs/?status=expired",  # ... this one
    ]
    second_page = client.get(f"{V1}/jobs/?page_size=2").json()["next"]
    etags = [etag_of(client, url) for url in urls] + [etag_of(client, second_page)]
    etags.append(client.get(f"{V1}/jobs/", HTTP_ACCEPT="application/json; indent=4")["ETag"])
    assert len(set(etags)) == len(etags)
    for url, etag in zip(urls, etags, strict=False):
        assert again(client, url, etag).status_code == 304
    assert again(client, second_page, etags[len(urls)]).status_code == 304


@pytest.mark.django_db
def test_two_users_or_teams_never_share_an_etag(seeded: dict[str, Any]) -> None:
    team = Team.objects.get(name="API team")
    first, second = viewer_of(team, "first"), viewer_of(team, "second")
    outsider = viewer_of(Team.objects.create(name="Other team"), "outsider")
    superuser = make_user("superuser")
    clients = {user.username: token_client(user) for user in (first, second, outsider, superuser)}
    for path in ("/jobs/", "/sync-runs/", f"/jobs/{seeded['jobs'][1].pk}/"):
        etags = {}
        for name, client in clients.items():
            response = client.get(V1 + path)
            etags[name] = response["ETag"] if response.status_code == 200 else None
        assert len({e for e in etags.values() if e}) == len([e for e in etags.values() if e])
        # One team's members see the same rows, yet one's tag is no 304 for the other.
        assert clients["first"].get(V1 + path).json() == clients["second"].get(V1 + path).json()
        assert again(clients["second"], V1 + path, etags["first"]).status_code == 200
    # The outsider's empty list is no 304 for a member's tag either.
    member_tag = etag_of(clients["first"], f"{V1}/jobs/")
    assert clients["outsider"].get(f"{V1}/jobs/").json()["results"] == []
    assert again(clients["outsider"], f"{V1}/jobs/", member_tag).status_code == 200


# --- the ETag moves with the answer ------------------------------------------------------


@pytest.mark.django_db
def test_every_shown_field_is_in_the_fingerprint() -> None:
    """Each view's serializer fields map to columns (or to the columns that stand for
    them): a new field with neither fails here, not silently in production."""
    checked = 0
    for view in (
        views.JobViewSet,
        views.SnapshotViewSet,
        views.ErrorViewSet,
        views.AccountViewSet,
        views.SyncRunViewSet,
        views.JobSnapshotsView,
        views.JobErrorsView,
    ):
        for action in ("list", "retrieve"):
            instance = view(action=action, kwargs={"job_id": "1"}, format_kwarg=None)
            if hasattr(instance, "rows"):
                queryset = instance.rows()
            else:
                queryset = instance.permission_model.objects.all()
            serializer = instance.get_serializer_class()
            columns = serializer_columns(serializer, queryset, view.etag_covered)
            assert "id" in columns
            checked += 1
    assert checked == 14


@pytest.mark.django_db
def test_each_endpoint_moves_with_its_rows(client: Any, seeded: dict[str, Any]) -> None:
    tags = {template: etag_of(client, url_of(template, seeded)) for template in ENDPOINTS}
    job = seeded["jobs"][1]
    JobError.objects.create(job=job, position=5, message="one more")  # only the error table
    moved = {t for t in ENDPOINTS if etag_of(client, url_of(t, seeded)) != tags[t]}
    assert moved == {"/jobs/{job}/", "/jobs/{job}/errors/", "/errors/"}

    tags = {template: etag_of(client, url_of(template, seeded)) for template in ENDPOINTS}
    JobSnapshot.objects.create(job=job, status="failed", digest="new")
    SyncRun.objects.filter(pk=seeded["run"].pk).update(pages=7)
    seeded["account"].name = "EP renamed"
    seeded["account"].save()
    moved = {t for t in ENDPOINTS if etag_of(client, url_of(t, seeded)) != tags[t]}
    # The account's name is shown by the jobs and the sync runs as well.
    unmoved = {"/jobs/{job}/errors/", "/errors/", "/errors/{error}/", "/snapshots/{snapshot}/"}
    assert moved == set(ENDPOINTS) - unmoved


@pytest.mark.django_db
def test_a_change_outside_the_page_keeps_the_page_etag(seeded: dict[str, Any]) -> None:
    """A page's tag is the page's: rows beyond it (and the row after it) do not move it."""
    client = token_client(make_user("superuser"))
    url = f"{V1}/jobs/?ordering=id&page_size=2"
    etag = etag_of(client, url)
    Job.objects.filter(pk=seeded["jobs"][4].pk).update(status="failed")
    assert again(client, url, etag).status_code == 304
    Job.objects.filter(pk=seeded["jobs"][1].pk).update(error_count=3)
    assert again(client, url, etag).status_code == 200
    # The row after the page decides whether a `next` link is shown.
    short = f"{V1}/jobs/?ordering=id&page_size=4"
    etag = etag_of(client, short)
    Job.objects.filter(pk=seeded["jobs"][4].pk).delete()
    assert client.get(short).json()["next"] is None
    assert again(client, short, etag).status_code == 200


@pytest.mark.django_db
def test_the_empty_page_of_a_job_answers_304_and_404_once_the_job_is_not_theirs(
    client: Any, seeded: dict[str, Any], django_assert_max_num_queries: Any
) -> None:
    job = seeded["jobs"][0]  # no error records
    url = f"{V1}/jobs/{job.pk}/errors/"
    etag = etag_of(client, url)
    # An empty page asks whether the job is there: one query more.
    with django_assert_max_num_queries(3):
        assert again(client, url, etag).status_code == 304
    seeded["account"].team = Team.objects.create(name="Elsewhere")
    seeded["account"].save()
    # The superuser still sees the same empty page; the team member no job at all.
    still_seen = client.get(f"{V1}/accounts/{seeded['account'].pk}/").status_code == 200
    assert again(client, url, etag).status_code == (304 if still_seen else 404)


# --- cost ---------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["superuser", "viewer"])
def test_a_304_of_a_long_list_takes_two_queries_whatever_the_page_size(
    role: str, django_assert_max_num_queries: Any
) -> None:
    account = api_account()
    Job.objects.bulk_create(
        Job(
            account=account,
            provider=account.provider,
            kind="product-import",
            external_id=f"job-{n:05d}",
            status="succeeded" if n % 3 else "failed",
            created_at=None if n % 7 == 0 else BASE_TIME + timedelta(minutes=n),
            last_changed_at=BASE_TIME + timedelta(minutes=n),
            is_terminal=True,
        )
        for n in range(1200)
    )
    client = token_client(make_user(role))
    client.get(f"{V1}/jobs/")  # the token's use is recorded
    urls = [
        f"{V1}/jobs/?page_size=5",
        f"{V1}/jobs/?page_size=500",
        f"{V1}/jobs/?page_size=500&status=failed&ordering=-last_changed_at",
    ]
    counts = []
    for url in urls:
        etag = etag_of(client, url)
        with (
            django_assert_max_num_queries(2),
            CaptureQueriesContext(connection) as captured,
        ):
            assert again(client, url, etag).status_code == 304
        counts.append(len(captured.captured_queries))
    assert len(set(counts)) == 1
    # Every page, the one where jobs without a creation time begin included.
    url: str | None = f"{V1}/jobs/?page_size=100"
    pages = 0
    while url:
        response = client.get(url)
        with django_assert_max_num_queries(2):
            assert again(client, url, response["ETag"]).status_code == 304
        url = response.json()["next"]
        pages += 1
    assert pages == 12


@pytest.mark.django_db
def test_query_counts_by_session(
    seeded: dict[str, Any], django_assert_max_num_queries: Any
) -> None:
    """Session auth reads the session and the user (Django's), then the permissions in
    one query and the fingerprint."""
    browser = Client()
    browser.force_login(make_user("viewer"))
    url = f"{V1}/jobs/"
    etag = browser.get(url, HTTP_ACCEPT="application/json")["ETag"]
    with django_assert_max_num_queries(4):
        response = browser.get(url, HTTP_ACCEPT="application/json", HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 304


# --- following a real sync ----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_sync_writes_error_records_and_gone_marks_move_the_etag(sandbox: Any) -> None:
    account, described = sandbox_account(sandbox, "elasticpath", jobs_per_kind=0)
    viewer = make_user("viewer")
    account.team = Team.objects.get(name="API team")
    account.save()
    created = sandbox.control(
        described["id"],
        "create_jobs",
        type="product-import",
        count=2,
        duration=60,
        outcome="failed",
        errors=["SKU 1 is taken", "SKU 2 is taken"],
    )
    assert sync_account(account.pk).outcome == "succeeded"
    client = token_client(viewer)
    job = Job.objects.get(account=account, external_id=created["ids"][0])
    lists = [
        f"{V1}/jobs/",
        f"{V1}/jobs/?gone=false",
        f"{V1}/jobs/{job.pk}/",
        f"{V1}/jobs/{job.pk}/errors/",
    ]
    tags = {url: etag_of(client, url) for url in lists}
    assert all(again(client, url, tag).status_code == 304 for url, tag in tags.items())

    # The job fails at the provider: the next sync writes its status and its errors.
    sandbox.clock(described["id"], advance=120)
    assert sync_account(account.pk).outcome == "succeeded"
    for url, tag in tags.items():
        response = again(client, url, tag)
        assert response.status_code == 200, url
        assert response["ETag"] != tag
    detail = client.get(f"{V1}/jobs/{job.pk}/").json()
    assert detail["status"] == "failed"
    assert [e["message"] for e in detail["errors"]] == ["SKU 1 is taken", "SKU 2 is taken"]

    # Gone from the provider's listing: complete sweeps that miss it mark it gone (two,
    # today: jobcenter/sync/refresh.py). Nothing else about it changes meanwhile.
    sandbox.control(described["id"], "delete_jobs", ids=[created["ids"][0]])
    for _ in range(3):
        tags = {url: etag_of(client, url) for url in lists}
        before = client.get(lists[2]).json()
        assert sync_account(account.pk).outcome == "succeeded"
        job.refresh_from_db()
        if job.gone_at is not None:
            break
    assert job.gone_at is not None
    # The detail's tag moved with the mark (and the change time that follows it) alone.
    after = client.get(lists[2]).json()
    assert {name for name in after if after[name] != before[name]} == {
        "gone_at",
        "gone_reason",
        "last_changed_at",
    }
    for url in lists[:3]:
        assert again(client, url, tags[url]).status_code == 200, url
    shown = client.get(f"{V1}/jobs/?gone=false").json()["results"]
    assert job.pk not in [row["id"] for row in shown]


@pytest.mark.django_db
def test_the_token_query_reads_the_permissions_django_would() -> None:
    """The permissions read with the token (one query) are ModelBackend's own: the
    user's and their groups', overlapping or not; none are a 403."""
    user = User.objects.create_user("grouped", password="pw-not-used", is_staff=True)
    join(user)
    group = Group.objects.create(name="readers")
    group.permissions.set(
        Permission.objects.filter(codename__in=["view_job", "view_syncrun", "add_job"])
    )
    user.groups.add(group)
    grant(user, "view_job", "view_joberror")
    request = APIRequestFactory().get("/", HTTP_AUTHORIZATION=f"Token {api_key(user)}")
    authenticated, _ = TokenAuthentication().authenticate(request)
    expected = ModelBackend().get_all_permissions(User.objects.get(pk=user.pk))
    assert authenticated._perm_cache == expected
    assert expected >= {"jobcenter.view_job", "jobcenter.view_joberror", "jobcenter.add_job"}

    client = token_client(user)
    assert client.get(f"{V1}/jobs/").status_code == 200
    assert client.get(f"{V1}/snapshots/").status_code == 403
    bare = User.objects.create_user("bare", password="pw-not-used", is_staff=True)
    assert token_client(join(bare)).get(f"{V1}/jobs/").status_code == 403
