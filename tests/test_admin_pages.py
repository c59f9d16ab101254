"""The admin pages staff live in, through the test client: job list, job page, account
page, dashboard, times in the staff member's zone. Real sandbox data where it matters."""

from __future__ import annotations

import csv
import io
import itertools
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from jobcenter.exports.columns import spreadsheet_safe
from jobcenter.models import Job, JobError, JobSnapshot, ProviderAccount, SyncRun
from jobcenter.queries import dashboard
from providers import PROVIDER_CLASSES
from tests.admin_support import plain_account, synced_world
from tests.api_support import api_account, api_team, join, make_unreadable

pytestmark = pytest.mark.django_db

JOBS = reverse("admin:jobcenter_job_changelist")


def page(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code, response.content[:500])
    return response.content.decode()


def listed_ids(html: str) -> set[str]:
    """External ids shown in the job list (the first column links to each job)."""
    return set(re.findall(r'<th class="field-external_id"><a href="[^"]+">([^<]+)</a>', html))


def make_job(account: Any, external_id: str, **fields: Any) -> Job:
    now = timezone.now()
    defaults: dict[str, Any] = {
        "provider": account.provider,
        "kind": "catalog-item-bulk-create-job",
        "status": "succeeded",
        "provider_status": "complete",
        "created_at": now - timedelta(hours=1),
        "is_terminal": True,
    }
    defaults.update(fields)
    return Job.objects.create(account=account, external_id=external_id, **defaults)


# --- job list -----------------------------------------------------------------------------


def test_job_list_shows_badges_progress_duration_provider_account_and_age(
    sandbox: Any, admin_client: Client
) -> None:
    world = synced_world(sandbox)
    html = page(admin_client, JOBS)
    assert (
        '<span class="jc-badge jc-failed"><span aria-hidden="true">✖</span> failed</span>' in html
    )
    assert "<progress max=" in html and " of " in html
    assert "Klaviyo main" in html and "Elastic Path EU" in html
    assert "Klaviyo" in html and "Elastic Path" in html
    assert re.search(r"\d+ (second|minute|hour|day)s? ago</time>", html)
    assert re.search(r"<td class=\"field-duration\">(\d+ (s|min)|\d+ h( \d+ min)?|running )", html)
    assert str(world.failed_job.external_id) in html
    assert "Delete selected" not in html  # no bulk actions: jobs are never deleted here


def test_job_list_filters_by_provider_account_kind_status_dates_stuck_and_gone(
    sandbox: Any, admin_client: Client
) -> None:
    world = synced_world(sandbox)
    klaviyo_failed = set(
        Job.objects.filter(provider="klaviyo", status="failed").values_list(
            "external_id", flat=True
        )
    )
    shown = listed_ids(page(admin_client, f"{JOBS}?provider=klaviyo&status=failed"))
    assert shown == klaviyo_failed and shown

    by_account = listed_ids(page(admin_client, f"{JOBS}?account__id__exact={world.elasticpath.pk}"))
    assert by_account == set(
        Job.objects.filter(account=world.elasticpath).values_list("external_id", flat=True)
    )

    kind = world.failed_job.kind
    assert listed_ids(page(admin_client, f"{JOBS}?kind={kind}")) == set(
        Job.objects.filter(kind=kind).values_list("external_id", flat=True)
    )

    now = timezone.now()
    old = make_job(world.klaviyo, "created-long-ago", created_at=now - timedelta(days=400))
    Job.objects.filter(pk=old.pk).update(last_changed_at=now - timedelta(days=400))
    week_ago = quote((now - timedelta(days=7)).isoformat())
    recent = listed_ids(page(admin_client, f"{JOBS}?created_at__gte={week_ago}"))
    assert "created-long-ago" not in recent and recent
    long_ago = quote((now - timedelta(days=300)).isoformat())
    changed = listed_ids(page(admin_client, f"{JOBS}?last_changed_at__lt={long_ago}"))
    assert changed == {"created-long-ago"}

    stuck = make_job(
        world.klaviyo,
        "stuck-for-hours",
        status="running",
        is_terminal=False,
        started_at=now - timedelta(hours=5),
    )
    make_job(
        world.klaviyo,
        "running-briefly",
        status="running",
        is_terminal=False,
        started_at=now - timedelta(minutes=5),
    )
    assert listed_ids(page(admin_client, f"{JOBS}?stuck=yes")) >= {stuck.external_id}
    assert "running-briefly" not in listed_ids(page(admin_client, f"{JOBS}?stuck=yes"))

    Job.objects.filter(pk=old.pk).update(gone_at=now, gone_reason="expired at the provider")
    assert listed_ids(page(admin_client, f"{JOBS}?gone=yes")) == {"created-long-ago"}
    assert "created-long-ago" not in listed_ids(page(admin_client, f"{JOBS}?gone=no"))


