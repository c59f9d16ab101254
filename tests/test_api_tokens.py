"""API tokens: hashed, named, expiring, revocable, shown once; each staff member's own.

Issue 17: DRF's authtoken kept keys in clear, never expired them, and let any staff
member holding `view_tokenproxy` read a superuser's key in the admin.
"""

from __future__ import annotations

import importlib
import io
import re
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from knox.settings import CONSTANTS

from jobcenter.models import ApiToken
from jobcenter.tokens import create_token, revoke_token
from tests.api_support import grant, make_user, token_client
from tests.leaks import assert_not_in_database

JOBS = "/api/v1/jobs/"
KEY = re.compile(r"jc_[0-9a-f]{64}")


def run_command(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_token", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def get_jobs(key: str) -> Any:
    return Client().get(JOBS, HTTP_AUTHORIZATION=f"Token {key}")


def secret_part(key: str) -> str:
    """What of a key is stored nowhere: all but the lookup prefix knox keeps."""
    return key[CONSTANTS.TOKEN_KEY_LENGTH :]


def staff_with_every_token_permission() -> User:
    """Staff who may read jobs and hold every model permission on tokens (permissions
    must not widen what they see of tokens)."""
    staff = make_user("staff")
    tokens = [f"{action}_apitoken" for action in ("add", "change", "delete", "view")]
    return grant(staff, "view_job", *tokens)


# --- the command ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_command_prints_a_working_token_with_its_name_and_expiry() -> None:
    user = make_user("viewer")
    before = timezone.now()
    out, err = run_command(user.username, "--name", "nightly report", "--days", "7")
    assert KEY.fullmatch(out.strip()), out  # the key alone: TOKEN=$(manage.py ...) works
    key = out.strip()
    token = ApiToken.objects.get()
    assert (token.user, token.name) == (user, "nightly report")
    assert before + timedelta(days=7) <= token.expiry <= timezone.now() + timedelta(days=7)
    assert token.created >= before and token.last_used_at is None
    assert "'nightly report'" in err and f"{token.expiry:%Y-%m-%d}" in err
    assert key not in err
    assert get_jobs(key).status_code == 200


@pytest.mark.django_db
def test_the_default_lifetime_is_the_setting(settings: Any) -> None:
    settings.JOBCENTER_API_TOKEN_DAYS = 30
    user = make_user("superuser")
    run_command(user.username)
    token = ApiToken.objects.get()
    assert token.name == "command line"
    assert timedelta(days=29) < token.expiry - token.created <= timedelta(days=30)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["nobody"], "No user 'nobody'"),
        (["nonstaff-user"], "user: nonstaff-user is not active staff"),
        (["inactive"], "user: inactive is not active staff"),
        (["superuser-user", "--days", "0"], "days: From 1 to 366 days."),
        (["superuser-user", "--days", "367"], "days: From 1 to 366 days."),
        (["superuser-user", "--name", "  "], "name: Give the token a name"),
        (["superuser-user", "--name", "x" * 101], "name: At most 100 characters."),
    ],
)
def test_the_command_refuses_what_it_cannot_make(args: list[str], says: str) -> None:
    make_user("nonstaff")
    make_user("superuser")
    User.objects.create_user("inactive", is_staff=True, is_active=False)
    with pytest.raises(CommandError, match=re.escape(says)):
        run_command(*args)
    assert not ApiToken.objects.exists()


# --- the key is kept nowhere ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_no_key_is_in_the_database() -> None:
    """Neither a command's key nor an admin-made one, after both were used: only digests."""
    admin_user = make_user("superuser")
    from_command, _ = run_command(admin_user.username, "--name", "from the command")
    from_command = from_command.strip()
    browser = Client()
    browser.force_login(admin_user)
    page = browser.post(
        reverse("admin:jobcenter_apitoken_add"),
        {"user": admin_user.pk, "name": "from the admin", "days": "5"},
    )
    from_admin = KEY.search(page.content.decode()).group(0)
    for key in (from_command, from_admin):
        assert get_jobs(key).status_code == 200
    assert ApiToken.objects.filter(last_used_at__isnull=False).count() == 2
    for key in (from_command, from_admin):
        assert_not_in_database(secret_part(key))


