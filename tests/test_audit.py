"""The audit log: every change to what staff configure, whichever way it is made, is one
append-only record of who, when, from where and what changed, never a secret's value.

Changes go through the real paths (the admin's forms over the test client, the API with
a token, the commands, the ORM); the sync runs against the sandbox over real HTTP.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.contrib.auth.models import Group, Permission, User
from django.core.cache import cache
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.db.models.signals import pre_save
from django.test import Client, override_settings
from django.urls import reverse

from jobcenter.audit import recorder
from jobcenter.management.base import AuditedCommand
from jobcenter.models import (
    AlertChannel,
    AlertRule,
    AppendOnlyError,
    AuditRecord,
    ProviderAccount,
    SyncOutcome,
    Team,
    TeamMembership,
)
from jobcenter.sync.engine import sync_account
from jobcenter.tasks import ensure_schedule
from tests.api_support import CLIENT_ID, CLIENT_SECRET, api_account, token_client
from tests.factories import sandbox_account

pytestmark = pytest.mark.django_db

NEW_SECRET = "rotated-secret-Qw3rTy7Ui9Op2As5"
ACCOUNT = "jobcenter.provideraccount"


def stored_text() -> str:
    """Every audit row as the database holds it, every column: what a reader could see."""
    with connection.cursor() as cursor:
        table = connection.ops.quote_name(AuditRecord._meta.db_table)
        cursor.execute(f"SELECT * FROM {table}")  # noqa: S608 - the model's own table
        return repr(cursor.fetchall())


def new_records(before: int, **filters: Any) -> list[AuditRecord]:
    return list(AuditRecord.objects.filter(pk__gt=before, **filters).order_by("id"))


def last_id() -> int:
    return AuditRecord.objects.order_by("-id").values_list("id", flat=True).first() or 0


def superuser(name: str = "boss") -> User:
    return User.objects.create_superuser(name, password="pw-not-used")


# --- credentials, three ways ---------------------------------------------------------------


def test_admin_credential_change_records_who_where_and_the_field_name_only() -> None:
    boss = superuser()
    account = api_account()
    before = last_id()
    client = Client(REMOTE_ADDR="203.0.113.7")
    client.force_login(boss)
    change = reverse("admin:jobcenter_provideraccount_change", args=[account.pk])
    form = {
        "name": account.name,
        "provider": "elasticpath",
        "team": account.team_id or "",
        "base_url": "",
        "enabled": "on",
        "sync_interval_minutes": str(account.sync_interval_minutes),
        "rate_limits": "{}",
        "credential__elasticpath__client_id": "",
        "credential__elasticpath__client_secret": NEW_SECRET,
    }
    response = client.post(change, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    account.refresh_from_db()
    assert account.get_credentials()["client_secret"] == NEW_SECRET

    (record,) = new_records(before)
    assert (record.actor_id, record.actor, record.address) == (boss.pk, "boss", "203.0.113.7")
    assert (record.action, record.model, record.object_id) == ("change", ACCOUNT, str(account.pk))
    assert record.object_repr == account.name
    # The admin re-encrypts every save: the unchanged client id is not reported.
    assert record.changes == {"credentials.client_secret": "changed"}
    text = stored_text()
    assert NEW_SECRET not in text and CLIENT_SECRET not in text and CLIENT_ID not in text


def test_api_patch_records_the_token_user_and_the_changed_fields() -> None:
    cache.clear()  # throttle counters
    boss = superuser()
    client = token_client(boss)
    account = api_account()
    before = last_id()
    response = client.patch(
        f"/api/v1/accounts/{account.pk}/",
        {"name": "EP renamed", "credentials": {"client_secret": NEW_SECRET}},
        format="json",
        REMOTE_ADDR="198.51.100.4",
    )
    assert response.status_code == 200, response.content

    (record,) = new_records(before)
    assert (record.actor_id, record.actor, record.address) == (boss.pk, "boss", "198.51.100.4")
    assert record.action == "change" and record.model == ACCOUNT
    assert record.changes == {
        "name": {"old": "EP main", "new": "EP renamed"},
        "credentials.client_secret": "changed",
    }
    assert NEW_SECRET not in stored_text() and CLIENT_SECRET not in stored_text()


@override_settings(JOBCENTER_BEHIND_TLS_PROXY=True, JOBCENTER_PROXY_COUNT=1)
def test_behind_the_proxy_the_address_is_the_forwarded_one_the_lockout_counts() -> None:
    """The load balancer's own address is REMOTE_ADDR; the client's is the last entry it
    appended to X-Forwarded-For (entries left of it are the client's own claims)."""
    cache.clear()
    client = token_client(superuser())
    account = api_account()
    before = last_id()
    response = client.patch(
        f"/api/v1/accounts/{account.pk}/",
        {"enabled": False},
        format="json",
        REMOTE_ADDR="10.0.0.2",
        HTTP_X_FORWARDED_FOR="192.0.2.66, 198.51.100.23",
        HTTP_X_FORWARDED_PROTO="https",
    )
    assert response.status_code == 200, response.content
    (record,) = new_records(before)
    assert record.address == "198.51.100.23"
    assert record.changes == {"enabled": {"old": True, "new": False}}


def test_add_account_command_records_the_command_and_its_host(monkeypatch: Any) -> None:
    monkeypatch.setattr(
        sys,
        "stdin",
        io.StringIO(f'{{"client_id": "{CLIENT_ID}", "client_secret": "{NEW_SECRET}"}}'),
    )
    before = last_id()
    call_command("add_account", "EP by command", "--provider", "elasticpath", stdout=io.StringIO())

    (record,) = new_records(before)
    account = ProviderAccount.objects.get(name="EP by command")
    assert (record.actor_id, record.actor) == (None, "command:add_account")
    assert record.address == socket.gethostname()
    assert (record.action, record.object_id) == ("create", str(account.pk))
    assert record.changes["credentials.client_id"] == "changed"
    assert record.changes["credentials.client_secret"] == "changed"
    assert record.changes["name"] == {"new": "EP by command"}
    assert record.changes["sync_interval_minutes"] == {"new": account.sync_interval_minutes}
    assert NEW_SECRET not in stored_text() and CLIENT_ID not in stored_text()


def test_re_encrypting_under_a_new_key_is_no_change() -> None:
    api_account()
    before = last_id()
    keys = [Fernet.generate_key().decode(), *settings.JOBCENTER_FERNET_KEYS]
    with override_settings(JOBCENTER_FERNET_KEYS=keys):
        call_command("rotate_credential_keys", stdout=io.StringIO())
    assert new_records(before) == []


# --- alert channels and rules -----------------------------------------------------------


def test_a_webhook_secret_change_is_recorded_as_changed_only() -> None:
    boss = superuser()
    channel = AlertChannel(name="hook", kind="webhook", url="http://127.0.0.1:9/hook")
    channel.set_secret("first-secret-0123456789")
    channel.save()
    before = last_id()
    client = Client()
    client.force_login(boss)
    response = client.post(
        reverse("admin:jobcenter_alertchannel_change", args=[channel.pk]),
        {
            "name": "hook",
            "team": "",
            "kind": "webhook",
            "recipients": "",
            "url": channel.url,
            "secret": NEW_SECRET,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    (record,) = new_records(before)
    assert record.model == "jobcenter.alertchannel" and record.actor == "boss"
    assert record.changes == {"secret": "changed"}
    assert NEW_SECRET not in stored_text() and "first-secret" not in stored_text()


def test_alert_rule_scope_changes_name_the_accounts() -> None:
    account = api_account()
    rule = AlertRule.objects.create(name="failures", on_job_failed=True)
    before = last_id()
    rule.accounts.add(account)
    rule.accounts.clear()
    added, removed = new_records(before)
    assert added.changes == {"accounts": {"added": [account.name]}}
    assert removed.changes == {"accounts": {"removed": [account.name]}}


# --- users, groups, teams, tokens, schedules --------------------------------------------


def test_user_flags_groups_and_permissions_are_recorded_on_the_user() -> None:
    user = User.objects.create_user("carol", password="first-password-1", is_staff=True)
    ops = Group.objects.create(name="ops")
    view_job = Permission.objects.get(codename="view_job")
    before = last_id()

    user.is_superuser = True
    user.set_password("second-password-2")
    user.save()
    user.groups.add(ops)
    ops.user_set.remove(user)  # from the group's side: still recorded on the user
    user.user_permissions.add(view_job)
    user.save(update_fields=["last_login"])  # a login: nothing to record

    flags, joined, left, granted = new_records(before)
    assert flags.changes == {"is_superuser": {"old": False, "new": True}, "password": "changed"}
    assert [r.object_id for r in (joined, left, granted)] == [str(user.pk)] * 3
    assert joined.changes == {"groups": {"added": ["ops"]}}
    assert left.changes == {"groups": {"removed": ["ops"]}}
    assert granted.changes == {"user_permissions": {"added": [str(view_job)]}}
    assert "second-password" not in stored_text() and user.password not in stored_text()


def test_team_memberships_are_recorded_however_they_are_made() -> None:
    team = Team.objects.create(name="Brand A")
    alice = User.objects.create_user("alice", is_staff=True)
    bob = User.objects.create_user("bob", is_staff=True)
    before = last_id()

    TeamMembership.objects.create(team=team, user=alice)
    team.members.add(bob)
    team.members.remove(alice)
    bob.jobcenter_teams.clear()

    records = new_records(before, model="jobcenter.teammembership")
    assert [(r.action, r.object_repr) for r in records] == [
        ("create", "alice in Brand A"),
        ("create", "bob in Brand A"),
        ("delete", "alice in Brand A"),
        ("delete", "bob in Brand A"),
    ]
    assert records[0].changes == {"team": {"new": team.pk}, "user": {"new": alice.pk}}


def test_api_tokens_made_and_revoked_are_recorded_without_the_key() -> None:
    from jobcenter.tokens import create_token, revoke_token

    boss = superuser()
    before = last_id()
    token, key = create_token(boss, "CI exports", 30)
    revoke_token(token, by=boss)

    made, revoked = new_records(before, model="jobcenter.apitoken")
    assert (made.action, revoked.action) == ("create", "delete")
    assert made.changes["name"] == {"new": "CI exports"}
    assert made.changes["user"] == {"new": boss.pk}
    assert key not in stored_text() and token.digest not in stored_text()
    assert token.token_key not in stored_text()


def test_schedule_changes_are_recorded_but_not_the_schedulers_own_writes() -> None:
    before = last_id()
    call_command("setup_schedules", stdout=io.StringIO())
    created = new_records(before, model="django_q.schedule")
    assert [(r.action, r.actor) for r in created] == [("create", "command:setup_schedules")]

    schedule = ensure_schedule()
    before = last_id()
    schedule.next_run += timedelta(minutes=1)  # what the scheduler writes on every run
    schedule.task = "0123456789abcdef"
    schedule.save()
    assert new_records(before) == []
    schedule.minutes = 5
    schedule.save()
    (record,) = new_records(before)
    assert record.changes == {"minutes": {"old": 1, "new": 5}}
    schedule.delete()
    assert new_records(before)[-1].action == "delete"


def test_commands_run_from_a_shell_are_named_by_the_process(monkeypatch: Any) -> None:
    """Django's own commands (createsuperuser, changepassword, shell) are no
    AuditedCommand: a process started as `manage.py <name>` names them."""
    monkeypatch.setattr(sys, "argv", ["manage.py", "createsuperuser"])
    before = last_id()
    User.objects.create_superuser("root", password="pw-not-used")
    (record,) = new_records(before)
    assert (record.actor, record.address) == ("command:createsuperuser", socket.gethostname())
    assert record.changes["is_superuser"] == {"new": True}
    assert record.changes["password"] == "changed"


def test_every_job_center_command_is_audited() -> None:
    commands = Path(settings.BASE_DIR, "jobcenter", "management", "commands")
    names = sorted(p.stem for p in commands.glob("*.py") if p.stem != "__init__")
    assert names
    for name in names:
        module = __import__(f"jobcenter.management.commands.{name}", fromlist=["Command"])
        assert issubclass(module.Command, AuditedCommand), name


# --- append-only ------------------------------------------------------------------------


def test_records_cannot_be_changed_or_deleted_through_the_orm() -> None:
    api_account()
    record = AuditRecord.objects.get(model=ACCOUNT)
    record.actor = "someone else"
    with pytest.raises(AppendOnlyError):
        record.save()
    with pytest.raises(AppendOnlyError):
        record.delete()
    with pytest.raises(AppendOnlyError):
        AuditRecord.objects.filter(pk=record.pk).update(actor="someone else")
    with pytest.raises(AppendOnlyError):
        AuditRecord.objects.all().delete()
    with pytest.raises(AppendOnlyError):
        AuditRecord.objects.bulk_update([record], ["actor"])
    forged = AuditRecord(pk=record.pk, actor="forged", action="create", model="x", object_id="1")
    with pytest.raises(IntegrityError), transaction.atomic():
        forged.save()  # an INSERT, never an overwrite
    assert AuditRecord.objects.get(model=ACCOUNT).actor == "system"


# --- who sees it ------------------------------------------------------------------------


def test_only_superusers_see_the_audit_log_whatever_permissions_staff_hold() -> None:
    api_account()
    record = AuditRecord.objects.get(model=ACCOUNT)
    staff = User.objects.create_user("viewer", password="pw", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(codename__endswith="_auditrecord"))
    pages = [
        reverse("admin:jobcenter_auditrecord_changelist"),
        reverse("admin:jobcenter_auditrecord_change", args=[record.pk]),
        reverse("admin:jobcenter_auditrecord_export", args=["csv"]),
    ]
    client = Client()
    client.force_login(staff)
    for url in pages:
        assert client.get(url).status_code == 403, url
    assert "Audit records" not in client.get(reverse("admin:index")).content.decode()
    assert client.get(reverse("admin:jobcenter_auditrecord_add")).status_code == 403

    client.force_login(superuser())
    index = client.get(reverse("admin:index")).content.decode()
    assert "Audit records" in index
    listing = client.get(pages[0] + "?action__exact=create&q=EP")
    assert listing.status_code == 200 and "EP main" in listing.content.decode()
    detail = client.get(pages[1]).content.decode()
    assert "credentials.client_secret" in detail and CLIENT_SECRET not in detail
    assert client.get(reverse("admin:jobcenter_auditrecord_add")).status_code == 403
    delete = reverse("admin:jobcenter_auditrecord_delete", args=[record.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert AuditRecord.objects.filter(pk=record.pk).exists()


def test_the_csv_export_streams_the_rows_the_list_filters_select() -> None:
    cache.clear()  # the export throttle
    account = api_account()
    account.name = "EP renamed"
    account.save()
    account.enabled = False
    account.save()
    AlertChannel.objects.create(name="=HYPERLINK(1)", kind="email", recipients="a@example.com")
    client = Client()
    client.force_login(superuser())
    url = reverse("admin:jobcenter_auditrecord_export", args=["csv"])

    response = client.get(url + "?action__exact=change&model__exact=" + ACCOUNT)
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    rows = list(
        csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig")))
    )
    assert [json.loads(row["changes"]) for row in rows] == [  # JSON text in one cell
        {"enabled": {"old": True, "new": False}},
        {"name": {"old": "EP main", "new": "EP renamed"}},
    ]
    assert {row["action"] for row in rows} == {"change"}
    assert rows[0]["at"].endswith("Z") and rows[0]["object"] == "EP renamed"

    searched = client.get(url + "?q=HYPERLINK")
    (row,) = csv.DictReader(io.StringIO(b"".join(searched.streaming_content).decode("utf-8-sig")))
    assert row["object"] == "'=HYPERLINK(1)"  # a spreadsheet would run it: quoted
    assert (
        client.get(reverse("admin:jobcenter_auditrecord_export", args=["ndjson"])).status_code
        == 404
    )


# --- what the sync writes is not audited, and costs the sync nothing --------------------


def test_a_sync_records_nothing_and_saves_no_audited_model(sandbox: Any) -> None:
    account, _ = sandbox_account(sandbox, "klaviyo", seed=11, jobs_per_kind=30)
    audited = set(recorder.WATCHED)
    saved: list[str] = []

    def spy(sender: type, **kwargs: Any) -> None:
        if sender in audited:
            saved.append(sender.__name__)

    before = last_id()
    pre_save.connect(spy, weak=False)
    try:
        run = sync_account(account.pk)
        sync_account(account.pk)
    finally:
        pre_save.disconnect(spy)
    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    account.refresh_from_db()
    assert account.last_status == "ok" and account.last_sync_at is not None
    assert new_records(before) == []
    # No save of an audited model: the signals (and their SELECT) never ran.
    assert saved == []