def test_job_list_searches_by_external_id_and_by_error_text(
    sandbox: Any, admin_client: Client
) -> None:
    world = synced_world(sandbox)
    job = world.failed_job
    assert listed_ids(page(admin_client, f"{JOBS}?q={job.external_id}")) == {job.external_id}

    message = JobError.objects.filter(job=job).order_by("position").first().message
    words = " ".join(message.split()[:3])
    found = listed_ids(page(admin_client, f"{JOBS}?q={words}"))
    expected = set(
        Job.objects.filter(errors__message__icontains=words).values_list("external_id", flat=True)
    )
    assert job.external_id in found and found == expected
    assert listed_ids(page(admin_client, f"{JOBS}?q=no-such-words-anywhere")) == set()


def test_kind_filter_lists_the_registry_kinds_of_the_chosen_provider(admin_client: Client) -> None:
    html = page(admin_client, f"{JOBS}?provider=fullstory")
    assert "Fullstory: " in html
    assert "catalog-item-bulk-create-job" not in html.split('id="changelist-filter"')[1]


# --- job page -----------------------------------------------------------------------------


def test_job_page_shows_fields_timeline_paged_errors_payload_and_tools(
    sandbox: Any, admin_client: Client
) -> None:
    world = synced_world(sandbox)
    job = world.failed_job
    url = reverse("admin:jobcenter_job_change", args=[job.pk])
    html = page(admin_client, url)
    for text in (job.external_id, job.kind, "Klaviyo main", "Provider status", "Timeline"):
        assert text in html
    snapshots = list(job.snapshots.order_by("observed_at"))
    assert len(snapshots) >= 2
    assert html.count('class="jc-timeline-entry"') == len(snapshots)
    assert "first seen" in html
    if snapshots[0].status != snapshots[-1].status:
        assert f"→ {snapshots[-1].status.replace('_', ' ')}" in html
    deltas = [
        (b.failed_count or 0) - (a.failed_count or 0) for a, b in itertools.pairwise(snapshots)
    ]
    for delta in deltas:
        if delta > 0:
            assert f'<span class="jc-delta">+{delta:,}</span>' in html

    errors = JobError.objects.filter(job=job).count()
    assert errors > 25, "the seeded job has more than one page of errors"
    assert html.count('class="jc-error"') == 25
    assert f"{errors} error records from the provider; 1\N{EN DASH}25 shown." in html
    second = page(admin_client, f"{url}?errors_page=2")
    assert second.count('class="jc-error"') == min(25, errors - 25)
    assert "Page 2 of" in second

    assert '<pre class="jc-json" tabindex="0">' in html
    assert "&quot;id&quot;: &quot;" + job.external_id in html
    assert "Refresh now" in html
    assert reverse("admin:jobcenter_job_history_csv", args=[job.pk]) in html
    assert 'name="_save"' not in html  # nothing on a job is edited by hand


def test_job_page_links_the_files_the_provider_names(sandbox: Any, admin_client: Client) -> None:
    world = synced_world(sandbox)
    exports = Job.objects.filter(account=world.elasticpath, kind="product-export")
    export = next(j for j in exports if (j.payload.get("meta") or {}).get("file_locations"))
    html = page(admin_client, reverse("admin:jobcenter_job_change", args=[export.pk]))
    first = export.payload["meta"]["file_locations"][0]
    assert f'<a href="{first}" rel="noopener noreferrer">Exported file 1</a>' in html


def test_refresh_now_queues_a_sync_of_the_account_and_says_so(
    sandbox: Any, admin_client: Client
) -> None:
    world = synced_world(sandbox)
    job = Job.objects.filter(account=world.klaviyo, is_terminal=False).first() or world.failed_job
    before = SyncRun.objects.filter(account=world.klaviyo).count()
    url = reverse("admin:jobcenter_job_refresh", args=[job.pk])
    assert admin_client.get(url).status_code == 405
    response = admin_client.post(url, follow=True)
    assert response.status_code == 200
    assert "Sync of Klaviyo main queued" in response.content.decode()
    # Tests run django-q2 in sync mode: the queued sync has already run.
    assert SyncRun.objects.filter(account=world.klaviyo).count() == before + 1
    assert SyncRun.objects.filter(account=world.klaviyo).first().trigger == "manual"


