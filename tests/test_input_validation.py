"""Input that would break a header or park a worker is refused where staff type it.

Control characters in credentials (a key pasted with a line break goes into an HTTP
header) and in account names (which go into mail subjects and log lines), and rate limits
a worker would sleep on for longer than a task may run: each is a field error in the
admin form, a 400 naming the field in the API, and a CommandError from `add_account`,
never a 500 and never a saved account.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client, override_settings
from django.urls import reverse

from jobcenter.models import ProviderAccount, SyncRun
from jobcenter.sync.engine import sync_account
from providers.http import HttpClient
from tests.api_support import CLIENT_ID, CLIENT_SECRET, api_account, make_user, token_client
from tests.factories import sandbox_account
from tests.test_api_accounts import new_account_body

V1 = "/api/v1"
# Each is a control character (Unicode Cc) or a line separator somewhere inside a value.
CONTROL = ["\n", "\r\n", "\t", "\x00", "\x1b", "\x7f", "\x85", "\u2028"]
CONTROL_IDS = ["LF", "CRLF", "TAB", "NUL", "ESC", "DEL", "NEL", "LSEP"]

UNBOUNDED = [
    ([[1, 1e9]], "a day"),  # the finding: one request a billion seconds apart
    ([[1, 1000]], "could wait"),  # 1,111 s for a token, over the 900 s task timeout
    ([[10_000, 172_800]], "a day"),  # a two-day window
    ([[1, 0]], "window lasts"),
    ([[1, -5]], "window lasts"),
    ([[1, 1e-9]], "window lasts"),
    ([[0, 1]], "requests >= 1"),
    ([[-3, 1]], "requests >= 1"),
    ([[1.5, 1]], "whole number"),
    ([[True, 1]], "finite numbers"),
    ([[10**400, 1]], "finite numbers"),
    ([["ten", 1]], "finite numbers"),
    ([], "at least one"),
]
BOUNDED = [[[10, 1]], [[1, 600]], [[75, 1], [750, 60]], [[100_000, 86_400]]]


@pytest.fixture
def api() -> Any:
    cache.clear()  # throttle counters
    return token_client(make_user("superuser"))


def admin_form(**overrides: str) -> dict[str, str]:
    form = {
        "name": "EP form",
        "provider": "elasticpath",
        "base_url": "",
        "enabled": "on",
        "sync_interval_minutes": "5",
        "rate_limits": "{}",
        "credential__elasticpath__client_id": CLIENT_ID,
        "credential__elasticpath__client_secret": CLIENT_SECRET,
    }
    form.update(overrides)
    return form


def admin_errors(client: Client, form: dict[str, str]) -> dict[str, list[str]]:
    response = client.post(reverse("admin:jobcenter_provideraccount_add"), form)
    assert response.status_code == 200, "the form was accepted"
    return dict(response.context["adminform"].form.errors)


def add_account(name: str, credentials: str) -> None:
    """`manage.py add_account` with the credentials JSON on standard input."""
    stdin = sys.stdin
    sys.stdin = io.StringIO(credentials)
    try:
        call_command("add_account", name, "--provider", "elasticpath", stdout=io.StringIO())
    finally:
        sys.stdin = stdin


# --- control characters ---------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("char", CONTROL, ids=CONTROL_IDS)
def test_control_characters_in_credentials_are_refused_everywhere(
    api: Any, admin_client: Client, char: str
) -> None:
    secret = f"{CLIENT_SECRET}{char}X-Injected: 1"

    created = api.post(
        f"{V1}/accounts/",
        new_account_body(credentials={"client_id": CLIENT_ID, "client_secret": secret}),
        format="json",
    )
    assert created.status_code == 400, created.content
    assert "client_secret" in created.json()["credentials"]
    assert "X-Injected" not in created.content.decode()  # never echoes the value

    errors = admin_errors(admin_client, admin_form(credential__elasticpath__client_secret=secret))
    assert list(errors) == ["credential__elasticpath__client_secret"]

    with pytest.raises(CommandError, match="client_secret"):
        add_account("EP by command", json.dumps({"client_id": CLIENT_ID, "client_secret": secret}))
    assert not ProviderAccount.objects.exists()


@pytest.mark.django_db
def test_control_characters_in_an_update_keep_the_stored_credentials(api: Any) -> None:
    account = api_account()
    stored = account.credentials_encrypted
    response = api.patch(
        f"{V1}/accounts/{account.pk}/",
        {"credentials": {"client_id": f"{CLIENT_ID}\r\nHost: evil.example"}},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert "client_id" in response.json()["credentials"]
    account.refresh_from_db()
    assert account.credentials_encrypted == stored


@pytest.mark.django_db
@pytest.mark.parametrize("char", CONTROL, ids=CONTROL_IDS)
def test_control_characters_in_account_names_are_refused_everywhere(
    api: Any, admin_client: Client, char: str
) -> None:
    name = f"EP{char}Bcc: attacker@example.com"

    created = api.post(f"{V1}/accounts/", new_account_body(name=name), format="json")
    assert created.status_code == 400, created.content
    assert "control characters" in json.dumps(created.json()["name"])

    assert list(admin_errors(admin_client, admin_form(name=name))) == ["name"]

    with pytest.raises(CommandError, match="name"):
        add_account(name, json.dumps({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}))
    assert not ProviderAccount.objects.exists()

    account = api_account()
    renamed = api.patch(f"{V1}/accounts/{account.pk}/", {"name": name}, format="json")
    assert renamed.status_code == 400, renamed.content
    assert "name" in renamed.json()
    account.refresh_from_db()
    assert "Bcc" not in account.name


# --- rate limits ----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(("windows", "words"), UNBOUNDED)
def test_unbounded_rate_limits_are_a_field_error_in_api_and_admin(
    api: Any, admin_client: Client, windows: list, words: str
) -> None:
    limits = {"*": windows}
    created = api.post(f"{V1}/accounts/", new_account_body(rate_limits=limits), format="json")
    assert created.status_code == 400, created.content
    assert words in json.dumps(created.json()["rate_limits"])

    account = api_account()
    patched = api.patch(f"{V1}/accounts/{account.pk}/", {"rate_limits": limits}, format="json")
    assert patched.status_code == 400, patched.content
    assert list(patched.json()) == ["rate_limits"]

    errors = admin_errors(admin_client, admin_form(rate_limits=json.dumps(limits)))
    assert list(errors) == ["rate_limits"]
    assert words in " ".join(errors["rate_limits"])
    assert list(ProviderAccount.objects.values_list("name", flat=True)) == [account.name]


@pytest.mark.django_db
@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN"])
def test_non_finite_numbers_the_admin_json_parser_reads_are_refused(
    admin_client: Client, literal: str
) -> None:
    for windows in (f"[[1, {literal}]]", f"[[{literal}, 1]]"):
        errors = admin_errors(admin_client, admin_form(rate_limits=f'{{"*": {windows}}}'))
        assert list(errors) == ["rate_limits"], windows
    assert not ProviderAccount.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("windows", BOUNDED)
def test_bounded_rate_limits_are_accepted(api: Any, windows: list) -> None:
    response = api.post(
        f"{V1}/accounts/", new_account_body(rate_limits={"*": windows}), format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["rate_limits"] == {"*": windows}


@pytest.mark.django_db
def test_the_longest_wait_follows_the_task_timeout(api: Any) -> None:
    """[[1, 60]]: a token every 66.7 s (the bucket keeps 10 % headroom)."""
    body = new_account_body(rate_limits={"*": [[1, 60]]})
    with override_settings(Q_CLUSTER={**settings.Q_CLUSTER, "timeout": 60}):
        refused = api.post(f"{V1}/accounts/", body, format="json")
    assert refused.status_code == 400
    assert "60 seconds, JOBCENTER_TASK_TIMEOUT" in json.dumps(refused.json()["rate_limits"])
    assert api.post(f"{V1}/accounts/", body, format="json").status_code == 201


@pytest.mark.django_db(transaction=True)
def test_an_unbounded_limit_stored_before_the_check_fails_the_sync_instead_of_parking_it(
    sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Elastic Path: the token and the first page share one tier, so the second request waits.
    account, described = sandbox_account(sandbox, "elasticpath", seed=1, jobs_per_kind=2)
    ProviderAccount.objects.filter(pk=account.pk).update(rate_limits={"*": [[1, 1e9]]})
    slept: list[float] = []

    def no_sleep(self: HttpClient, seconds: float) -> None:
        slept.append(seconds)
        raise AssertionError(f"the worker would sleep {seconds:.0f} s for a token")

    monkeypatch.setattr(HttpClient, "_sleep", no_sleep)

    run = sync_account(account.pk)

    assert run.outcome == "failed"
    assert run.error.startswith("the account's stored settings were refused: Rate limit '*'")
    assert slept == []
    assert sandbox.requests(described["id"]) == []
    assert SyncRun.objects.get(pk=run.pk).error == run.error
