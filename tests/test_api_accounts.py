"""Accounts over the API: write-only credentials, the admin's checks, sync and test.

Sync and test talk to the Elastic Path sandbox over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.cache import cache

from jobcenter.models import Job, ProviderAccount, SyncRun
from tests.api_support import (
    CLIENT_ID,
    CLIENT_SECRET,
    SECRETS,
    api_account,
    make_unreadable,
    make_user,
    seed_history,
    token_client,
)
from tests.factories import sandbox_account

V1 = "/api/v1"
HIDDEN_FIELDS = {"credentials", "credentials_encrypted", "sync_state", "lease_owner", "lease_until"}


@pytest.fixture
def client() -> Any:
    cache.clear()  # throttle counters
    return token_client(make_user("superuser"))


def new_account_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "EP api",
        "provider": "elasticpath",
        "credentials": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
    }
    body.update(overrides)
    return body


@pytest.mark.django_db
def test_create_account_stores_encrypted_credentials_and_shows_a_hint(client: Any) -> None:
    response = client.post(
        f"{V1}/accounts/",
        new_account_body(
            base_url="https://useast.api.elasticpath.com/",
            enabled=False,
            rate_limits={"*": [[5, 1]]},
            sync_interval_minutes=15,
        ),
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert not HIDDEN_FIELDS & set(body)
    assert body["credentials_hint"] == "…" + CLIENT_ID[-4:]
    assert body["base_url"] == "https://useast.api.elasticpath.com"
    assert body["enabled"] is False
    assert body["rate_limits"] == {"*": [[5, 1]]}
    assert body["sync_interval_minutes"] == 15
    account = ProviderAccount.objects.get(pk=body["id"])
    assert account.get_credentials() == {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    assert CLIENT_SECRET not in account.credentials_encrypted
    assert not any(secret in response.content.decode() for secret in SECRETS)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"base_url": "https://evil.example.com"}, "base_url", "not a Elastic Path host"),
        ({"base_url": "http://useast.api.elasticpath.com"}, "base_url", "https"),
        ({"provider": "acme"}, "provider", "not a valid choice"),
        ({"credentials": {"client_id": "only-the-id"}}, "credentials", "required"),
        (
            {"credentials": {**{"client_id": "a", "client_secret": "b"}, "token": "c"}},
            "credentials",
            "no credential named",
        ),
        (
            {"credentials": {"client_id": ["x"], "client_secret": "b"}},
            "credentials",
            "valid string",
        ),
        ({"credentials": "secret"}, "credentials", "dictionary"),
        ({"rate_limits": {"*": [[0, 1]]}}, "rate_limits", "requests >= 1"),
        ({"rate_limits": [1, 2]}, "rate_limits", "must be an object"),
        ({"sync_interval_minutes": 0}, "sync_interval_minutes", "greater than or equal to 1"),
        ({"name": ""}, "name", "blank"),
    ],
)
def test_create_account_refuses_bad_input(
    client: Any, overrides: dict, field: str, words: str
) -> None:
    response = client.post(f"{V1}/accounts/", new_account_body(**overrides), format="json")
    assert response.status_code == 400, response.content
    assert words in json.dumps(response.json()[field], ensure_ascii=False)
    assert not ProviderAccount.objects.exists()


@pytest.mark.django_db
def test_create_account_needs_credentials_and_a_unique_name(client: Any) -> None:
    body = new_account_body()
    body.pop("credentials")
    missing = client.post(f"{V1}/accounts/", body, format="json")
    assert missing.status_code == 400
    assert "credentials" in missing.json()
    api_account("EP api")
    taken = client.post(f"{V1}/accounts/", new_account_body(), format="json")
    assert taken.status_code == 400
    assert "name" in taken.json()


@pytest.mark.django_db
def test_patch_keeps_stored_credentials_unless_given(client: Any) -> None:
    account = api_account()
    url = f"{V1}/accounts/{account.pk}/"
    renamed = client.patch(
        url, {"name": "EP renamed", "credentials": {"client_id": ""}}, format="json"
    )
    assert renamed.status_code == 200, renamed.content
    account.refresh_from_db()
    assert account.name == "EP renamed"
    assert account.get_credentials() == {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    rotated = client.patch(
        url, {"credentials": {"client_secret": "a-brand-new-secret-9876"}}, format="json"
    )
    assert rotated.status_code == 200
    account.refresh_from_db()
    assert account.get_credentials()["client_secret"] == "a-brand-new-secret-9876"
    assert account.get_credentials()["client_id"] == CLIENT_ID
    assert "a-brand-new-secret" not in rotated.content.decode()


@pytest.mark.django_db
def test_patch_switching_provider_needs_that_providers_credentials(client: Any) -> None:
    account = api_account()
    url = f"{V1}/accounts/{account.pk}/"
    response = client.patch(url, {"provider": "fullstory"}, format="json")
    assert response.status_code == 400
    assert "credentials" in response.json()
    account.refresh_from_db()
    assert account.provider == "elasticpath"


@pytest.mark.django_db
def test_patch_over_unreadable_stored_credentials_is_a_field_error(client: Any) -> None:
    """Stored credentials written with a lost key: a 400 naming the fields to type again
    (the admin form's rule, `merge_credentials`), never a 500; typing them all recovers."""
    account = api_account()
    stored = make_unreadable(account)
    url = f"{V1}/accounts/{account.pk}/"
    response = client.patch(url, {"credentials": {"client_id": "new-client-id"}}, format="json")
    assert response.status_code == 400, response.content
    errors = response.json()["credentials"]
    assert list(errors) == ["client_secret"]
    assert "cannot be decrypted" in errors["client_secret"][0]
    account.refresh_from_db()
    assert account.credentials_encrypted == stored
    # Edits that leave the credentials alone do not need to read them.
    assert client.patch(url, {"name": "EP renamed"}, format="json").status_code == 200
    retyped = client.patch(
        url,
        {"credentials": {"client_id": "new-client-id", "client_secret": "new-secret-0000abcd"}},
        format="json",
    )
    assert retyped.status_code == 200, retyped.content
    account.refresh_from_db()
    assert account.get_credentials() == {
        "client_id": "new-client-id",
        "client_secret": "new-secret-0000abcd",
    }


@pytest.mark.django_db
def test_patch_checks_the_base_url(client: Any) -> None:
    account = api_account()
    response = client.patch(
        f"{V1}/accounts/{account.pk}/", {"base_url": "https://a.klaviyo.com"}, format="json"
    )
    assert response.status_code == 400
    assert "base_url" in response.json()


@pytest.mark.django_db
def test_accounts_cannot_be_deleted_over_the_api(client: Any) -> None:
    account = api_account()
    assert client.delete(f"{V1}/accounts/{account.pk}/").status_code == 405
    assert ProviderAccount.objects.filter(pk=account.pk).exists()


@pytest.mark.django_db
def test_account_list_filters(client: Any) -> None:
    api_account("EP one")
    api_account("EP two", base_url="https://euwest.api.elasticpath.com")
    ProviderAccount.objects.filter(name="EP two").update(enabled=False)
    rows = client.get(f"{V1}/accounts/?enabled=false").json()["results"]
    assert [r["name"] for r in rows] == ["EP two"]
    assert client.get(f"{V1}/accounts/?provider=nobody").status_code == 400


# --- no secret in any response ------------------------------------------------------------------


def every_get_path(rows: dict[str, Any]) -> list[str]:
    return [
        "/jobs/",
        f"/jobs/{rows['job']}/",
        f"/jobs/{rows['job']}/snapshots/",
        f"/jobs/{rows['job']}/errors/",
        "/snapshots/",
        f"/snapshots/{rows['snapshot']}/",
        "/errors/",
        f"/errors/{rows['error']}/",
        "/accounts/",
        f"/accounts/{rows['account']}/",
        "/sync-runs/",
        f"/sync-runs/{rows['run']}/",
    ]


@pytest.mark.django_db(transaction=True)
def test_no_response_body_holds_a_credential(client: Any, sandbox: Any) -> None:
    """Every endpoint, reads and writes, errors included, for an account whose secrets we know."""
    ep, described = sandbox_account(sandbox, "elasticpath")
    secrets = [v for v in described["credentials"].values() if len(v) >= 6]
    secrets += list(SECRETS)
    # Known secrets the sandbox refuses: tests and syncs of it fail, on loopback only.
    local = api_account(base_url=sandbox.base_url("elasticpath"))
    seeded = seed_history(local)
    rows = {
        "account": local.pk,
        "job": seeded["jobs"][1].pk,
        "snapshot": seeded["snapshots"][0].pk,
        "error": seeded["errors"][0].pk,
        "run": seeded["run"].pk,
    }
    bodies: list[tuple[str, int, bytes]] = []

    def call(method: str, path: str, data: Any = None) -> Any:
        response = getattr(client, method)(V1 + path, data, format="json")
        bodies.append((f"{method.upper()} {path}", response.status_code, response.content))
        return response

    for path in every_get_path(rows):
        call("get", path)
    for account in (ep, local):
        call("get", f"/accounts/{account.pk}/")
        call("post", f"/accounts/{account.pk}/test/")  # the sandbox accepts ep, refuses local
        call("patch", f"/accounts/{account.pk}/", {"enabled": True})
    call("post", f"/accounts/{ep.pk}/sync/")
    call("post", f"/accounts/{local.pk}/sync/")
    call("get", f"/sync-runs/?account={ep.pk}")
    call("get", "/jobs/?ordering=-id&page_size=500")
    call("post", "/accounts/", new_account_body(name="EP copy"))
    call("post", "/accounts/", new_account_body(name="EP copy"))  # 400: name taken
    call("post", "/accounts/", new_account_body(name="bad", base_url="https://evil.example.com"))
    call(
        "post",
        "/accounts/",
        new_account_body(name="bad2", credentials={"client_id": CLIENT_ID, "nope": CLIENT_SECRET}),
    )
    call("patch", f"/accounts/{local.pk}/", {"credentials": {"client_secret": ["x"]}})
    call("post", "/jobs/track/", {"account": ep.name, "kind": "product-import", "external_id": "1"})
    # Failing syncs and connection tests record errors: those texts are redacted too.
    wrong = ProviderAccount.objects.get(pk=ep.pk)
    wrong.set_credentials(
        {"client_id": described["credentials"]["client_id"], "client_secret": "wrong-secret-123456"}
    )
    wrong.save()
    secrets.append("wrong-secret-123456")
    call("post", f"/accounts/{ep.pk}/test/")
    call("post", f"/accounts/{ep.pk}/sync/")
    call("get", f"/accounts/{ep.pk}/")
    call("get", f"/sync-runs/?account={ep.pk}")
    call("get", "/sync-runs/")

    assert Job.objects.filter(account=ep).exists()  # the first sync did run
    assert SyncRun.objects.filter(account=local, outcome="failed").exists()
    assert len(bodies) > 30
    for label, status, content in bodies:
        text = content.decode()
        for secret in secrets:
            assert secret not in text, f"{label} ({status}) shows a credential"
        if status < 300:  # a 400 may name the credentials field, never its value
            for field in HIDDEN_FIELDS:
                assert f'"{field}"' not in text, f"{label} shows {field}"


# --- sync and test against the sandbox --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_sync_now_enqueues_and_the_run_is_recorded(client: Any, sandbox: Any) -> None:
    account, described = sandbox_account(sandbox, "elasticpath", jobs_per_kind=3)
    response = client.post(f"{V1}/accounts/{account.pk}/sync/")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["task_id"]
    run = SyncRun.objects.get(pk=body["sync_run"])  # the test cluster runs tasks inline
    assert run.trigger == "api"
    assert run.outcome == "succeeded", run.error
    assert Job.objects.filter(account=account).count() == len(
        sandbox.state(described["id"])["jobs"]
    )
    listed = client.get(f"{V1}/sync-runs/?account={account.pk}&outcome=succeeded").json()
    assert [r["id"] for r in listed["results"]] == [run.pk]


@pytest.mark.django_db(transaction=True)
def test_connection_test_reports_accepted_and_refused_credentials(
    client: Any, sandbox: Any
) -> None:
    account, _ = sandbox_account(sandbox, "elasticpath")
    ok = client.post(f"{V1}/accounts/{account.pk}/test/")
    assert ok.status_code == 200
    assert ok.json()["ok"] is True
    account.set_credentials({"client_id": "someone-else", "client_secret": "not-the-secret-99"})
    account.save()
    refused = client.post(f"{V1}/accounts/{account.pk}/test/")
    assert refused.status_code == 200
    assert refused.json()["ok"] is False
    assert "not-the-secret-99" not in refused.content.decode()


@pytest.mark.django_db
def test_sync_and_test_of_a_missing_account_are_404(client: Any) -> None:
    assert client.post(f"{V1}/accounts/987654/sync/").status_code == 404
    assert client.post(f"{V1}/accounts/987654/test/").status_code == 404
    assert not SyncRun.objects.exists()


@pytest.mark.django_db
def test_seeded_history_is_visible(client: Any) -> None:
    seed_history(api_account())
    assert len(client.get(f"{V1}/jobs/").json()["results"]) == 5