def test_history_export_streams_every_snapshot_as_safe_csv(
    sandbox: Any, admin_client: Client
) -> None:
    world = synced_world(sandbox)
    job = world.failed_job
    JobSnapshot.objects.create(
        job=job,
        status="failed",
        provider_status='=HYPERLINK("http://evil.example")',
        payload={"note": "+1"},
        digest="x",
    )
    response = admin_client.get(reverse("admin:jobcenter_job_history_csv", args=[job.pk]))
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment;" in response["Content-Disposition"]
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))  # the snapshot export's columns
    assert len(rows) == job.snapshots.count()
    assert rows[-1]["provider_status"] == '\'=HYPERLINK("http://evil.example")'
    assert all(row["job_external_id"] == job.external_id for row in rows)
    observed = [datetime.fromisoformat(row["observed_at"]) for row in rows]
    assert observed == sorted(observed) and observed[0].utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+2", "'=1+2"),
        ("+33 6", "'+33 6"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("plain", "plain"),
        (None, ""),
        (42, "42"),
    ],
)
def test_spreadsheet_formulas_are_escaped(value: object, expected: str) -> None:
    assert spreadsheet_safe(value) == expected


# --- account page -------------------------------------------------------------------------


def test_account_page_masks_credentials_and_shows_sync_state_and_runs(
    sandbox: Any, admin_client: Client
) -> None:
    world = synced_world(sandbox)
    account = world.klaviyo
    secret = account.get_credentials()["api_key"]
    html = page(admin_client, reverse("admin:jobcenter_provideraccount_change", args=[account.pk]))
    assert secret not in html
    assert f"••••••••{account.credentials_hint}" in html
    for label in ("Last sync", "Next sync", "Blocked until", "Last success"):
        assert label in html
    assert "Test connection" in html and "Sync now" in html
    runs = SyncRun.objects.filter(account=account).count()
    assert html.count('class="jc-run"') == runs == 2


def test_sync_now_and_test_connection_buttons_answer_on_the_account_page(
    sandbox: Any, admin_client: Client
) -> None:
    world = synced_world(sandbox)
    account = world.klaviyo
    change = reverse("admin:jobcenter_provideraccount_change", args=[account.pk])
    tested = admin_client.post(
        reverse("admin:jobcenter_provideraccount_test_connection", args=[account.pk]), follow=True
    )
    assert "the provider accepted the credentials" in tested.content.decode()
    assert tested.redirect_chain[-1][0] == change

    synced = admin_client.post(
        reverse("admin:jobcenter_provideraccount_sync_now", args=[account.pk]), follow=True
    )
    html = synced.content.decode()
    assert "Sync queued for Klaviyo main" in html
    assert html.count('class="jc-run"') == 3
    assert SyncRun.objects.filter(account=account, trigger="manual").count() == 3


def test_account_form_over_unreadable_stored_credentials_is_a_field_error(
    admin_client: Client,
) -> None:
    """Stored credentials written with a lost key: the form shows the error on each blank
    credential it would keep (the API's rule, `merge_credentials`), never a 500; typing
    them all again replaces them."""
    account = api_account()
    stored = make_unreadable(account)
    change = reverse("admin:jobcenter_provideraccount_change", args=[account.pk])
    page(admin_client, change)  # the page opens: it shows the hint, never decrypts
    form = {
        "name": account.name,
        "provider": "elasticpath",
        "base_url": "",
        "enabled": "on",
        "sync_interval_minutes": "5",
        "rate_limits": "{}",
        "credential__elasticpath__client_id": "new-client-id",
        "credential__elasticpath__client_secret": "",
    }
    response = admin_client.post(change, form)
    assert response.status_code == 200, response.content[:500]
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["credential__elasticpath__client_secret"]
    assert "cannot be decrypted" in errors["credential__elasticpath__client_secret"][0]
    assert "cannot be decrypted" in response.content.decode()
    account.refresh_from_db()
    assert account.credentials_encrypted == stored

    form["credential__elasticpath__client_secret"] = "new-secret-0000abcd"
    assert admin_client.post(change, form).status_code == 302
    account.refresh_from_db()
    assert account.get_credentials() == {
        "client_id": "new-client-id",
        "client_secret": "new-secret-0000abcd",
    }


