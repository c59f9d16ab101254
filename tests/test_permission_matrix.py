"""The team permission matrix: two teams, every surface, and {own team, other team,
superuser, no team}: every cell asserted.

Each cell looks at one team's objects (the target) as one kind of staff member, all of
them holding every permission the surface needs: only their teams stop them. Members of
the target's team and superusers see and act on its objects; members of the other team
and staff in no team find nothing: an admin page answers as for an id that does not
exist, the API with 404, lists and exports without the target's rows (empty for staff in
no team, who are told why where a page can).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from jobcenter.models import AlertDelivery
from jobcenter.queries.scoping import NO_TEAM_MESSAGE
from tests.api_support import token_client
from tests.team_support import KEYS, SHARED_TEXT, TeamWorld, page_text, sees, team_world, viewer_of

pytestmark = pytest.mark.django_db

V1 = "/api/v1"
ROLES = ("own", "other", "superuser", "noteam")
MISSING = 999_999


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> TeamWorld:
    """The two teams; queued syncs, connection tests and deliveries are only recorded."""
    cache.clear()  # throttle counters
    built = team_world()
    built.calls = []  # type: ignore[attr-defined]

    def record(what: str) -> Callable[..., Any]:
        def call(target: Any, *args: Any) -> Any:
            built.calls.append((what, getattr(target, "pk", target)))  # type: ignore[attr-defined]
            return (True, "fine") if what == "test" else "task-1"

        return call

    for module in ("jobcenter.admin.accounts", "jobcenter.admin.jobs", "jobcenter.api.views"):
        monkeypatch.setattr(f"{module}.enqueue_sync", record("sync"))
    for module in ("jobcenter.admin.accounts", "jobcenter.api.views"):
        monkeypatch.setattr(f"{module}.check_connection", record("test"))
    monkeypatch.setattr("jobcenter.admin.alerts.enqueue_deliveries", record("deliver"))
    return built


def admin_url(model: str, view: str, *args: Any) -> str:
    return reverse(f"admin:jobcenter_{model}_{view}", args=list(args))


def listed_jobs(html: str) -> set[str]:
    return set(re.findall(r'<th class="field-external_id"><a href="[^"]+">([^<]+)</a>', html))


def assert_admin_page(client: Client, model: str, pk: int, marker: str, visible: bool) -> None:
    """The object's page with its text, or the very answer an id that does not exist gets:
    back to the admin index (with Django's "doesn't exist" message)."""
    response = client.get(admin_url(model, "change", pk))
    if visible:
        assert marker in page_text(response), model
        return
    missing = client.get(admin_url(model, "change", MISSING))
    assert response.status_code == missing.status_code == 302, model
    assert response["Location"] == missing["Location"] == reverse("admin:index"), model
    told = client.get(admin_url(model, "change", pk), follow=True).content.decode()
    assert f"ID \u201c{pk}\u201d doesn\u2019t exist" in told, model  # Django's quotes
    assert marker not in told, model


# --- the cells ------------------------------------------------------------------------------


def admin_list(world: TeamWorld, target: str, role: str) -> None:
    t = world.teams[target]
    client = world.client(viewer_of(world, target, role))
    markers = {
        "provideraccount": t.account.name,
        "job": t.job.external_id,
        "jobsnapshot": t.job.external_id,
        "joberror": t.job.external_id,
        "syncrun": t.run.error,
    }
    for model, marker in markers.items():
        html = page_text(client.get(admin_url(model, "changelist")))
        assert (marker in html) == sees(role), model
        assert (NO_TEAM_MESSAGE in html) == (role == "noteam"), model
    # The sidebar's account filter offers the target's account only to those who see it.
    html = page_text(client.get(admin_url("job", "changelist")))
    assert (f"account__id__exact={t.account.pk}" in html) == sees(role)
    html = page_text(client.get(admin_url("syncrun", "changelist")))
    assert (f"account__id__exact={t.account.pk}" in html) == sees(role)


def admin_page(world: TeamWorld, target: str, role: str) -> None:
    t = world.teams[target]
    client = world.client(viewer_of(world, target, role))
    for model, pk, marker in (
        ("provideraccount", t.account.pk, t.account.name),
        ("job", t.job.pk, t.job.external_id),
        ("jobsnapshot", t.snapshot.pk, t.snapshot.digest),
        ("joberror", t.error.pk, t.error.title),
        ("syncrun", t.run.pk, t.run.error),
    ):
        assert_admin_page(client, model, pk, marker, sees(role))


def admin_action(world: TeamWorld, target: str, role: str) -> None:
    t = world.teams[target]
    client = world.client(viewer_of(world, target, role))
    posts = [
        (admin_url("provideraccount", "sync_now", t.account.pk), ("sync", t.account.pk)),
        (admin_url("provideraccount", "test_connection", t.account.pk), ("test", t.account.pk)),
        (admin_url("job", "refresh", t.job.pk), ("sync", t.account.pk)),
    ]
    for url, call in posts:
        world.calls.clear()  # type: ignore[attr-defined]
        response = client.post(url)
        assert response.status_code == (302 if sees(role) else 404), url
        assert world.calls == ([call] if sees(role) else []), url  # type: ignore[attr-defined]
    # The list's action runs on the list's rows: another team's id selects nothing.
    world.calls.clear()  # type: ignore[attr-defined]
    response = client.post(
        admin_url("provideraccount", "changelist"),
        {"action": "sync_now", "_selected_action": [t.account.pk], "index": 0},
    )
    assert response.status_code == 302
    assert world.calls == ([("sync", t.account.pk)] if sees(role) else [])  # type: ignore[attr-defined]
    # The job's history export.
    response = client.get(admin_url("job", "history_csv", t.job.pk))
    if sees(role):
        assert response.status_code == 200
        assert t.snapshot.digest in b"".join(response.streaming_content).decode()
    else:
        assert response.status_code == 404


def api_list(world: TeamWorld, target: str, role: str) -> None:
    t = world.teams[target]
    client = token_client(world.users[viewer_of(world, target, role)])
    for path, pk in (
        ("jobs", t.job.pk),
        ("snapshots", t.snapshot.pk),
        ("errors", t.error.pk),
        ("accounts", t.account.pk),
        ("sync-runs", t.run.pk),
    ):
        response = client.get(f"{V1}/{path}/")
        assert response.status_code == 200, path
        ids = [row["id"] for row in response.json()["results"]]
        assert (pk in ids) == sees(role), path
        if role == "noteam":
            assert ids == [], path


def api_detail(world: TeamWorld, target: str, role: str) -> None:
    t = world.teams[target]
    client = token_client(world.users[viewer_of(world, target, role)])
    for path in (
        f"/jobs/{t.job.pk}/",
        f"/jobs/{t.job.pk}/snapshots/",
        f"/jobs/{t.job.pk}/errors/",
        f"/snapshots/{t.snapshot.pk}/",
        f"/errors/{t.error.pk}/",
        f"/accounts/{t.account.pk}/",
        f"/sync-runs/{t.run.pk}/",
    ):
        response = client.get(V1 + path)
        assert response.status_code == (200 if sees(role) else 404), path
    for path, status in (
        (f"/accounts/{t.account.pk}/sync/", 202),
        (f"/accounts/{t.account.pk}/test/", 200),
    ):
        world.calls.clear()  # type: ignore[attr-defined]
        response = client.post(V1 + path)
        assert response.status_code == (status if sees(role) else 404), path
        assert bool(world.calls) == sees(role), path  # type: ignore[attr-defined]


def api_export(world: TeamWorld, target: str, role: str) -> None:
    t = world.teams[target]
    client = token_client(world.users[viewer_of(world, target, role)])
    for what, column, value in (
        ("jobs", "external_id", t.job.external_id),
        ("snapshots", "digest", t.snapshot.digest),
        ("errors", "code", t.error.code),
    ):
        response = client.get(f"{V1}/exports/{what}.csv")
        assert response.status_code == 200, what
        text = b"".join(response.streaming_content).decode("utf-8-sig")
        rows = list(csv.DictReader(io.StringIO(text)))
        assert (value in {row[column] for row in rows}) == sees(role), what
        if role == "noteam":
            assert rows == [], what


def dashboard(world: TeamWorld, target: str, role: str) -> None:
    t = world.teams[target]
    html = page_text(world.client(viewer_of(world, target, role)).get(reverse("admin:index")))
    if role == "noteam":
        assert NO_TEAM_MESSAGE in html
        assert "Sync health" not in html and t.account.name not in html
        return
    assert NO_TEAM_MESSAGE not in html
    for shown in (t.account.name, t.account.last_error, t.stuck.external_id):
        assert (shown in html) == sees(role), shown


def search(world: TeamWorld, target: str, role: str) -> None:
    t = world.teams[target]
    user = world.users[viewer_of(world, target, role)]
    admin, api = world.client(viewer_of(world, target, role)), token_client(user)
    for term in (t.job.external_id, SHARED_TEXT):
        listed = listed_jobs(page_text(admin.get(admin_url("job", "changelist"), {"q": term})))
        found = {
            row["external_id"] for row in api.get(f"{V1}/jobs/", {"search": term}).json()["results"]
        }
        assert (t.job.external_id in listed) == sees(role), term
        assert listed == found, term
        # The other team's job matches the shared text: only its own viewers find it.
        other = world.teams[next(k for k in KEYS if k != target)].job.external_id
        assert (other in listed) == (role in ("other", "superuser") and term == SHARED_TEXT)


def alerts(world: TeamWorld, target: str, role: str) -> None:
    t = world.teams[target]
    client = world.client(viewer_of(world, target, role))
    shown = {
        "alertrule": (t.rule.pk, t.rule.name),
        "alertchannel": (t.channel.pk, t.channel.name),
        "alertevent": (t.event.pk, t.job.external_id),
        "alertdelivery": (t.delivery.pk, t.delivery.subject),
    }
    for model, (pk, marker) in shown.items():
        html = page_text(client.get(admin_url(model, "changelist")))
        assert (marker in html) == sees(role), model
        assert (NO_TEAM_MESSAGE in html) == (role == "noteam"), model
        assert_admin_page(client, model, pk, marker, sees(role))
    # "Send again" acts on the list's deliveries only.
    client.post(
        admin_url("alertdelivery", "changelist"),
        {"action": "send_again", "_selected_action": [t.delivery.pk], "index": 0},
    )
    status = AlertDelivery.objects.get(pk=t.delivery.pk).status
    assert status == ("retrying" if sees(role) else "failed")


SURFACES: dict[str, Callable[[TeamWorld, str, str], None]] = {
    "admin list": admin_list,
    "admin page": admin_page,
    "admin action": admin_action,
    "API list": api_list,
    "API detail": api_detail,
    "API export": api_export,
    "dashboard": dashboard,
    "search": search,
    "alerts": alerts,
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("target", KEYS)
@pytest.mark.parametrize("surface", SURFACES)
def test_team_permission_matrix(world: TeamWorld, surface: str, target: str, role: str) -> None:
    SURFACES[surface](world, target, role)
