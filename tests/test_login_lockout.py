"""Logins: failed attempts lock a username and an address out (django-axes, counted in the
database cache), the address is the proxy's forwarded one only behind the proxy, and the
API's login page gives a session to active staff only."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection
from django.test import Client, override_settings
from django.test.client import RequestFactory
from django.utils import timezone

from jobcenter.middleware import client_address

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
ADMIN_LOGIN = "/admin/login/"
API_LOGIN = "/api/auth/login/"
LIMIT = settings.AXES_FAILURE_LIMIT


@pytest.fixture(autouse=True)
def fresh_counts() -> None:
    cache.clear()  # inside the test's transaction: rolled back with it


def staff(name: str = "alice", **fields: object) -> User:
    return User.objects.create_user(name, password=PASSWORD, is_staff=True, **fields)


def attempt(
    username: str,
    password: str,
    *,
    via: str = ADMIN_LOGIN,
    forwarded: str | None = None,
    client: Client | None = None,
) -> tuple[int, Client]:
    """One login POST; the status and the client (whose session says if it got in)."""
    client = client or Client()
    headers = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded else {}
    response = client.post(via, {"username": username, "password": password}, **headers)
    return response.status_code, client


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_the_settings_default_to_five_failures_and_fifteen_minutes() -> None:
    assert (settings.JOBCENTER_LOGIN_FAILURE_LIMIT, settings.AXES_FAILURE_LIMIT) == (5, 5)
    assert settings.AXES_COOLOFF_TIME.total_seconds() == 15 * 60


def test_a_username_is_locked_after_the_limit_whatever_the_address() -> None:
    staff("alice")
    staff("bob")
    for i in range(LIMIT - 1):
        status, _ = attempt("alice", "wrong", forwarded=f"203.0.113.{i}")
        assert status == 200  # the form again, with its error
    status, _ = attempt("alice", "wrong", forwarded="203.0.113.99")
    assert status == 429
    # The right password, from a fresh address, through either login page: refused.
    for via in (ADMIN_LOGIN, API_LOGIN):
        status, client = attempt("alice", PASSWORD, via=via, forwarded="192.0.2.1")
        assert status == 429
        assert not logged_in(client)
    # Another user is not affected.
    status, client = attempt("bob", PASSWORD, forwarded="192.0.2.2")
    assert status == 302
    assert logged_in(client)


def test_the_lockout_page_says_why_and_for_how_long() -> None:
    staff("alice")
    for _ in range(LIMIT):
        response = Client().post(ADMIN_LOGIN, {"username": "alice", "password": "wrong"})
    assert response.status_code == 429
    assert response["Retry-After"] == str(15 * 60)
    text = response.content.decode()
    assert "Too many failed logins" in text
    assert "15 minutes" in text
    assert f"After {LIMIT} failed attempts" in text


def test_the_lockout_lifts_after_the_cool_off() -> None:
    staff("alice")
    for _ in range(LIMIT):
        attempt("alice", "wrong")
    assert attempt("alice", PASSWORD)[0] == 429
    # The cool-off passes: the counters' cache rows expire (the database cache's clock).
    past = connection.ops.adapt_datetimefield_value(timezone.now() - timedelta(seconds=1))
    with connection.cursor() as cursor:
        cursor.execute("UPDATE jobcenter_cache SET expires = %s", [past])
    status, client = attempt("alice", PASSWORD)
    assert status == 302
    assert logged_in(client)


def test_an_operator_lifts_a_lockout_with_axes_commands() -> None:
    """What docs/operations.md tells an operator to run (django-axes' commands, which work
    with the cache handler for a username and an address, not for "everything")."""
    staff("alice")
    for i in range(LIMIT):
        attempt("alice", "wrong", forwarded=f"203.0.113.{i}")
    assert attempt("alice", PASSWORD, forwarded="192.0.2.1")[0] == 429
    call_command("axes_reset_username", "alice", stdout=io.StringIO())
    assert attempt("alice", PASSWORD, forwarded="192.0.2.1")[0] == 302

    for _ in range(LIMIT):
        attempt("alice", "wrong", forwarded="192.0.2.9")
    assert attempt("alice", PASSWORD, forwarded="192.0.2.9")[0] == 429
    call_command("axes_reset_ip_username", "192.0.2.9", "alice", stdout=io.StringIO())
    assert attempt("alice", PASSWORD, forwarded="192.0.2.9")[0] == 302


def test_an_address_is_locked_after_failures_for_different_usernames() -> None:
    staff("bob")
    address = "198.51.100.7"
    for i in range(LIMIT):
        attempt(f"guess-{i}", "wrong", forwarded=address)
    status, client = attempt("bob", PASSWORD, forwarded=address)
    assert status == 429
    assert not logged_in(client)
    # A client adding its own X-Forwarded-For entries (left of the proxy's) changes nothing.
    status, _ = attempt("bob", PASSWORD, forwarded=f"10.9.8.7, {address}")
    assert status == 429
    status, client = attempt("bob", PASSWORD, forwarded="198.51.100.8")
    assert status == 302
    assert logged_in(client)


@pytest.mark.parametrize("behind_proxy", [True, False])
def test_x_forwarded_for_counts_only_behind_the_proxy(behind_proxy: bool) -> None:
    staff("bob")
    with override_settings(JOBCENTER_BEHIND_TLS_PROXY=behind_proxy):
        # Every failure claims another address; all come from REMOTE_ADDR 127.0.0.1.
        for i in range(LIMIT):
            attempt(f"guess-{i}", "wrong", forwarded=f"203.0.113.{i}")
        status, client = attempt("bob", PASSWORD, forwarded="203.0.113.200")
    if behind_proxy:  # the proxy's header names five addresses, none of them bob's
        assert status == 302
        assert logged_in(client)
    else:  # a forged header: all five were 127.0.0.1, which is now locked
        assert status == 429
        assert not logged_in(client)


def test_the_client_address_behind_one_or_two_proxies() -> None:
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.2")
    assert client_address(request) == "10.0.0.2"
    request.META["HTTP_X_FORWARDED_FOR"] = "1.1.1.1, 203.0.113.5 , 10.0.0.3"
    with override_settings(JOBCENTER_BEHIND_TLS_PROXY=True, JOBCENTER_PROXY_COUNT=1):
        assert client_address(request) == "10.0.0.3"
    with override_settings(JOBCENTER_BEHIND_TLS_PROXY=True, JOBCENTER_PROXY_COUNT=2):
        assert client_address(request) == "203.0.113.5"
    with override_settings(JOBCENTER_BEHIND_TLS_PROXY=False):
        assert client_address(request) == "10.0.0.2"
    request.META["HTTP_X_FORWARDED_FOR"] = "not-an-address"
    with override_settings(JOBCENTER_BEHIND_TLS_PROXY=True, JOBCENTER_PROXY_COUNT=1):
        assert client_address(request) == "10.0.0.2"


def test_failures_at_the_api_login_count_for_the_admin_login() -> None:
    staff("alice")
    statuses = [attempt("alice", "wrong", via=API_LOGIN)[0] for _ in range(LIMIT)]
    assert statuses == [200] * (LIMIT - 1) + [429]
    assert attempt("alice", PASSWORD, via=ADMIN_LOGIN)[0] == 429


def test_the_api_login_gives_a_session_to_active_staff_only() -> None:
    User.objects.create_user("carol", password=PASSWORD)  # not staff
    staff("dave", is_active=False)
    staff("alice", is_superuser=True)
    for name in ("carol", "dave"):
        response = Client().post(API_LOGIN, {"username": name, "password": PASSWORD})
        assert response.status_code == 200
        assert "_auth_user_id" not in response.client.session
        assert response.context["form"].errors
    status, client = attempt("alice", PASSWORD, via=API_LOGIN)
    assert status == 302
    assert logged_in(client)
    assert client.get("/api/v1/jobs/").status_code == 200


def test_the_test_clients_login_still_works() -> None:
    staff("alice")
    client = Client()
    assert not client.login(username="alice", password="wrong")
    assert client.login(username="alice", password=PASSWORD)
    assert client.get("/admin/").status_code == 200