def test_view_only_staff_see_pages_but_cannot_sync_refresh_or_test(sandbox: Any) -> None:
    world = synced_world(sandbox)
    ProviderAccount.objects.filter(pk__in=[world.klaviyo.pk, world.elasticpath.pk]).update(
        team=api_team()
    )
    viewer = join(User.objects.create_user("viewer", password="pw", is_staff=True))
    viewer.user_permissions.set(
        Permission.objects.filter(codename__startswith="view_", content_type__app_label="jobcenter")
    )
    client = Client()
    client.force_login(viewer)
    job_page = page(client, reverse("admin:jobcenter_job_change", args=[world.failed_job.pk]))
    assert "Refresh now" not in job_page
    account_page = page(
        client, reverse("admin:jobcenter_provideraccount_change", args=[world.klaviyo.pk])
    )
    assert "Sync now" not in account_page
    for name, pk in (
        ("admin:jobcenter_job_refresh", world.failed_job.pk),
        ("admin:jobcenter_provideraccount_sync_now", world.klaviyo.pk),
        ("admin:jobcenter_provideraccount_test_connection", world.klaviyo.pk),
    ):
        assert client.post(reverse(name, args=[pk])).status_code == 403
    # Exports need their own permission (jobcenter.export_job): no link, and a 403.
    assert "Export history" not in job_page
    export = client.get(reverse("admin:jobcenter_job_history_csv", args=[world.failed_job.pk]))
    assert export.status_code == 403


# --- dashboard ----------------------------------------------------------------------------


def test_dashboard_figures_count_the_window_by_status_day_and_kind() -> None:
    account = plain_account("Figures", "klaviyo")
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    kind = "profile-bulk-import-job"
    for n, (status, age) in enumerate(
        [
            ("succeeded", 0),
            ("failed", 0),
            ("partially_failed", 1),
            ("running", 1),
            ("succeeded", 29),
            ("failed", 31),  # outside the 30-day window
        ]
    ):
        make_job(
            account,
            f"fig-{n}",
            kind=kind,
            status=status,
            is_terminal=status != "running",
            created_at=now - timedelta(days=age, hours=1),
        )
    with timezone.override(UTC):
        tally = dashboard.window_tally(now)
        rows = {r.provider: dict(r.counts) for r in dashboard.status_counts(tally)}
        days = dashboard.daily_counts(tally)
        rates = dashboard.failure_rates(tally)
    assert set(rows) == set(PROVIDER_CLASSES)  # every provider, declared ones too
    assert rows["klaviyo"]["succeeded"] == 2 and rows["klaviyo"]["failed"] == 1
    assert rows["klaviyo"]["partially_failed"] == 1 and rows["klaviyo"]["running"] == 1
    assert sum(rows["elasticpath"].values()) == 0
    assert len(days) == 30 and days[-1].day == now.date()
    assert (days[-1].created, days[-1].failed) == (2, 1)
    assert (days[-2].created, days[-2].failed) == (2, 1)
    assert (days[0].created, days[0].failed) == (1, 0)
    assert sum(d.created for d in days) == 5
    [rate] = rates
    assert (rate.kind, rate.ended, rate.failed) == (kind, 4, 2)
    assert rate.rate == 0.5


def test_dashboard_days_are_the_staff_members_days() -> None:
    account = plain_account("Zones", "klaviyo")
    # 23:30 UTC on 9 March is 10 March in Tokyo and still 9 March in New York.
    make_job(account, "late", created_at=datetime(2026, 3, 9, 23, 30, tzinfo=UTC))
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    for zone, day in (("Asia/Tokyo", 10), ("America/New_York", 9)):
        with timezone.override(ZoneInfo(zone)):
            days = dashboard.daily_counts(dashboard.window_tally(now))
        assert [d.day.day for d in days if d.created] == [day], zone


def test_dashboard_days_have_their_own_length_across_a_dst_change() -> None:
    with timezone.override(ZoneInfo("Europe/Paris")):
        bounds = dashboard.window_days(datetime(2026, 4, 10, 12, 0, tzinfo=UTC))
    # Subtract in UTC: Python subtracts two times of one zone by their wall clocks.
    lengths = {
        day.isoformat(): end.astimezone(UTC) - start.astimezone(UTC) for day, start, end in bounds
    }
    assert lengths["2026-03-29"] == timedelta(hours=23)
    assert lengths["2026-03-30"] == timedelta(hours=24)


