"""The admin in a real browser: Playwright driving Debian's Chromium against a live server.

A staff member logs in, filters the job list to failed Klaviyo jobs, opens one, reads its
timeline and errors, exports its history, and runs "sync now" on an account. Each page is
checked with axe-core (labels, contrast, alternatives for charts), and screenshots of the
dashboard, the job list and a job page land in tests/artifacts/ (git-ignored).

`make test` installs Chromium (apt) and axe-core (npm, into .cache/node); when either is
missing here the fixtures try the same once, and skip with the reason only if they cannot.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from jobcenter.models import Job, JobError, SyncRun
from tests.admin_support import World, synced_world
from tests.browser_support import PASSWORD, STAFF_ZONE

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
NODE_CACHE = ROOT / ".cache" / "node"
AXE = NODE_CACHE / "node_modules" / "axe-core" / "axe.min.js"
AXE_VERSION = "4.14.1"


def ensure_axe() -> Path:
    """axe-core's browser build from npm, in a git-ignored cache (as `make test` does)."""
    if not AXE.exists() and shutil.which("npm"):
        subprocess.run(
            [
                "npm",
                "install",
                "--silent",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(NODE_CACHE),
                f"axe-core@{AXE_VERSION}",
            ],
            capture_output=True,
            timeout=300,
            check=False,
        )
    if not AXE.exists():
        pytest.skip(f"{AXE} is missing and npm could not install axe-core (run `make test`)")
    return AXE


@pytest.fixture
def staff_page(browser: Any, live_server: Any, sandbox: Any) -> Iterator[tuple[Any, World]]:
    """A logged-in staff member's tab (New York time, 1440 px wide) over a synced world."""
    world = synced_world(sandbox)
    User.objects.create_superuser("staff", "staff@example.com", PASSWORD)
    context = browser.new_context(
        base_url=live_server.url,
        timezone_id=STAFF_ZONE,
        viewport={"width": 1440, "height": 900},
        accept_downloads=True,
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto("/admin/login/")
    page.get_by_label("Username").fill("staff")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin/")
    try:
        yield page, world
    finally:
        context.close()


def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def axe_violations(page: Any) -> list[str]:
    """WCAG 2 A and AA violations axe-core finds on the page, one line each."""
    # Evaluated, not added as a <script> tag: the Content-Security-Policy refuses inline
    # scripts, and DevTools' evaluation is outside its reach.
    page.evaluate(ensure_axe().read_text(encoding="utf-8"))
    result = page.evaluate(
        """async () => await axe.run(document, {
            runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
            resultTypes: ["violations"],
        })"""
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} -> "
        + "; ".join(" ".join(n["target"]) for n in v["nodes"][:5])
        for v in result["violations"]
    ]


def test_staff_find_a_failed_klaviyo_job_read_it_and_export_its_history(
    staff_page: tuple[Any, World],
) -> None:
    page, world = staff_page
    page.goto("/admin/")
    assert page.get_by_role("heading", name="Jobs created and failed per day").is_visible()
    assert page.get_by_role(
        "img", name="Jobs created and failed per day, last 30 days"
    ).is_visible()
    assert f"Times are shown in {STAFF_ZONE}" in page.locator("#footer").inner_text()
    screenshot(page, "dashboard")

    page.get_by_role("link", name="Jobs", exact=True).first.click()
    page.wait_for_url("**/admin/jobcenter/job/")
    sidebar = page.locator("#changelist-filter")
    sidebar.locator('details[data-filter-title="provider"]').get_by_role(
        "link", name="Klaviyo", exact=True
    ).click()
    page.wait_for_url("**provider=klaviyo**")
    sidebar.locator('details[data-filter-title="status"]').get_by_role(
        "link", name="failed", exact=True
    ).click()
    page.wait_for_url("**status=failed**")
    rows = page.locator("#result_list tbody tr")
    expected = Job.objects.filter(provider="klaviyo", status="failed").count()
    assert rows.count() == expected > 0
    statuses = page.locator("#result_list tbody td.field-status_badge").all_inner_texts()
    assert all(text.startswith("✖ failed") for text in statuses), statuses
    providers = page.locator("#result_list tbody td.field-provider_account").all_inner_texts()
    assert all(text.splitlines() == ["Klaviyo main", "Klaviyo"] for text in providers), providers
    screenshot(page, "job-list")

    job = world.failed_job
    page.get_by_role("link", name=job.external_id, exact=True).click()
    page.wait_for_url(f"**/admin/jobcenter/job/{job.pk}/change/**")
    timeline = page.locator("#jc-timeline tbody tr")
    assert timeline.count() == job.snapshots.count() >= 2
    assert "first seen" in timeline.first.inner_text()
    errors = page.locator("#jc-errors tbody tr")
    assert errors.count() == min(25, JobError.objects.filter(job=job).count()) > 0
    first_error = JobError.objects.filter(job=job).order_by("position").first()
    assert first_error.message in errors.first.inner_text()
    created = page.locator(".field-created time")
    assert created.get_attribute("title").endswith(" UTC")
    assert created.inner_text().endswith(("EST", "EDT"))
    screenshot(page, "job-page")

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export history (CSV)").click()
    download = download_info.value
    assert download.suggested_filename.startswith("jobcenter-snapshots-job-")
    assert "-history-" in download.suggested_filename
    text = Path(download.path()).read_text(encoding="utf-8-sig")
    rows_out = list(csv.DictReader(io.StringIO(text)))  # the snapshot export's columns
    assert len(rows_out) == job.snapshots.count()
    assert {row["job_external_id"] for row in rows_out} == {job.external_id}


def test_sync_now_on_an_account_shows_the_new_sync_run(staff_page: tuple[Any, World]) -> None:
    page, world = staff_page
    account = world.klaviyo
    before = SyncRun.objects.filter(account=account).count()
    page.goto(f"/admin/jobcenter/provideraccount/{account.pk}/change/")
    runs = page.locator("#jc-runs tbody tr")
    assert runs.count() == before
    assert "••••" in page.locator(".field-masked_credentials").inner_text()
    page.get_by_role("button", name="Sync now").click()
    page.wait_for_load_state()
    assert "Sync queued for Klaviyo main" in page.locator(".messagelist").inner_text()
    assert runs.count() == before + 1
    newest = runs.first.inner_text()
    assert "Manual" in newest and "succeeded" in newest
    assert SyncRun.objects.filter(account=account, trigger="manual").count() == before + 1
    screenshot(page, "account-page")


def test_admin_pages_pass_the_accessibility_basics(staff_page: tuple[Any, World]) -> None:
    page, world = staff_page
    pages = {
        "dashboard": "/admin/",
        "job list": "/admin/jobcenter/job/?provider=klaviyo&status=failed",
        "job page": f"/admin/jobcenter/job/{world.failed_job.pk}/change/",
        "account page": f"/admin/jobcenter/provideraccount/{world.klaviyo.pk}/change/",
        "sync runs": "/admin/jobcenter/syncrun/",
    }
    found = {}
    for name, url in pages.items():
        page.goto(url)
        page.locator("details").evaluate_all("all => all.forEach(d => d.open = true)")
        found[name] = axe_violations(page)
    assert all(not v for v in found.values()), "\n".join(
        f"{name}: {line}" for name, lines in found.items() for line in lines
    )
