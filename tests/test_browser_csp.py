"""The Content-Security-Policy in a real browser: every page staff use still works under it.

A superuser logs in and opens the dashboard, a job list, a job page, an account page, an
alert rule form, a change list without actions, Swagger UI and the browsable API, in
Chromium (`browser` of tests/browser_support.py). Every answer must carry the policy,
the browser must report no violation (neither a `securitypolicyviolation` event nor a
console message), and each page's scripts must have done their work: the time zone
cookie, the admin's widgets, Swagger UI's operations, the browsable API's filter dialog.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User

from jobcenter.models import SyncRun
from tests.admin_support import World, synced_world
from tests.browser_support import PASSWORD, STAFF_ZONE

# What every page's policy must say at least (settings.CONTENT_SECURITY_POLICY).
REQUIRED = {
    "default-src": {"'self'"},
    "script-src": {"'self'"},
    "style-src": {"'self'"},
    "img-src": {"'self'", "data:"},
    "object-src": {"'none'"},
    "base-uri": {"'self'"},
    "frame-ancestors": {"'none'"},
    "form-action": {"'self'"},
}
# Sources that would let an injected script or page run: never allowed.
FORBIDDEN = {"'unsafe-inline'", "'unsafe-eval'", "*", "http:", "https:"}

# Runs in every page before its own scripts (Playwright injects it past the policy) and
# hands each violation the browser reports to the test.
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.reportViolation(
    `${location.pathname}${location.search}: ` +
    `${event.violatedDirective} refused ${event.blockedURI || "inline"} ` +
    `at ${event.sourceFile}:${event.lineNumber} (${event.sample}) ` +
    `in ${(event.target.outerHTML || "document").slice(0, 160)}`
  );
});
"""


def parse_policy(header: str) -> dict[str, list[str]]:
    """A Content-Security-Policy header as {directive: [sources]}."""
    parts = (directive.split() for directive in header.split(";") if directive.strip())
    return {name: sources for name, *sources in parts}


@dataclass
class Tab:
    """A browser tab and everything the browser reported about the policy so far."""

    page: Any
    world: World
    violations: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    policies: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def visit(self, path: str) -> dict[str, list[str]]:
        """Open `path`; its policy, checked against REQUIRED and FORBIDDEN."""
        response = self.page.goto(path)
        assert response.ok, f"{path}: HTTP {response.status}"
        header = response.headers.get("content-security-policy")
        assert header, f"{path} has no Content-Security-Policy"
        policy = parse_policy(header)
        for directive, sources in REQUIRED.items():
            assert sources <= set(policy.get(directive, [])), (path, directive, header)
        for directive in ("default-src", "script-src", "style-src"):
            assert not FORBIDDEN & set(policy[directive]), (path, directive, header)
        self.policies[path] = policy
        return policy


@pytest.fixture
def tab(browser: Any, live_server: Any, sandbox: Any) -> Iterator[Tab]:
    """A logged-out tab in New York time over a synced world, listening for violations."""
    world = synced_world(sandbox)
    User.objects.create_superuser("staff", "staff@example.com", PASSWORD)
    context = browser.new_context(
        base_url=live_server.url, timezone_id=STAFF_ZONE, viewport={"width": 1440, "height": 900}
    )
    context.set_default_timeout(15_000)
    state = Tab(page=None, world=world)
    context.expose_binding("reportViolation", lambda source, text: state.violations.append(text))
    context.add_init_script(REPORT_VIOLATIONS)
    state.page = context.new_page()
    state.page.on(
        "console", lambda message: state.console.append(f"{message.type}: {message.text}")
    )
    state.page.on(
        "pageerror",
        lambda error: state.console.append(f"pageerror: {state.page.url}: {error.stack}"),
    )
    try:
        yield state
    finally:
        context.close()