def test_sync_health_lists_failing_accounts_first_then_oldest_success() -> None:
    now = timezone.now()
    plain_account("Fresh", "klaviyo", last_status="ok", last_success_at=now)
    plain_account("Stale", "elasticpath", last_status="ok", last_success_at=now - timedelta(days=2))
    plain_account(
        "Broken",
        "fullstory",
        last_status="failing",
        last_success_at=now - timedelta(hours=1),
        last_error="401 the API key was refused",
    )
    plain_account("Off", "klaviyo", enabled=False, last_status="failing")
    names = [a.name for a in dashboard.sync_health()]
    assert names.index("Broken") < names.index("Stale") < names.index("Fresh")
    assert names[-1] == "Off" or names.index("Off") < names.index("Stale")


@override_settings(JOBCENTER_STUCK_MINUTES={"*": 120, "profile-bulk-import-job": 600})
def test_stuck_means_not_ended_and_past_the_threshold_of_its_kind() -> None:
    account = plain_account("Stuck", "klaviyo")
    now = timezone.now()

    def running(name: str, kind: str, hours: float, **extra: Any) -> None:
        make_job(
            account,
            name,
            kind=kind,
            status="running",
            is_terminal=False,
            started_at=now - timedelta(hours=hours),
            **extra,
        )

    running("catalog-3h", "catalog-item-bulk-create-job", 3)
    running("catalog-1h", "catalog-item-bulk-create-job", 1)
    running("profile-3h", "profile-bulk-import-job", 3)  # its kind allows ten hours
    running("profile-11h", "profile-bulk-import-job", 11)
    running("gone-5h", "catalog-item-bulk-create-job", 5, gone_at=now)
    make_job(
        account,
        "queued-never-started",
        status="queued",
        is_terminal=False,
        created_at=now - timedelta(hours=4),
    )
    make_job(account, "ended-long-ago", started_at=now - timedelta(days=3))
    stuck = dashboard.stuck_jobs(Job.objects.all(), now)
    assert set(stuck.values_list("external_id", flat=True)) == {
        "catalog-3h",
        "profile-11h",
        "queued-never-started",
    }
    listed, more = dashboard.stuck_list(now, limit=2)
    assert [j.external_id for j in listed] == ["profile-11h", "queued-never-started"] and more


def test_dashboard_page_draws_accessible_charts_and_tables(
    sandbox: Any, admin_client: Client
) -> None:
    synced_world(sandbox)
    html = page(admin_client, reverse("admin:index"))
    for heading in (
        "Jobs by status and provider",
        "Jobs created and failed per day",
        "Failure rate per kind",
        "Sync health",
        "Stuck jobs",
    ):
        assert heading in html
    svgs = re.findall(r"<svg class=\"jc-chart\"[^>]*>", html)
    assert svgs and all('role="img"' in s and "aria-labelledby" in s for s in svgs)
    assert '<title id="jc-daily-svg-title">' in html and "<desc id=" in html
    assert 'id="jc-daily-table"' in html and 'id="jc-rate-table"' in html
    assert "Klaviyo main" in html and "Elastic Path EU" in html
    assert "cdn" not in html.lower() and '<script src="http' not in html
    # Every count links to the jobs it counts.
    assert "status=failed" in html


def test_dashboard_is_hidden_from_staff_without_job_view_permission() -> None:
    staff = User.objects.create_user("nobody", password="pw", is_staff=True)
    client = Client()
    client.force_login(staff)
    html = page(client, reverse("admin:index"))
    assert "Jobs by status and provider" not in html


# --- time zones ---------------------------------------------------------------------------


def test_times_show_in_the_browsers_zone_with_utc_on_hover(admin_client: Client) -> None:
    account = plain_account("Zone", "klaviyo")
    job = make_job(account, "zoned", created_at=datetime(2026, 1, 15, 18, 30, tzinfo=UTC))
    url = reverse("admin:jobcenter_job_change", args=[job.pk])
    admin_client.cookies["jobcenter_tz"] = "America/New_York"
    html = page(admin_client, url)
    assert (
        '<time datetime="2026-01-15T18:30:00+00:00" title="2026-01-15 18:30:00 UTC">'
        "2026-01-15 13:30 EST</time>"
    ) in html
    assert "Times are shown in <strong>America/New_York</strong>" in html

    admin_client.cookies["jobcenter_tz"] = "Not/AZone"
    html = page(admin_client, url)
    assert "2026-01-15 18:30 UTC</time>" in html


def test_the_zone_cookie_touches_only_admin_pages(admin_client: Client) -> None:
    admin_client.cookies["jobcenter_tz"] = "Asia/Tokyo"
    response = admin_client.get("/api/v1/")
    assert timezone.get_current_timezone_name() == "UTC"
    assert response.status_code in (200, 401, 403, 404)
