"""Builders shared by the API tests (tests/test_api_*.py): users, clients and rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet
from django.contrib.auth.models import Permission, User
from django.test import override_settings
from rest_framework.test import APIClient

from jobcenter.accounts import create_account
from jobcenter.models import (
    ApiToken,
    Job,
    JobError,
    JobSnapshot,
    ProviderAccount,
    SyncRun,
    Team,
    TeamMembership,
)
from jobcenter.tokens import create_token

# Secrets of the accounts the API tests create: no response body may contain them.
CLIENT_ID = "client-id-7f3a9c2e51d84b06"
CLIENT_SECRET = "client-secret-Zq8Wv4Lm2Np6Rt0Yx3Kd"
SECRETS = (CLIENT_ID, CLIENT_SECRET)

BASE_TIME = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

ROLES = ("anonymous", "nonstaff", "staff", "viewer", "superuser")
MODELS = ("job", "jobsnapshot", "joberror", "provideraccount", "syncrun")
TEAM = "API team"  # the team of api_account's accounts and of staff and viewer users


def api_team() -> Team:
    return Team.objects.get_or_create(name=TEAM)[0]


def join(user: User, team: Team | None = None) -> User:
    """Make `user` a member of `team` (the API tests' team by default)."""
    TeamMembership.objects.get_or_create(team=team or api_team(), user=user)
    return user


def make_user(role: str) -> User | None:
    """A user for one row of the permission matrix (None for anonymous); staff and
    viewers are members of the team of `api_account`'s accounts."""
    if role == "anonymous":
        return None
    if role == "superuser":
        return User.objects.create_superuser(f"{role}-user", password="pw-not-used")
    user = User.objects.create_user(
        f"{role}-user", password="pw-not-used", is_staff=role in ("staff", "viewer")
    )
    if role == "viewer":
        codenames = [f"view_{model}" for model in MODELS]
        user.user_permissions.set(
            Permission.objects.filter(content_type__app_label="jobcenter", codename__in=codenames)
        )
    if user.is_staff:
        join(user)
    return user


def grant(user: User, *codenames: str) -> User:
    """Add jobcenter permissions and return a fresh copy (Django caches permissions)."""
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="jobcenter", codename__in=codenames)
    )
    return User.objects.get(pk=user.pk)


def token_client(user: User | None) -> APIClient:
    """A client authenticated by token (anonymous when `user` is None)."""
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {api_key(user)}")
    return client


def api_key(user: User, name: str = "tests", days: int = 30) -> str:
    """A new token's key for `user`, made as the command and the admin make one.

    `create_token` refuses users who are not active staff; theirs (as if they lost staff
    after the token was made) come from knox's manager, to show the API refuses them.
    """
    if user.is_active and user.is_staff:
        return create_token(user, name, days)[1]
    return ApiToken.objects.create(user=user, expiry=timedelta(days=days), name=name)[1]


def api_account(name: str = "EP main", **kwargs: Any) -> ProviderAccount:
    """An Elastic Path account holding SECRETS (no network: nothing here syncs it), in
    the API tests' team unless `team` says otherwise."""
    kwargs.setdefault("team", api_team())
    return create_account(
        name,
        "elasticpath",
        {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        **kwargs,
    )


def make_unreadable(account: ProviderAccount) -> str:
    """Store the account's credentials under a key Job Center does not hold (a lost key).

    Returns the stored blob, to tell that a refused edit left it as it was.
    """
    with override_settings(JOBCENTER_FERNET_KEYS=[Fernet.generate_key().decode()]):
        account.set_credentials({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    account.save(update_fields=["credentials_encrypted", "credentials_hint"])
    return account.credentials_encrypted


def make_job(account: ProviderAccount, number: int, **fields: Any) -> Job:
    values: dict[str, Any] = {
        "account": account,
        "provider": account.provider,
        "kind": "product-import",
        "external_id": f"job-{number:05d}",
        "status": "succeeded",
        "provider_status": "success",
        "created_at": BASE_TIME + timedelta(minutes=number),
        "last_changed_at": BASE_TIME + timedelta(minutes=number),
        "is_terminal": True,
        "payload": {"id": f"job-{number:05d}"},
    }
    values.update(fields)
    return Job.objects.create(**values)


def seed_history(account: ProviderAccount) -> dict[str, Any]:
    """A handful of jobs with snapshots, errors and a sync run; returns the rows."""
    jobs = [
        make_job(account, 1),
        make_job(account, 2, status="failed", provider_status="failed", error_count=2),
        make_job(account, 3, status="running", is_terminal=False, provider_status="processing"),
        make_job(account, 4, created_at=None, status="unknown", tracked=True, is_terminal=False),
        make_job(account, 5, gone_at=BASE_TIME, status="expired"),
    ]
    snapshots = [
        JobSnapshot.objects.create(
            job=job,
            observed_at=BASE_TIME + timedelta(minutes=i),
            status=job.status,
            digest=f"d{i}",
            payload={"n": i},
        )
        for i, job in enumerate(jobs)
    ]
    errors = [
        JobError.objects.create(
            job=jobs[1], position=position, code="E-SKU", message=f"SKU {position} is taken"
        )
        for position in range(2)
    ]
    run = SyncRun.objects.create(account=account, trigger="schedule", outcome="succeeded")
    return {"jobs": jobs, "snapshots": snapshots, "errors": errors, "run": run}
