"""Live pages in a real browser: Chromium (tests/browser_support.py) on a live server,
the jobs moved by the sandbox's clock and synced by the real sync engine.

A running Klaviyo job's page is open; the sandbox finishes the job; the sync records it;
the page shows the new status, timeline and errors without a reload (a value the test
left in the page's window is still there). The same on the job list, where a new job
appears, rows ticked for an action hold the list until they are unticked, and the
admin's action checkboxes still work after an update. Pause (from the keyboard) stops
the polling; Resume catches up. No Content-Security-Policy violation, no script error,
and axe-core finds nothing on the live pages with their marker (axe runs last: it adds
a <style> of its own, which the policy refuses).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from jobcenter.models import Job, ProviderAccount
from jobcenter.sync.engine import sync_account
from providers.sandbox.client import SandboxClient
from tests.browser_support import STAFF_ZONE
from tests.factories import sandbox_account
from tests.test_browser_admin import axe_violations, screenshot
from tests.test_browser_csp import REPORT_VIOLATIONS

KIND = "catalog-item-bulk-create-job"
WAIT_MS = 20_000  # what the page may take to show a change the database holds
MARKER = "window.__jcNotReloaded"


@dataclass
class LiveTab:
    """A logged-in superuser's tab over one Klaviyo sandbox account, and what the browser
    reported: policy violations, script errors, the live endpoints it asked."""

    page: Any
    sandbox: SandboxClient
    account: ProviderAccount
    sandbox_id: str
    violations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    polls: list[str] = field(default_factory=list)

    def create_job(self, outcome: str = "fail", processing: float = 60) -> Job:
        """A job queued for 5 s then processing for `processing` s (sandbox time), synced."""
        (external_id,) = self.sandbox.control(
            self.sandbox_id,
            "create_jobs",
            kind=KIND,
            count=1,
            outcome=outcome,
            total_count=4,
            processing_seconds=processing,
        )["ids"]
        self.sync()
        return Job.objects.get(account=self.account, external_id=external_id)

    def advance(self, seconds: float) -> None:
        """Move the account's sandbox clock, then sync as the worker would."""
        self.sandbox.clock(self.sandbox_id, advance=seconds)
        self.sync()

    def sync(self) -> None:
        assert sync_account(self.account.pk).outcome == "succeeded"

    def arm(self) -> None:
        """Leave a value in the window: a reload would lose it."""
        self.page.locator('.jc-live[data-live-state="live"]').wait_for()
        self.page.evaluate(f"{MARKER} = 1")

    def not_reloaded(self) -> bool:
        return self.page.evaluate(f"{MARKER} === 1")

    def clean(self) -> None:
        assert not self.violations, "\n".join(self.violations)
        assert not self.errors, "\n".join(self.errors)


@pytest.fixture
def live_tab(browser: Any, live_server: Any, sandbox: SandboxClient) -> Iterator[LiveTab]:
    account, described = sandbox_account(sandbox, "klaviyo", name="Klaviyo live", jobs_per_kind=0)
    # Logged in by its session cookie: tests/test_browser_admin.py covers the login form.
    client = Client()
    client.force_login(User.objects.create_superuser("staff", "staff@example.com", "unused"))
    context = browser.new_context(
        base_url=live_server.url, timezone_id=STAFF_ZONE, viewport={"width": 1440, "height": 900}
    )
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}]
    )
    context.set_default_timeout(15_000)
    tab = LiveTab(page=None, sandbox=sandbox, account=account, sandbox_id=described["id"])
    context.expose_binding("reportViolation", lambda source, text: tab.violations.append(text))
    context.add_init_script(REPORT_VIOLATIONS)
    page = context.new_page()
    page.on("pageerror", lambda error: tab.errors.append(f"{page.url}: {error.stack}"))
    page.on(
        "console",
        lambda message: (
            tab.errors.append(message.text)
            if message.type == "error" and "Failed to load resource" not in message.text
            else None
        ),
    )
    page.on(
        "request",
        lambda request: tab.polls.append(request.url) if "/live/" in request.url else None,
    )
    tab.page = page
    try:
        yield tab
    finally:
        context.close()


def test_a_running_jobs_page_shows_it_ended_without_a_reload(live_tab: LiveTab) -> None:
    tab, page = live_tab, live_tab.page
    job = tab.create_job()
    tab.advance(30)  # processing
    job.refresh_from_db()
    assert job.status == "running"
    page.goto(f"/admin/jobcenter/job/{job.pk}/change/")
    status = page.locator(".field-status_badge .readonly")
    assert "running" in status.inner_text()
    assert page.locator("#jc-errors tbody tr").count() == 0
    timeline = page.locator("#jc-timeline tbody tr")
    entries = timeline.count()
    tab.arm()

    tab.advance(120)  # the sandbox finishes the job (every record failed); the sync sees it
    job.refresh_from_db()
    assert job.status == "failed" and job.error_count > 0
    status.filter(has_text="failed").wait_for(timeout=WAIT_MS)
    assert tab.not_reloaded()
    # Progress, times, timeline and errors came with it.
    assert page.locator(".field-completed time").count() == 1
    assert timeline.count() == entries + 1
    assert "status running → failed" in timeline.last.inner_text()
    page.locator("#jc-errors tbody tr").first.wait_for()
    assert page.locator("#jc-errors tbody tr").count() == job.error_count
    assert page.locator(".jc-live-state").inner_text() == "Live"
    screenshot(page, "live-job-page")
    tab.clean()
    assert axe_violations(page) == []  # last: axe's own <style> is refused by the policy


