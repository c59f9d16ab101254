"""Sign-in with OpenID Connect against a real provider (npm `oidc-provider`, tests/oidc/).

Every flow is the real authorization-code flow over HTTP: Job Center's login page, the
provider's login form, the token and userinfo requests Job Center makes, the callback.
Covered: sign-in, groups mapped to staff, superuser, teams and permission groups (and
removed when removed at the provider), a refused domain, a refused unverified email,
log out (ending the provider's session too), an expired sign-in, and password login
turned off but for a break-glass superuser. One test walks it in Chromium under the CSP.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.sessions.backends.db import SessionStore
from django.core.cache import cache

from jobcenter.models import Team
from jobcenter.models.audit import AuditRecord
from jobcenter.oidc.backends import PASSWORD_LOGIN_OFF
from jobcenter.oidc.views import EXPIRED
from tests.oidc_support import (
    CLIENT_ID,
    CLIENT_SECRET,
    OIDC_PROVIDER_VERSION,
    USERS,
    Browserless,
    IdentityProvider,
    messages_of,
    start_provider,
)
from tests.processes import ROOT, stop
from tests.test_browser_csp import REPORT_VIOLATIONS

User = get_user_model()
GROUP_MAP = {
    "jc-admins": ["superuser"],
    "jc-ops": ["team:Operations", "group:Operators"],
    "jc-europe": ["team:Europe"],
}


@pytest.fixture(scope="session")
def identity_provider(live_server: Any) -> Iterator[IdentityProvider]:
    provider = start_provider(live_server.url)
    try:
        yield provider
    finally:
        stop(provider.process)


@pytest.fixture
def oidc(settings: Any, identity_provider: IdentityProvider, live_server: Any) -> IdentityProvider:
    """Job Center configured for the provider, with the teams and groups the map names."""
    settings.JOBCENTER_OIDC_ISSUER = identity_provider.issuer
    settings.OIDC_RP_CLIENT_ID = CLIENT_ID
    settings.OIDC_RP_CLIENT_SECRET = CLIENT_SECRET
    settings.OIDC_RP_SCOPES = "openid email profile groups"
    settings.JOBCENTER_OIDC_ALLOWED_DOMAINS = ["example.com"]
    settings.JOBCENTER_OIDC_GROUP_MAP = GROUP_MAP
    for name in ("Operations", "Europe", "Partners"):
        Team.objects.create(name=name)
    operators = Group.objects.create(name="Operators")
    operators.permissions.add(Permission.objects.get(codename="view_job"))
    identity_provider.reset_users()
    cache.clear()  # the login lockout's counts (refused sign-ins count per address)
    return identity_provider


def teams_of(user: Any) -> set[str]:
    return set(user.jobcenter_teams.values_list("name", flat=True))


def signed_in(visitor: Browserless) -> bool:
    """Whether the visitor's session opens the dashboard (not the login page)."""
    answer = visitor.get("/admin/")
    return answer.status_code == 200 and "/admin/login/" not in answer.url


def expire_sign_in(visitor: Browserless) -> None:
    """Make the visitor's sign-in older than JOBCENTER_OIDC_RECHECK_SECONDS."""
    session = SessionStore(visitor.http.cookies.get("sessionid"))
    session["oidc_id_token_expiration"] = 0
    session.save()


def test_the_login_page_offers_the_provider_only_when_configured(
    settings: Any, live_server: Any
) -> None:
    visitor = Browserless(live_server.url)
    assert 'id="oidc-sign-in"' not in visitor.get("/admin/login/").text
    assert visitor.get("/oidc/authenticate/").status_code == 404
    settings.JOBCENTER_OIDC_ISSUER = "https://idp.example.com"
    settings.JOBCENTER_OIDC_BUTTON_LABEL = "Sign in with Example SSO"
    page = visitor.get("/admin/login/?next=/admin/jobcenter/job/")
    assert 'href="/oidc/authenticate/?next=%2Fadmin%2Fjobcenter%2Fjob%2F"' in page.text
    assert "Sign in with Example SSO" in page.text
    assert 'id="login-form"' in page.text  # passwords still offered


