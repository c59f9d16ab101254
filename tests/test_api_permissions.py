"""The permission matrix: every endpoint and method, for every kind of caller.

Anonymous callers get 401, non-staff and staff without the model permission 403, staff
with view permissions can read and not write, superusers can do everything the endpoint
offers (405 for what it does not). Reads need `view_<model>`: DRF's own
DjangoModelPermissions would let any staff member read.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from jobcenter.models import SyncRun
from tests.api_support import (
    CLIENT_ID,
    CLIENT_SECRET,
    ROLES,
    api_account,
    api_team,
    grant,
    make_user,
    seed_history,
    token_client,
)

pytestmark = pytest.mark.django_db

V1 = "/api/v1"

# (method, path template, body, superuser status, viewer may do it)
ENDPOINTS: list[tuple[str, str, Any, int, bool]] = [
    ("get", "/jobs/", None, 200, True),
    ("get", "/jobs/{job}/", None, 200, True),
    ("delete", "/jobs/{job}/", None, 405, False),
    ("post", "/jobs/track/", "track", 201, False),
    ("get", "/jobs/{job}/snapshots/", None, 200, True),
    ("get", "/jobs/{job}/errors/", None, 200, True),
    ("get", "/snapshots/", None, 200, True),
    ("get", "/snapshots/{snapshot}/", None, 200, True),
    ("get", "/errors/", None, 200, True),
    ("get", "/errors/{error}/", None, 200, True),
    ("get", "/accounts/", None, 200, True),
    ("get", "/accounts/{account}/", None, 200, True),
    ("post", "/accounts/", "account", 201, False),
    ("patch", "/accounts/{account}/", {"enabled": False}, 200, False),
    ("put", "/accounts/{account}/", {"enabled": False}, 405, False),
    ("delete", "/accounts/{account}/", None, 405, False),
    ("post", "/accounts/{account}/sync/", None, 202, False),
    ("post", "/accounts/{account}/test/", None, 200, False),
    ("get", "/sync-runs/", None, 200, True),
    ("get", "/sync-runs/{run}/", None, 200, True),
    ("post", "/sync-runs/", {}, 405, False),
]


def expected_status(role: str, superuser_status: int, viewer_may: bool) -> int:
    if role == "anonymous":
        return 401
    if role in ("nonstaff", "staff"):
        return 403
    if role == "viewer":
        return superuser_status if viewer_may else 403
    return superuser_status


@pytest.fixture
def rows() -> dict[str, Any]:
    account = api_account()
    seeded = seed_history(account)
    return {
        "account": account.pk,
        "job": seeded["jobs"][1].pk,
        "snapshot": seeded["snapshots"][0].pk,
        "error": seeded["errors"][0].pk,
        "run": seeded["run"].pk,
    }


@pytest.fixture(autouse=True)
def no_provider_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sync and test are about permissions here; their real work is tested elsewhere."""
    monkeypatch.setattr("jobcenter.api.views.enqueue_sync", lambda account_id, trigger: "t-1")
    monkeypatch.setattr("jobcenter.api.views.check_connection", lambda account: (True, "fine"))


@pytest.fixture(autouse=True)
def fresh_throttles() -> None:
    from django.core.cache import cache

    cache.clear()


def body_for(kind: Any, rows: dict[str, Any]) -> Any:
    if kind == "track":
        return {"account": str(rows["account"]), "kind": "product-import", "external_id": "n-1"}
    if kind == "account":
        return {
            "name": "Second EP",
            "provider": "elasticpath",
            "team": api_team().pk,  # staff add accounts to one of their teams
            "credentials": {"client_id": "id-0000000001", "client_secret": "secret-000000001"},
        }
    return kind


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    ("method", "template", "body", "superuser_status", "viewer_may"),
    ENDPOINTS,
    ids=[f"{m.upper()} {t}" for m, t, *_ in ENDPOINTS],
)
def test_permission_matrix(
    rows: dict[str, Any],
    role: str,
    method: str,
    template: str,
    body: Any,
    superuser_status: int,
    viewer_may: bool,
) -> None:
    client = token_client(make_user(role))
    response = getattr(client, method)(
        V1 + template.format(**rows), body_for(body, rows), format="json"
    )
    assert response.status_code == expected_status(role, superuser_status, viewer_may), (
        response.content[:300]
    )


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/"])
def test_schema_and_docs_are_for_staff(role: str, path: str) -> None:
    response = token_client(make_user(role)).get(path)
    expected = {"anonymous": 401, "nonstaff": 403}.get(role, 200)
    assert response.status_code == expected