def test_pause_stops_polling_and_resume_catches_up_from_the_keyboard(live_tab: LiveTab) -> None:
    tab, page = live_tab, live_tab.page
    job = tab.create_job(outcome="succeed")
    tab.advance(30)
    page.goto(f"/admin/jobcenter/job/{job.pk}/change/")
    tab.arm()
    pause = page.get_by_role("button", name="Pause")
    pause.focus()
    page.keyboard.press("Enter")
    resume = page.get_by_role("button", name="Resume")
    resume.wait_for()
    assert page.locator(".jc-live-state").inner_text() == "Paused"
    asked = len(tab.polls)

    tab.advance(120)  # the job ends while the page is paused
    interval_ms = int(page.locator(".jc-live").get_attribute("data-live-seconds")) * 1000
    page.wait_for_timeout(3 * interval_ms)  # three polls' worth of time: none is made
    assert len(tab.polls) == asked
    assert "running" in page.locator(".field-status_badge .readonly").inner_text()

    resume.focus()
    page.keyboard.press("Space")
    page.get_by_role("button", name="Pause").wait_for()
    page.locator(".field-status_badge .readonly").filter(has_text="succeeded").wait_for(
        timeout=WAIT_MS
    )
    assert tab.not_reloaded()
    tab.clean()


def test_the_job_list_adds_and_updates_rows_and_holds_ticked_rows(live_tab: LiveTab) -> None:
    tab, page = live_tab, live_tab.page
    first = tab.create_job()
    tab.advance(30)
    page.goto("/admin/jobcenter/job/")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    tab.arm()

    # A new job appears and the first one ends, in one sync.
    second = tab.create_job(outcome="succeed", processing=600)
    page.locator("#result_list tbody tr", has_text=second.external_id).wait_for(timeout=WAIT_MS)
    tab.advance(120)
    first_row = page.locator("#result_list tbody tr", has_text=first.external_id)
    first_row.locator(".field-status_badge", has_text="failed").wait_for(timeout=WAIT_MS)
    assert rows.count() == 2
    assert tab.not_reloaded()

    # Django's actions.js works on the new rows: ticking one counts it.
    first_row.locator("input.action-select").check()
    assert page.locator(".action-counter").inner_text().startswith("1 of 2")
    # A ticked row holds the list: the second job ends, the list waits.
    second_row = page.locator("#result_list tbody tr", has_text=second.external_id)
    assert "running" in second_row.inner_text()
    tab.advance(600)
    page.locator('.jc-live[data-live-state="held"]').wait_for(timeout=WAIT_MS)
    assert "running" in second_row.inner_text()
    assert first_row.locator("input.action-select").is_checked()
    first_row.locator("input.action-select").uncheck()
    second_row.locator(".field-status_badge", has_text="succeeded").wait_for(timeout=WAIT_MS)
    page.locator('.jc-live[data-live-state="live"]').wait_for()
    assert tab.not_reloaded()
    # And again after that update: select all, then the counter says so.
    page.locator("#action-toggle").check()
    assert page.locator(".action-counter").inner_text().startswith("2 of 2")
    screenshot(page, "live-job-list")
    tab.clean()
    assert axe_violations(page) == []


def test_the_account_list_and_dashboard_follow_a_sync(live_tab: LiveTab) -> None:
    tab, page = live_tab, live_tab.page
    job = tab.create_job()
    page.goto("/admin/jobcenter/provideraccount/")
    last_sync = page.locator("#result_list tbody tr .field-last_sync time")
    before = last_sync.get_attribute("datetime")
    tab.arm()
    tab.advance(30)  # a sync run ends: the account's last sync moves
    page.wait_for_function(
        "before => document.querySelector('#result_list tbody tr .field-last_sync time')"
        ".getAttribute('datetime') !== before",
        arg=before,
        timeout=WAIT_MS,
    )
    assert tab.not_reloaded()
    tab.clean()
    assert axe_violations(page) == []
    tab.violations.clear()  # axe's own <style>, refused by the policy

    page.goto("/admin/")
    assert page.get_by_label("1 running Klaviyo jobs").is_visible()
    tab.arm()
    tab.advance(120)  # the job ends failed: the dashboard counts it there
    page.get_by_label("1 failed Klaviyo jobs").wait_for(timeout=WAIT_MS)
    assert page.get_by_label("1 running Klaviyo jobs").count() == 0
    job.refresh_from_db()
    assert job.status == "failed"
    assert tab.not_reloaded()
    tab.clean()