@pytest.mark.django_db(transaction=True)
def test_the_migration_removes_drf_authtokens_clear_keys() -> None:
    """An upgraded database: DRF's table, its permissions and the admin history that named
    a key (DRF's Token is its key) all go; nothing else does."""
    old_key = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c"
    user = make_user("staff")
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, created timestamp, "
            "user_id integer)"
        )
        cursor.execute(
            "INSERT INTO authtoken_token VALUES (%s, %s, %s)", [old_key, timezone.now(), user.pk]
        )
    proxy = ContentType.objects.create(app_label="authtoken", model="tokenproxy")
    user.user_permissions.add(
        Permission.objects.create(content_type=proxy, codename="view_tokenproxy", name="view")
    )
    LogEntry.objects.create(
        user=user, content_type=proxy, object_id=old_key, object_repr=old_key, action_flag=1
    )
    MigrationRecorder.Migration.objects.create(app="authtoken", name="0001_initial")
    kept = LogEntry.objects.create(user=user, object_repr="an account", action_flag=2)

    migration = importlib.import_module("jobcenter.migrations.0010_api_tokens")
    with connection.schema_editor() as editor:
        migration.forget_clear_tokens(apps, editor)

    assert "authtoken_token" not in connection.introspection.table_names()
    assert not ContentType.objects.filter(app_label="authtoken").exists()
    assert not User.objects.get(pk=user.pk).has_perm("authtoken.view_tokenproxy")
    assert not MigrationRecorder.Migration.objects.filter(app="authtoken").exists()
    assert LogEntry.objects.get(pk=kept.pk).object_repr == "an account"
    assert LogEntry.objects.count() == 2
    assert_not_in_database(old_key)


# --- authentication ------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_expired_token_is_refused_and_stays_listed() -> None:
    token, key = create_token(make_user("superuser"), "short-lived", 1)
    assert get_jobs(key).status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expiry=timezone.now() - timedelta(seconds=1))
    response = get_jobs(key)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Token"
    assert ApiToken.objects.filter(pk=token.pk).exists()  # its owner sees why it stopped


@pytest.mark.django_db
def test_a_revoked_token_is_refused_at_once() -> None:
    user = make_user("superuser")
    token, key = create_token(user, "to revoke", 5)
    _, other_key = create_token(user, "to keep", 5)
    assert get_jobs(key).status_code == 200
    revoke_token(token, by=user)
    assert get_jobs(key).status_code == 401
    assert get_jobs(other_key).status_code == 200


@pytest.mark.django_db
def test_last_use_is_recorded_at_most_once_a_minute() -> None:
    token, key = create_token(make_user("superuser"), "busy client", 5)
    assert get_jobs(key).status_code == 200
    token.refresh_from_db()
    first = token.last_used_at
    assert first is not None and timezone.now() - first < timedelta(minutes=1)

    with CaptureQueriesContext(connection) as within_the_minute:
        assert get_jobs(key).status_code == 200
    token.refresh_from_db()
    assert token.last_used_at == first
    writes = [q["sql"] for q in within_the_minute if q["sql"].startswith("UPDATE")]
    assert not writes, writes

    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - timedelta(minutes=2))
    assert get_jobs(key).status_code == 200
    token.refresh_from_db()
    assert token.last_used_at > first


@pytest.mark.django_db
def test_a_token_costs_one_query_per_request() -> None:
    """Knox's own check also loads the user's other tokens (and deletes expired ones)."""
    user = make_user("superuser")
    for n in range(3):
        create_token(user, f"other {n}", 5)
    _, key = create_token(user, "in use", 5)
    assert get_jobs(key).status_code == 200  # records the first use
    with CaptureQueriesContext(connection) as captured:
        assert get_jobs(key).status_code == 200
    token_queries = [q["sql"] for q in captured if "jobcenter_apitoken" in q["sql"]]
    assert len(token_queries) == 1, token_queries


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header",
    [
        "Token \xff\xfe",  # not UTF-8: knox's own check fails with a 500
        "Token 0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c",  # an old DRF key
        "Token jc_" + "0" * 64,
        "Token",
        "Token one two",
    ],
)
def test_a_bad_token_is_a_401_asking_for_a_token(header: str) -> None:
    create_token(make_user("superuser"), "present", 5)
    response = Client().get(JOBS, HTTP_AUTHORIZATION=header)
    assert response.status_code == 401, response.content
    assert response.headers["WWW-Authenticate"] == "Token"


@pytest.mark.django_db
def test_a_token_of_a_user_who_lost_staff_is_forbidden() -> None:
    user = make_user("viewer")
    client = token_client(user)
    assert client.get(JOBS).status_code == 200
    User.objects.filter(pk=user.pk).update(is_staff=False)
    assert client.get(JOBS).status_code == 403