@pytest.mark.parametrize(
    ("method", "template", "body", "codename"),
    [
        ("get", "/jobs/", None, "view_job"),
        ("get", "/jobs/{job}/snapshots/", None, "view_jobsnapshot"),
        ("get", "/errors/", None, "view_joberror"),
        ("post", "/jobs/track/", "track", "change_job"),
        ("post", "/accounts/", "account", "add_provideraccount"),
        ("patch", "/accounts/{account}/", {"enabled": False}, "change_provideraccount"),
        ("post", "/accounts/{account}/sync/", None, "change_provideraccount"),
        ("post", "/accounts/{account}/test/", None, "change_provideraccount"),
        ("get", "/sync-runs/", None, "view_syncrun"),
    ],
)
def test_each_endpoint_needs_exactly_its_permission(
    rows: dict[str, Any], method: str, template: str, body: Any, codename: str
) -> None:
    """Staff with only this one permission may call it; without it they may not."""
    staff = make_user("staff")
    path = V1 + template.format(**rows)
    denied = getattr(token_client(staff), method)(path, body_for(body, rows), format="json")
    assert denied.status_code == 403
    allowed_user = grant(staff, codename)
    allowed = getattr(token_client(allowed_user), method)(path, body_for(body, rows), format="json")
    assert allowed.status_code in (200, 201, 202), allowed.content[:300]


def test_view_permission_on_accounts_does_not_allow_sync(rows: dict[str, Any]) -> None:
    viewer = grant(make_user("staff"), "view_provideraccount")
    client = token_client(viewer)
    assert client.get(f"{V1}/accounts/{rows['account']}/").status_code == 200
    assert client.post(f"{V1}/accounts/{rows['account']}/sync/").status_code == 403
    assert not SyncRun.objects.filter(trigger="api").exists()


def test_session_auth_requires_the_csrf_token(rows: dict[str, Any]) -> None:
    user = make_user("superuser")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    # Reads need no token.
    assert client.get(f"{V1}/jobs/").status_code == 200
    path = f"{V1}/jobs/track/"
    body = body_for("track", rows)
    refused = client.post(path, body, content_type="application/json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    client.get("/api/auth/login/")  # a form page: sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    accepted = client.post(path, body, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 201


def test_anonymous_is_told_to_send_a_token() -> None:
    response = token_client(None).get(f"{V1}/jobs/")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Token"


def test_inactive_user_token_is_refused(rows: dict[str, Any]) -> None:
    user = make_user("superuser")
    client = token_client(user)
    user.is_active = False
    user.save()
    assert client.get(f"{V1}/jobs/").status_code == 401


@pytest.mark.parametrize(
    "template",
    [
        "/jobs/",
        "/jobs/{job}/",
        "/jobs/{job}/snapshots/",
        "/accounts/",
        "/accounts/{account}/",
        "/sync-runs/",
        "/errors/",
        "/nothing-here/",
    ],
)
def test_browsable_api_pages_render_for_staff(rows: dict[str, Any], template: str) -> None:
    """Staff browse the API in a logged-in browser session (HTML, with forms)."""
    client = Client()
    client.force_login(make_user("superuser"))
    response = client.get(V1 + template.format(**rows), HTTP_ACCEPT="text/html")
    expected = 404 if "nothing" in template else 200
    assert response.status_code == expected
    if expected == 200:
        assert "text/html" in response["Content-Type"]
        for secret in (CLIENT_ID, CLIENT_SECRET):
            assert secret not in response.content.decode()
