"""Two teams, each with an account and everything that hangs from it, and their staff.

Shared by tests/test_teams.py and tests/test_permission_matrix.py. Every object of team
"A" carries "A" in the text the admin and the API show (and "B" for team "B"), so a page
tells whose objects it shows by its text alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from jobcenter.models import (
    AlertChannel,
    AlertDelivery,
    AlertEvent,
    AlertRule,
    Job,
    JobError,
    JobSnapshot,
    ProviderAccount,
    SyncRun,
    Team,
)
from tests.api_support import api_account, join, make_job

KEYS = ("A", "B")
SHARED_TEXT = "Shared failure text"  # in an error record of each team's job
# What a team member may do: see everything of Job Center, act on accounts and jobs,
# export, send deliveries again. Only their teams stop them.
PERMISSIONS = ["change_provideraccount", "change_job", "export_job", "change_alertdelivery"]


@dataclass
class TeamObjects:
    """One team's account and what hangs from it."""

    team: Team
    account: ProviderAccount
    job: Job
    stuck: Job
    snapshot: JobSnapshot
    error: JobError
    run: SyncRun
    channel: AlertChannel
    rule: AlertRule
    event: AlertEvent
    delivery: AlertDelivery


@dataclass
class TeamWorld:
    teams: dict[str, TeamObjects]
    users: dict[str, User]  # "A" and "B" (members), "superuser", "noteam"

    def client(self, who: str) -> Client:
        client = Client()
        client.force_login(self.users[who])
        return client


def staff_member(username: str) -> User:
    """Staff with every view permission of Job Center and PERMISSIONS; in no team yet."""
    user = User.objects.create_user(username, password="pw-not-used", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="jobcenter").filter(
            codename__startswith="view_"
        )
        | Permission.objects.filter(content_type__app_label="jobcenter", codename__in=PERMISSIONS)
    )
    return User.objects.get(pk=user.pk)


def team_objects(key: str, number: int) -> TeamObjects:
    now = timezone.now()
    team = Team.objects.create(name=f"Team {key}")
    account = api_account(f"Brand {key} store", team=team)
    ProviderAccount.objects.filter(pk=account.pk).update(
        last_status="failing", last_error=f"{key} account error", consecutive_failures=2
    )
    account.refresh_from_db()
    # A second account: the admin shows an account filter only when it has a choice.
    api_account(f"Brand {key} outlet", team=team)
    job = make_job(
        account,
        number,
        external_id=f"{key}-job-0001",
        status="failed",
        provider_status="failed",
        error_count=1,
        created_at=now - timedelta(hours=1),
    )
    stuck = make_job(
        account,
        number + 1,
        external_id=f"{key}-stuck-0001",
        status="running",
        is_terminal=False,
        created_at=now - timedelta(days=2),
    )
    snapshot = JobSnapshot.objects.create(
        job=job, status="failed", digest=f"{key}-digest", payload={"team": key}
    )
    error = JobError.objects.create(
        job=job, position=0, code=f"E-{key}", title=f"{key} title", message=SHARED_TEXT
    )
    run = SyncRun.objects.create(
        account=account, trigger="schedule", outcome="failed", error=f"{key} run error"
    )
    channel = AlertChannel.objects.create(
        name=f"{key} channel", team=team, kind="email", recipients=f"{key.lower()}@example.com"
    )
    rule = AlertRule.objects.create(
        name=f"{key} rule", team=team, channel=channel, on_job_failed=True
    )
    delivery = AlertDelivery.objects.create(
        rule=rule,
        channel=channel,
        channel_kind="email",
        destination=channel.recipients,
        subject=f"{key} alert subject",
        text="A job failed.",
        status="failed",
    )
    event = AlertEvent.objects.create(
        rule=rule,
        account=account,
        job=job,
        event="job_failed",
        batch=f"batch-{key}",
        state="dispatched",
        delivery=delivery,
    )
    return TeamObjects(
        team, account, job, stuck, snapshot, error, run, channel, rule, event, delivery
    )


def team_world() -> TeamWorld:
    """Teams A and B, a member of each, a superuser and a staff member in no team."""
    teams = {key: team_objects(key, 100 * (n + 1)) for n, key in enumerate(KEYS)}
    users = {key: join(staff_member(f"member-{key}"), teams[key].team) for key in KEYS}
    users["superuser"] = User.objects.create_superuser("root", password="pw-not-used")
    users["noteam"] = staff_member("loner")
    return TeamWorld(teams, users)


def viewer_of(world: TeamWorld, target: str, role: str) -> str:
    """The user key for `role` ("own", "other", "superuser", "noteam") seen from `target`."""
    if role == "own":
        return target
    if role == "other":
        return next(key for key in KEYS if key != target)
    return role


def sees(role: str) -> bool:
    """Whether `role` sees the target team's objects: its members and superusers do."""
    return role in ("own", "superuser")


def page_text(response: Any) -> str:
    assert response.status_code == 200, (response.status_code, response.content[:300])
    return response.content.decode()