def test_sign_in_maps_groups_to_staff_superuser_teams_and_permission_groups(
    oidc: IdentityProvider, live_server: Any
) -> None:
    visitor = Browserless(live_server.url)
    landed = visitor.sign_in("olga", next_path="/admin/jobcenter/job/")
    assert landed.status_code == 200
    assert landed.url == f"{live_server.url}/admin/jobcenter/job/"
    olga = User.objects.get(email="olga@example.com")
    assert olga.username == "olga@example.com"
    assert (olga.is_staff, olga.is_superuser, olga.has_usable_password()) == (True, False, False)
    assert teams_of(olga) == {"Operations", "Europe"}
    assert set(olga.groups.values_list("name", flat=True)) == {"Operators"}
    sign_in = AuditRecord.objects.filter(object_id=str(olga.pk), changes__has_key="sign_in")
    assert [r.changes["sign_in"] for r in sign_in] == [
        {"via": "OpenID Connect", "groups": ["jc-europe", "jc-ops"]}
    ]
    memberships = AuditRecord.objects.filter(model="jobcenter.teammembership", action="create")
    assert {r.actor for r in memberships} == {"oidc:olga@example.com"}
    assert memberships.count() == 2

    admin = Browserless(live_server.url)
    assert admin.sign_in("ada").url == f"{live_server.url}/admin/"
    ada = User.objects.get(email="ada@example.com")
    assert (ada.is_staff, ada.is_superuser) == (True, True)


def test_groups_removed_at_the_provider_are_removed_at_the_next_sign_in(
    oidc: IdentityProvider, live_server: Any
) -> None:
    assert signed_in_after(Browserless(live_server.url), "olga")
    olga = User.objects.get(email="olga@example.com")
    olga.team_memberships.create(team=Team.objects.get(name="Partners"))  # by hand

    claims = {"email": "olga@example.com", "email_verified": True, "groups": ["jc-ops"]}
    oidc.set_claims("olga", **claims)
    assert signed_in_after(Browserless(live_server.url), "olga")
    assert teams_of(olga) == {"Operations", "Partners"}  # a team the map names nothing of

    oidc.set_claims("olga", **{**claims, "groups": ["marketing"]})
    visitor = Browserless(live_server.url)
    refused = visitor.sign_in("olga")
    assert refused.url.startswith(f"{live_server.url}/admin/login/")
    assert any("in no group" in text for text in messages_of(refused))
    assert not signed_in(visitor)
    olga.refresh_from_db()
    assert (olga.is_staff, teams_of(olga), olga.groups.count()) == (False, {"Partners"}, 0)
    removed = AuditRecord.objects.filter(model="jobcenter.teammembership", action="delete")
    assert sorted(r.changes["team"]["old"] for r in removed) == sorted(
        [Team.objects.get(name="Europe").pk, Team.objects.get(name="Operations").pk]
    )


def signed_in_after(visitor: Browserless, login: str) -> bool:
    visitor.sign_in(login)
    return signed_in(visitor)


def test_an_email_outside_the_allowed_domains_is_refused(
    oidc: IdentityProvider, live_server: Any
) -> None:
    visitor = Browserless(live_server.url)
    refused = visitor.sign_in("eve")
    assert refused.url.startswith(f"{live_server.url}/admin/login/")
    assert messages_of(refused) == [
        "The address eve@elsewhere.test is not in a domain allowed to sign in here."
    ]
    assert not signed_in(visitor)
    assert not User.objects.filter(email="eve@elsewhere.test").exists()


def test_an_unverified_email_is_refused(oidc: IdentityProvider, live_server: Any) -> None:
    visitor = Browserless(live_server.url)
    refused = visitor.sign_in("uma")
    assert messages_of(refused) == [
        "The address uma@example.com is not verified at the identity provider."
    ]
    assert not signed_in(visitor)
    assert not User.objects.filter(email="uma@example.com").exists()


def test_log_out_ends_the_session_here_and_at_the_provider(
    oidc: IdentityProvider, live_server: Any
) -> None:
    visitor = Browserless(live_server.url)
    assert signed_in_after(visitor, "olga")
    confirm = visitor.csrf_post("/admin/logout/")
    assert confirm.url.startswith(f"{oidc.issuer}/session/end")
    assert not signed_in(visitor)  # already signed out here
    back = visitor.submit_form(confirm, logout="yes")
    assert back.url == f"{live_server.url}/admin/login/"
    # The provider asks for the password again: its session ended too.
    again = visitor.get("/oidc/authenticate/")
    assert again.url.startswith(f"{oidc.issuer}/interaction/")
    assert 'name="password"' in again.text