def test_every_page_staff_use_works_under_the_content_security_policy(
    tab: Tab, monkeypatch: pytest.MonkeyPatch
) -> None:
    page, world = tab.page, tab.world

    tab.visit("/admin/login/")
    page.get_by_label("Username").fill("staff")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin/")
    # timezone.js ran on the login page: the dashboard is in the browser's zone.
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    assert cookies.get("jobcenter_tz") == "America%2FNew_York"

    dashboard = tab.visit("/admin/")
    assert "style-src-attr" not in dashboard  # the admin needs no style attributes
    assert page.get_by_role(
        "img", name="Jobs created and failed per day, last 30 days"
    ).is_visible()
    assert f"Times are shown in {STAFF_ZONE}" in page.locator("#footer").inner_text()

    tab.visit("/admin/jobcenter/job/?provider=klaviyo")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() > 1
    page.locator("#action-toggle").check()  # the admin's actions.js selects every row
    assert page.locator(".action-counter").inner_text().startswith(f"{rows.count()} of")

    tab.visit(f"/admin/jobcenter/job/{world.failed_job.pk}/change/")
    assert page.locator("#jc-timeline tbody tr").count() >= 2
    assert page.locator(".field-created time").inner_text().endswith(("EST", "EDT"))

    tab.visit(f"/admin/jobcenter/provideraccount/{world.klaviyo.pk}/change/")
    assert page.get_by_role("button", name="Sync now").is_visible()

    tab.visit("/admin/jobcenter/alertrule/add/")
    # SelectFilter2.js turned the accounts' <select multiple> into its two-box chooser.
    assert page.locator("#id_accounts_from").is_visible()
    assert page.locator("#id_accounts_to").is_visible()

    # A change list without actions: Django's admin writes its one inline <style> there.
    runs_admin = admin.site._registry[SyncRun]
    for option in ("actions", "actions_on_top", "actions_on_bottom"):
        monkeypatch.setattr(runs_admin, option, None)
    tab.visit("/admin/jobcenter/syncrun/")
    assert "th:first-child {width: inherit}" in page.content()
    assert page.locator("#result_list tbody tr").count() > 0

    tab.visit("/api/docs/")
    # Swagger UI (sidecar files, start-up script from ?script) drew the operations.
    operation = page.locator(".opblock-summary-path", has_text="/api/v1/jobs/").first
    operation.wait_for(state="visible")
    page.locator(".opblock-summary-path").first.click()
    page.get_by_role("button", name="Try it out").first.wait_for(state="visible")

    api = tab.visit("/api/v1/jobs/?provider=klaviyo")
    assert api["style-src-attr"] == ["'unsafe-inline'"]  # DRF's pages only
    assert '"results"' in page.locator(".response-info").inner_text()
    page.get_by_role("button", name="Filters").click()  # jQuery and Bootstrap's modal
    page.locator("#filtersModal").wait_for(state="visible")
    tab.visit(f"/api/v1/accounts/{world.klaviyo.pk}/")
    assert page.locator(".response-info").is_visible()
    page.get_by_role("link", name="staff").click()  # log out, without an inline onclick
    page.get_by_role("button", name="Log out").click()
    page.get_by_role("link", name="Log in").wait_for(state="visible")
    tab.visit("/api/auth/login/")
    assert page.get_by_label("Username").is_visible()

    assert not tab.violations, "\n".join(tab.violations)
    # Refusals the browser only logs, and scripts that broke (a refused script's dependants
    # fail); answers like the favicon's 404 or the logged-out API's 401 are no fault.
    broken = [
        message
        for message in tab.console
        if "Content Security Policy" in message
        or (message.startswith(("error", "pageerror")) and "Failed to load resource" not in message)
    ]
    assert not broken, "\n".join(broken)


def test_a_report_uri_is_added_when_set() -> None:
    """JOBCENTER_CSP_REPORT_URI adds `report-uri` (read at start-up: a fresh process)."""
    from django.conf import settings

    assert "report-uri" not in settings.CONTENT_SECURITY_POLICY["DIRECTIVES"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "jobcenter.test_settings",
        "JOBCENTER_CSP_REPORT_URI": "https://csp.example.com/report",
    }
    printed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from django.conf import settings; "
            "print(settings.CONTENT_SECURITY_POLICY['DIRECTIVES']['report-uri'])",
        ],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert printed.stdout.strip() == "['https://csp.example.com/report']"