# --- the admin -----------------------------------------------------------------------------


def admin_client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_staff_see_and_revoke_only_their_own_tokens() -> None:
    boss = make_user("superuser")
    boss_token, boss_key = create_token(boss, "boss's deploy key", 30)
    staff = staff_with_every_token_permission()
    own, _ = create_token(staff, "my own script", 30)
    browser = admin_client(staff)

    listing = browser.get(reverse("admin:jobcenter_apitoken_changelist"))
    assert listing.status_code == 200
    assert "my own script" in listing.content.decode()
    assert "boss&#x27;s deploy key" not in listing.content.decode()
    for view in ("change", "delete", "history"):
        page = browser.get(reverse(f"admin:jobcenter_apitoken_{view}", args=[boss_token.pk]))
        assert page.status_code == 302, view  # "doesn't exist", as a missing token
        assert "boss" not in page.content.decode()
    browser.post(reverse("admin:jobcenter_apitoken_delete", args=[boss_token.pk]), {"post": "yes"})
    browser.post(
        reverse("admin:jobcenter_apitoken_changelist"),
        {"action": "delete_selected", "_selected_action": [boss_token.pk, own.pk], "post": "yes"},
    )
    assert list(ApiToken.objects.all()) == [boss_token]
    assert get_jobs(boss_key).status_code == 200


@pytest.mark.django_db
def test_no_admin_page_shows_a_key_or_its_digest() -> None:
    boss = make_user("superuser")
    token, key = create_token(boss, "deploys", 30)
    assert get_jobs(key).status_code == 200
    browser = admin_client(boss)
    for url in (
        reverse("admin:jobcenter_apitoken_changelist"),
        reverse("admin:jobcenter_apitoken_change", args=[token.pk]),
        reverse("admin:jobcenter_apitoken_history", args=[token.pk]),
        reverse("admin:jobcenter_apitoken_delete", args=[token.pk]),
    ):
        page = browser.get(url)
        assert page.status_code == 200, url
        html = page.content.decode()
        assert "deploys" in html
        assert secret_part(key) not in html and token.digest not in html, url


@pytest.mark.django_db
def test_the_admin_shows_a_new_key_once_and_only_for_oneself() -> None:
    boss = make_user("superuser")
    staff = staff_with_every_token_permission()
    browser = admin_client(staff)
    form = browser.get(reverse("admin:jobcenter_apitoken_add"))
    assert form.status_code == 200
    assert 'name="user"' not in form.content.decode()  # staff make tokens for themselves

    page = browser.post(
        reverse("admin:jobcenter_apitoken_add"), {"user": boss.pk, "name": "laptop", "days": "3"}
    )
    assert page.status_code == 200
    assert "no-store" in page.headers["Cache-Control"]
    key = KEY.search(page.content.decode()).group(0)
    token = ApiToken.objects.get()
    assert (token.user, token.name) == (staff, "laptop")
    assert timedelta(days=2) < token.expiry - timezone.now() <= timedelta(days=3)
    assert get_jobs(key).status_code == 200
    history = LogEntry.objects.get()
    assert history.object_id == str(token.pk) and history.object_repr == "laptop (staff-user)"
    again = browser.get(reverse("admin:jobcenter_apitoken_change", args=[token.pk]))
    assert secret_part(key) not in again.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("who", "days", "field"),
    [("nonstaff", "5", "user"), ("superuser", "0", "days"), ("superuser", "367", "days")],
)
def test_the_admin_form_refuses_what_it_cannot_make(who: str, days: str, field: str) -> None:
    boss = make_user("superuser")
    target = boss if who == "superuser" else make_user(who)
    page = admin_client(boss).post(
        reverse("admin:jobcenter_apitoken_add"), {"user": target.pk, "name": "x", "days": days}
    )
    assert page.status_code == 200
    assert field in page.context["adminform"].form.errors
    assert not ApiToken.objects.exists()


@pytest.mark.django_db
def test_users_who_are_not_staff_have_no_token_pages() -> None:
    outsider = make_user("nonstaff")
    create_token(make_user("superuser"), "deploys", 30)
    page = admin_client(outsider).get(reverse("admin:jobcenter_apitoken_changelist"))
    assert page.status_code == 302 and "/admin/login/" in page["Location"]