def test_an_expired_sign_in_is_checked_with_the_provider_again(
    oidc: IdentityProvider, live_server: Any
) -> None:
    visitor = Browserless(live_server.url)
    assert signed_in_after(visitor, "olga")
    olga = User.objects.get(email="olga@example.com")
    assert teams_of(olga) == {"Operations", "Europe"}

    # Still signed in at the provider: back without a prompt, its groups mapped again.
    oidc.set_claims("olga", email="olga@example.com", email_verified=True, groups=["jc-ops"])
    expire_sign_in(visitor)
    page = visitor.get("/admin/jobcenter/job/")
    assert [r.url.split("?")[0] for r in page.history] == [
        f"{live_server.url}/admin/jobcenter/job/",
        f"{oidc.issuer}/auth",
        f"{live_server.url}/oidc/callback/",
    ]
    assert (page.status_code, page.url) == (200, f"{live_server.url}/admin/jobcenter/job/")
    assert teams_of(olga) == {"Operations"}

    # Signed out at the provider: signed out here, told why.
    oidc.end_sessions()
    expire_sign_in(visitor)
    page = visitor.get("/admin/")
    assert page.url.startswith(f"{live_server.url}/admin/login/")
    assert messages_of(page) == [EXPIRED]
    assert not signed_in(visitor)


def test_password_login_can_be_turned_off_but_for_a_break_glass_superuser(
    oidc: IdentityProvider, live_server: Any, settings: Any
) -> None:
    settings.JOBCENTER_PASSWORD_LOGIN = False
    settings.JOBCENTER_BREAK_GLASS_USERS = ["root"]
    User.objects.create_user("bob", "bob@example.com", "bob-password-123", is_staff=True)
    User.objects.create_superuser("root", "root@example.com", "root-password-123")

    visitor = Browserless(live_server.url)
    page = visitor.get("/admin/login/")
    assert "Password sign-in is for the break-glass account only." in page.text
    refused = visitor.csrf_post(
        "/admin/login/", {"username": "bob", "password": "bob-password-123", "next": "/admin/"}
    )
    assert PASSWORD_LOGIN_OFF in messages_of(refused)
    assert not signed_in(visitor)

    glass = Browserless(live_server.url)
    glass.get("/admin/login/")
    answer = glass.csrf_post(
        "/admin/login/", {"username": "root", "password": "root-password-123", "next": "/admin/"}
    )
    assert answer.url == f"{live_server.url}/admin/"
    assert signed_in(glass)

    # Refused tries count for the lockout like wrong passwords.
    for _ in range(settings.AXES_FAILURE_LIMIT):
        last = visitor.csrf_post("/admin/login/", {"username": "bob", "password": "x"})
    assert last.status_code == 429
    # An identity-provider sign-in still works for the staff it maps.
    cache.clear()
    assert signed_in_after(Browserless(live_server.url), "olga")


def test_make_test_installs_the_provider_version_the_tests_pin() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert f"OIDC_PROVIDER_VERSION := {OIDC_PROVIDER_VERSION}\n" in makefile


def test_a_browser_signs_in_and_out_under_the_content_security_policy(
    oidc: IdentityProvider, live_server: Any, browser: Any
) -> None:
    """Chromium clicks the button, signs in at the provider, lands on the dashboard and
    logs out (a form post redirected to the provider: CSP's form-action allows it)."""
    violations: list[str] = []
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(15_000)
    context.expose_binding("reportViolation", lambda source, text: violations.append(text))
    context.add_init_script(REPORT_VIOLATIONS)
    page = context.new_page()
    try:
        page.goto("/admin/login/")
        page.click("#oidc-sign-in")
        page.fill("#login", "ada")
        page.fill("#password", USERS["ada"]["password"])
        page.click("button[type=submit]")
        page.wait_for_url(f"{live_server.url}/admin/")
        assert page.locator("#user-tools").is_visible()
        page.click("#logout-form button")
        page.wait_for_url(f"{oidc.issuer}/session/end**")
        page.click("button[name=logout]")
        page.wait_for_url(f"{live_server.url}/admin/login/")
        assert page.locator("#oidc-sign-in").is_visible()
    finally:
        context.close()
    assert not violations, "\n".join(violations)
