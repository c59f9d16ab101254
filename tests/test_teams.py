"""Teams: who may put accounts, rules and channels in which team, what a team's alert
rules watch, who edits teams, the two permission edges (an account's last error on the
dashboard, a job's history export), and the scoping function failing closed.

The surface-by-surface visibility is tests/test_permission_matrix.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db.models import ProtectedError
from django.db.models.signals import post_save
from django.test import Client
from django.urls import reverse

from jobcenter.alerts.evaluation import evaluate_periodic
from jobcenter.alerts.rules import active_rules, scoped_accounts
from jobcenter.models import (
    AlertEvent,
    AlertRule,
    Job,
    ProviderAccount,
    Team,
    TeamMembership,
)
from jobcenter.queries.scoping import NO_TEAM_MESSAGE, scoped
from tests.api_support import CLIENT_ID, CLIENT_SECRET, api_account, grant, join, token_client
from tests.team_support import TeamWorld, page_text, staff_member, team_world

pytestmark = pytest.mark.django_db

V1 = "/api/v1"
NEW_ACCOUNT = {
    "name": "New store",
    "provider": "elasticpath",
    "credentials": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
}


@pytest.fixture
def world() -> TeamWorld:
    cache.clear()  # throttle counters
    return team_world()


def login(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- the permission edges -------------------------------------------------------------------


def test_the_dashboard_shows_accounts_last_errors_only_to_staff_who_may_view_accounts(
    world: TeamWorld,
) -> None:
    account = world.teams["A"].account
    jobs_only = join(User.objects.create_user("jobs-only", is_staff=True), account.team)
    jobs_only = grant(jobs_only, "view_job")
    html = page_text(login(jobs_only).get(reverse("admin:index")))
    assert account.name in html  # the sync health table is there
    assert account.last_error not in html
    assert "Last error" not in html
    html = page_text(login(grant(jobs_only, "view_provideraccount")).get(reverse("admin:index")))
    assert account.last_error in html


def test_the_history_export_needs_the_snapshot_view_permission(world: TeamWorld) -> None:
    job = world.teams["A"].job
    user = join(User.objects.create_user("no-snapshots", is_staff=True), job.account.team)
    user = grant(user, "view_job", "export_job")
    page = page_text(login(user).get(reverse("admin:jobcenter_job_change", args=[job.pk])))
    assert "Export history (CSV)" not in page
    url = reverse("admin:jobcenter_job_history_csv", args=[job.pk])
    assert login(user).get(url).status_code == 403
    user = grant(user, "view_jobsnapshot")
    page = page_text(login(user).get(reverse("admin:jobcenter_job_change", args=[job.pk])))
    assert "Export history (CSV)" in page
    response = login(user).get(url)
    assert response.status_code == 200
    assert world.teams["A"].snapshot.digest in b"".join(response.streaming_content).decode()


# --- accounts go in the caller's teams --------------------------------------------------------


def test_api_accounts_go_in_one_of_the_callers_teams(world: TeamWorld) -> None:
    member = token_client(grant(world.users["A"], "add_provideraccount"))
    own, other = world.teams["A"].team, world.teams["B"].team
    refused = member.post(f"{V1}/accounts/", {**NEW_ACCOUNT, "team": other.pk}, format="json")
    assert refused.status_code == 400
    assert set(refused.json()) == {"team"}
    missing = member.post(f"{V1}/accounts/", {**NEW_ACCOUNT, "team": 999_999}, format="json")
    assert missing.json() == {"team": [refused.json()["team"][0].replace(str(other.pk), "999999")]}
    blank = member.post(f"{V1}/accounts/", NEW_ACCOUNT, format="json")
    assert blank.status_code == 400 and set(blank.json()) == {"team"}
    assert not ProviderAccount.objects.filter(name="New store").exists()
    created = member.post(f"{V1}/accounts/", {**NEW_ACCOUNT, "team": own.pk}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["team"] == own.pk
    assert ProviderAccount.objects.get(name="New store").team == own
    # Nor can it be moved to another team, or out of every team.
    url = f"{V1}/accounts/{created.json()['id']}/"
    for team in (other.pk, None):
        moved = member.patch(url, {"team": team}, format="json")
        assert moved.status_code == 400 and set(moved.json()) == {"team"}
    assert ProviderAccount.objects.get(name="New store").team == own


def test_superusers_put_accounts_in_any_team_or_none(world: TeamWorld) -> None:
    root = token_client(world.users["superuser"])
    body = {**NEW_ACCOUNT, "team": world.teams["B"].team.pk}
    assert root.post(f"{V1}/accounts/", body, format="json").status_code == 201
    loose = root.post(f"{V1}/accounts/", {**NEW_ACCOUNT, "name": "Loose"}, format="json")
    assert loose.status_code == 201 and loose.json()["team"] is None


def test_the_admin_account_form_offers_only_the_members_teams(world: TeamWorld) -> None:
    client = login(grant(world.users["A"], "add_provideraccount"))
    add = reverse("admin:jobcenter_provideraccount_add")
    html = page_text(client.get(add))
    assert "Team A" in html and "Team B" not in html
    form = {
        "name": "Form store",
        "provider": "elasticpath",
        "sync_interval_minutes": 5,
        "rate_limits": "{}",
        "credential__elasticpath__client_id": CLIENT_ID,
        "credential__elasticpath__client_secret": CLIENT_SECRET,
    }
    for team in ("", world.teams["B"].team.pk):
        refused = client.post(add, {**form, "team": team})
        assert refused.status_code == 200  # the form again, with the error on the team
        assert refused.context["adminform"].form.errors.keys() == {"team"}
    assert client.post(add, {**form, "team": world.teams["A"].team.pk}).status_code == 302
    assert ProviderAccount.objects.get(name="Form store").team == world.teams["A"].team


def test_accounts_without_a_team_are_for_superusers_only(world: TeamWorld) -> None:
    loose = api_account("Not assigned yet", team=None)
    assert scoped(ProviderAccount.objects.all(), world.users["superuser"]).filter(pk=loose.pk)
    for who in ("A", "B", "noteam"):
        assert not scoped(ProviderAccount.objects.all(), world.users[who]).filter(pk=loose.pk)


# --- naming another team's account -----------------------------------------------------------


def test_another_teams_account_is_named_like_one_that_does_not_exist(world: TeamWorld) -> None:
    member = token_client(grant(world.users["A"], "change_job"))
    other = world.teams["B"].account
    unknown = member.get(f"{V1}/jobs/", {"account": "No such store"})
    for value in (other.name, str(other.pk)):
        refused = member.get(f"{V1}/jobs/", {"account": value})
        assert refused.status_code == 400
        assert refused.json()["account"] == [
            unknown.json()["account"][0].replace("No such store", value)
        ]
        track = {"account": value, "kind": "product-import", "external_id": "x-1"}
        refused = member.post(f"{V1}/jobs/track/", track, format="json")
        assert refused.status_code == 400 and set(refused.json()) == {"account"}
    assert not Job.objects.filter(external_id="x-1").exists()


def test_the_admin_track_form_lists_only_the_members_accounts(world: TeamWorld) -> None:
    client = login(world.users["A"])
    url = reverse("admin:jobcenter_job_track")
    html = page_text(client.get(url))
    assert "Brand A store" in html and "Brand B store" not in html
    other = world.teams["B"].account
    response = client.post(
        url, {"account": other.pk, "kind": "product-import", "external_id": "x-2"}
    )
    assert response.status_code == 200
    assert "account" in response.context["form"].errors
    assert not Job.objects.filter(external_id="x-2").exists()


# --- staff in no team -------------------------------------------------------------------------


def test_staff_in_no_team_are_told_why_they_see_nothing(world: TeamWorld) -> None:
    client = login(world.users["noteam"])
    for url in (reverse("admin:index"), reverse("admin:jobcenter_job_changelist")):
        assert NO_TEAM_MESSAGE in page_text(client.get(url))
    api = token_client(world.users["noteam"])
    for path in ("jobs", "snapshots", "errors", "accounts", "sync-runs"):
        assert api.get(f"{V1}/{path}/").json()["results"] == [], path
    # A member of a team is not told so.
    assert NO_TEAM_MESSAGE not in page_text(login(world.users["A"]).get(reverse("admin:index")))


# --- alert rules and channels -----------------------------------------------------------------


def test_a_teams_rule_watches_only_its_teams_accounts(world: TeamWorld) -> None:
    a, b = world.teams["A"], world.teams["B"]
    AlertRule.objects.filter(pk__in=[a.rule.pk, b.rule.pk]).update(account_failures=1)
    everyone = AlertRule.objects.create(name="Superusers' rule", channel=None, account_failures=1)
    a_accounts = set(ProviderAccount.objects.filter(team=a.team))
    assert set(scoped_accounts(a.rule)) == a_accounts
    assert set(scoped_accounts(everyone)) == set(ProviderAccount.objects.all())
    # Naming another team's account does not make a team's rule watch it.
    a.rule.accounts.set([b.account])
    assert set(scoped_accounts(a.rule)) == set()
    assert a.rule not in active_rules(b.account)
    a.rule.accounts.clear()
    assert a.rule in active_rules(a.account) and a.rule not in active_rules(b.account)
    evaluate_periodic()
    failing = AlertEvent.objects.filter(event="account_failing")
    assert {(e.rule_id, e.account_id) for e in failing} == {
        (a.rule.pk, a.account.pk),
        (b.rule.pk, b.account.pk),
    }


def test_a_rule_sends_to_a_channel_of_its_team_and_names_its_accounts(world: TeamWorld) -> None:
    a, b = world.teams["A"], world.teams["B"]
    add = reverse("admin:jobcenter_alertrule_add")
    form = {
        "name": "New rule",
        "enabled": "on",
        "on_job_failed": "on",
        "partial_min_percent": 0,
        "quiet_timezone": "UTC",
    }
    root = login(world.users["superuser"])
    cases = [
        ({"team": a.team.pk, "channel": b.channel.pk}, {"channel"}),
        ({"team": a.team.pk, "channel": a.channel.pk, "accounts": [b.account.pk]}, {"accounts"}),
        ({"team": "", "channel": a.channel.pk}, {"channel"}),
    ]
    for fields, errors in cases:
        response = root.post(add, {**form, **fields})
        assert response.status_code == 200, fields
        assert response.context["adminform"].form.errors.keys() == errors, fields
    # A member neither sees nor picks another team's channel or account, nor a rule
    # without a team.
    member = login(grant(world.users["A"], "add_alertrule"))
    html = page_text(member.get(add))
    assert "A channel" in html and "B channel" not in html and "Brand B store" not in html
    for fields in (
        {"team": a.team.pk, "channel": b.channel.pk},
        {"team": a.team.pk, "accounts": [b.account.pk]},
        {"team": ""},
    ):
        response = member.post(add, {**form, **fields})
        assert response.status_code == 200, fields
    assert not AlertRule.objects.filter(name="New rule").exists()
    fields = {"team": a.team.pk, "channel": a.channel.pk, "accounts": [a.account.pk]}
    assert member.post(add, {**form, **fields}).status_code == 302
    assert AlertRule.objects.get(name="New rule").team == a.team


# --- teams themselves -------------------------------------------------------------------------


def test_only_superusers_edit_teams_and_members_see_their_own(world: TeamWorld) -> None:
    member = grant(world.users["A"], "view_team", "add_team", "change_team", "delete_team")
    client = login(member)
    html = page_text(client.get(reverse("admin:jobcenter_team_changelist")))
    assert "Team A" in html and "Team B" not in html
    team_a, team_b = world.teams["A"].team, world.teams["B"].team
    assert client.get(reverse("admin:jobcenter_team_add")).status_code == 403
    change_b = reverse("admin:jobcenter_team_change", args=[team_b.pk])
    assert client.get(change_b).status_code == 302  # not found, as a missing one
    change_a = reverse("admin:jobcenter_team_change", args=[team_a.pk])
    page_text(client.get(change_a))  # viewing is fine
    joined = {
        "name": "Team A",
        "memberships-TOTAL_FORMS": 2,
        "memberships-INITIAL_FORMS": 1,
        "memberships-0-id": TeamMembership.objects.get(team=team_a).pk,
        "memberships-0-team": team_a.pk,
        "memberships-0-user": member.pk,
        "memberships-1-team": team_a.pk,
        "memberships-1-user": world.users["noteam"].pk,
    }
    assert client.post(change_a, joined).status_code == 403
    assert not TeamMembership.objects.filter(user=world.users["noteam"]).exists()
    # A superuser adds the member through the inline: one membership row, saved with
    # its signal (what an audit log listens to).
    saved: list[TeamMembership] = []

    def remember(sender: Any, instance: TeamMembership, **kwargs: Any) -> None:
        saved.append(instance)

    post_save.connect(remember, sender=TeamMembership)
    try:
        response = login(world.users["superuser"]).post(change_a, joined)
    finally:
        post_save.disconnect(remember, sender=TeamMembership)
    assert response.status_code == 302, response.content[:500]
    assert [(m.team, m.user) for m in saved] == [(team_a, world.users["noteam"])]
    assert scoped(ProviderAccount.objects.all(), world.users["noteam"]).filter(team=team_a)


def test_a_team_with_accounts_cannot_be_deleted(world: TeamWorld) -> None:
    with pytest.raises(ProtectedError):
        world.teams["A"].team.delete()


def test_scoping_refuses_a_model_it_does_not_know(world: TeamWorld) -> None:
    with pytest.raises(LookupError):
        scoped(User.objects.all(), world.users["A"])
    # Superusers are not narrowed, whatever the model.
    assert scoped(User.objects.all(), world.users["superuser"]).count() == User.objects.count()
    assert staff_member("fresh").pk  # the builder's staff start in no team
    assert not scoped(Team.objects.all(), User.objects.get(username="fresh")).exists()
