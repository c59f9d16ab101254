"""The hot lane (jobcenter/sync/hot.py) against the sandbox over real HTTP.

Unfinished jobs are refreshed between sweeps by the cheapest call each listing declares:
Klaviyo's status filter where the listing holds enough unfinished jobs, one call by id
otherwise; Elastic Path (no filter, no order) and Fullstory (tracked jobs, no listing) by
id only. Each pass stays within its share of each rate limit, asks the least recently
checked jobs first, leaves jobs checked a moment ago alone, and costs a constant number
of queries (and no SyncRun row) when nothing changed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobcenter.models import Job, ProviderAccount, SyncRun
from jobcenter.sync.engine import sync_account
from jobcenter.sync.hot import hot_pass
from jobcenter.sync.lease import Lease
from jobcenter.sync.tracking import track_job
from providers.sandbox.client import SandboxClient
from tests.factories import create_fullstory_batch, events, sandbox_account, users

pytestmark = pytest.mark.django_db(transaction=True)

IMPORT = "profile-bulk-import-job"  # one `any(status, ...)` request lists its unfinished jobs
CATALOG = "catalog-item-bulk-create-job"  # two: one `equals` per unfinished status
DELETE = "catalog-item-bulk-delete-job"
SUPPRESSION = "profile-suppression-bulk-create-job"  # newest first, 100 a page
ACCOUNT_FIELDS = (
    "last_sync_at",
    "next_sync_at",
    "last_status",
    "last_success_at",
    "last_error",
    "consecutive_failures",
)


def log_mark(sandbox: SandboxClient, sandbox_id: str) -> int:
    """The sandbox request log's position for this account: read what comes after it."""
    entries = sandbox.requests(sandbox_id)
    return entries[-1]["seq"] if entries else 0


def requests_since(sandbox: SandboxClient, sandbox_id: str, since: int) -> list[tuple[str, str]]:
    """(path, status filter or "") of each job request the account made since `since`
    (Elastic Path's token requests left out: they are not job calls)."""
    return [
        (entry["path"], dict(parse_qsl(entry["query_string"] or "")).get("filter", ""))
        for entry in sandbox.requests(sandbox_id, since=since)
        if not entry["path"].startswith("/oauth")
    ]


def age_checks(account: ProviderAccount, seconds: float = 600) -> None:
    """Every job last checked `seconds` ago: due for the hot lane (a sweep just checked it)."""
    Job.objects.filter(account=account).update(
        last_checked_at=timezone.now() - timedelta(seconds=seconds)
    )


def klaviyo_jobs(
    sandbox: SandboxClient, sandbox_id: str, kind: str, count: int, queued: float, processing: float
) -> list[str]:
    """Jobs created now on the sandbox's clock; their ids.

    The sandbox creates them a microsecond apart, so a frozen clock is moved on by a
    millisecond to show them all.
    """
    ids = sandbox.control(
        sandbox_id,
        "create_jobs",
        kind=kind,
        count=count,
        queued_seconds=queued,
        processing_seconds=processing,
    )["ids"]
    sandbox.clock(sandbox_id, advance=0.001)
    return ids


def assert_klaviyo_truth(account: ProviderAccount, state: dict[str, Any]) -> None:
    """Every local job reads what the sandbox says now, and none is missing."""
    local = {job.external_id: job for job in Job.objects.filter(account=account)}
    assert set(local) == {job["id"] for job in state["jobs"]}
    for truth in state["jobs"]:
        mine = local[truth["id"]]
        assert mine.provider_status == truth["status"], truth["id"]
        assert mine.completed_count == truth["completed_count"], truth["id"]
        assert mine.failed_count == truth["failed_count"], truth["id"]
        assert mine.is_terminal == (truth["status"] in ("complete", "cancelled")), truth["id"]


def account_bookkeeping(account: ProviderAccount) -> dict[str, Any]:
    return ProviderAccount.objects.filter(pk=account.pk).values(*ACCOUNT_FIELDS).get()


def test_klaviyo_pass_lists_by_status_where_cheaper_and_fetches_the_rest_by_id(sandbox) -> None:
    account, described = sandbox_account(sandbox, "klaviyo", jobs_per_kind=0)
    sid = described["id"]
    imports = klaviyo_jobs(sandbox, sid, IMPORT, 3, queued=10, processing=600)
    finishing = klaviyo_jobs(sandbox, sid, IMPORT, 1, queued=5, processing=20)  # done at +25 s
    catalog = klaviyo_jobs(sandbox, sid, CATALOG, 2, queued=10, processing=600)
    catalog += klaviyo_jobs(sandbox, sid, CATALOG, 1, queued=100, processing=600)
    lone = klaviyo_jobs(sandbox, sid, DELETE, 1, queued=10, processing=600)
    sweep = sync_account(account.pk)
    assert sweep.outcome == "succeeded", sweep.error
    assert Job.objects.filter(account=account, is_terminal=False).count() == 8
    before = account_bookkeeping(account)

    sandbox.clock(sid, advance=60)  # queued -> processing, one import complete
    new = klaviyo_jobs(sandbox, sid, IMPORT, 1, queued=30, processing=600)
    age_checks(account)
    since = log_mark(sandbox, sid)
    run = hot_pass(account.pk)

    assert run is not None and run.pk is not None
    assert (run.trigger, run.outcome) == ("hot", "succeeded"), run.error
    assert run.jobs_created == 1  # the new job, found by the status filter
    assert run.jobs_changed == 7  # all but the catalog job still queued
    assert_klaviyo_truth(account, sandbox.state(sid))
    finished = Job.objects.get(account=account, external_id=finishing[0])
    assert finished.is_terminal and finished.status == "succeeded"
    status = dict(Job.objects.filter(account=account).values_list("external_id", "provider_status"))
    assert [status[i] for i in imports + catalog + lone + new] == [
        *["processing"] * 5,
        "queued",  # the catalog job queued for 100 s
        "processing",
        "queued",  # the new one
    ]
    # Two listings by status (one request with `any`, two with `equals`), the job that
    # left the filtered list by id, the lone unfinished delete job by id; nothing else.
    assert sorted(requests_since(sandbox, sid, since)) == sorted(
        [
            (f"/api/{IMPORT}s", 'any(status,["queued","processing"])'),
            (f"/api/{CATALOG}s", 'equals(status,"queued")'),
            (f"/api/{CATALOG}s", 'equals(status,"processing")'),
            (f"/api/{IMPORT}s/{finishing[0]}", ""),
            (f"/api/{DELETE}s/{lone[0]}", ""),
        ]
    )
    assert run.requests == 5
    # The sweeps own the account's schedule and status: a pass leaves them alone.
    assert account_bookkeeping(account) == before
    assert SyncRun.objects.filter(account=account, trigger="hot").count() == 1


def test_a_newest_first_listing_costs_its_first_page_only(sandbox) -> None:
    account, described = sandbox_account(sandbox, "klaviyo", jobs_per_kind=0)
    sid = described["id"]
    klaviyo_jobs(sandbox, sid, SUPPRESSION, 105, queued=0, processing=1)  # two pages
    sandbox.clock(sid, advance=10)
    running = klaviyo_jobs(sandbox, sid, SUPPRESSION, 1, queued=5, processing=600)
    assert sync_account(account.pk).outcome == "succeeded"
    sandbox.clock(sid, advance=30)
    age_checks(account)
    since = log_mark(sandbox, sid)
    run = hot_pass(account.pk)

    # One unfinished job: two status requests would cost more than the newest page,
    # which shows it (it is the newest). The page after it is never asked for.
    assert requests_since(sandbox, sid, since) == [(f"/api/{SUPPRESSION}s", "")]
    assert run is not None and run.jobs_changed == 1
    job = Job.objects.get(account=account, external_id=running[0])
    assert job.provider_status == "processing"


def test_a_budget_of_exactly_the_status_calls_lists_every_unfinished_status(
    sandbox, settings
) -> None:
    settings.JOBCENTER_HOT_SECONDS = 1
    settings.JOBCENTER_HOT_HEADROOM = 0.5
    account, described = sandbox_account(sandbox, "klaviyo", jobs_per_kind=0)
    sid = described["id"]
    # The catalog tier allows 4 a second: 4 * 1 s * 0.5 = 2 requests, both filters.
    ProviderAccount.objects.filter(pk=account.pk).update(
        rate_limits={"*": [[1000, 1]], CATALOG: [[4, 1]]}
    )
    soon = klaviyo_jobs(sandbox, sid, CATALOG, 1, queued=10, processing=600)
    later = klaviyo_jobs(sandbox, sid, CATALOG, 1, queued=100, processing=600)
    assert sync_account(account.pk).outcome == "succeeded"
    sandbox.clock(sid, advance=30)  # one processing, one still queued
    age_checks(account)
    since = log_mark(sandbox, sid)
    run = hot_pass(account.pk)

    assert sorted(requests_since(sandbox, sid, since)) == [
        (f"/api/{CATALOG}s", 'equals(status,"processing")'),
        (f"/api/{CATALOG}s", 'equals(status,"queued")'),
    ]
    assert run is not None and run.jobs_changed == 1
    assert Job.objects.get(external_id=soon[0]).provider_status == "processing"
    assert Job.objects.get(external_id=later[0]).provider_status == "queued"


def test_elasticpath_jobs_are_refreshed_by_id_only(sandbox) -> None:
    account, described = sandbox_account(sandbox, "elasticpath", jobs_per_kind=0)
    sid = described["id"]
    ids = sandbox.control(sid, "create_jobs", type="product-import", count=3, duration=40)["ids"]
    assert sync_account(account.pk).outcome == "succeeded"
    assert Job.objects.filter(account=account, is_terminal=False).count() == 3
    sandbox.clock(sid, advance=50)  # one at a time per store: the first done, the second running
    age_checks(account)
    since = log_mark(sandbox, sid)
    run = hot_pass(account.pk)

    assert run is not None and run.outcome == "succeeded", run.error
    assert sorted(requests_since(sandbox, sid, since)) == sorted(
        (f"/pcm/jobs/{job_id}", "") for job_id in ids
    )
    truth = {job["id"]: job["status"] for job in sandbox.state(sid)["jobs"]}
    local = dict(Job.objects.filter(account=account).values_list("external_id", "provider_status"))
    assert local == truth
    assert sorted(truth.values()) == ["pending", "started", "success"]


def test_fullstory_tracked_jobs_are_refreshed_by_id_and_failures_get_their_errors(
    sandbox,
) -> None:
    account, described = sandbox_account(sandbox, "fullstory", processing_seconds=30)
    sid = described["id"]
    clean = create_fullstory_batch(sandbox, described, "events-batch-import", events(10))
    failing = create_fullstory_batch(sandbox, described, "users-batch-import", users(4, range(4)))
    track_job(account, "events-batch-import", clean)
    track_job(account, "users-batch-import", failing)
    assert sync_account(account.pk).outcome == "succeeded"
    assert Job.objects.filter(account=account, is_terminal=False).count() == 2
    sandbox.clock(sid, advance=120)
    age_checks(account)
    since = log_mark(sandbox, sid)
    run = hot_pass(account.pk)

    assert run is not None and run.outcome == "succeeded", run.error
    paths = [path for path, _ in requests_since(sandbox, sid, since)]
    by_id = sorted(path for path in paths if not path.endswith("/errors"))
    assert by_id == sorted([f"/v2/events/batch/{clean}", f"/v2/users/batch/{failing}"])
    assert {path for path in paths if path.endswith("/errors")} == {
        f"/v2/users/batch/{failing}/errors"
    }
    truth = {job["id"]: job for job in sandbox.state(sid)["jobs"]}
    for job in Job.objects.filter(account=account):
        assert job.is_terminal
        assert job.completed_count == truth[job.external_id]["imports"]
        assert job.errors.count() == truth[job.external_id]["error_count"]
    assert run.errors_fetched == 4


TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


def pass_queries(account: ProviderAccount) -> int:
    """Queries of one hot pass that must find nothing changed (asserted), without the
    provider requests' own: a token from the rate-limit bucket, a database row where no
    Redis or SQLite side file holds it (PostgreSQL), each in its own transaction."""
    age_checks(account)
    with CaptureQueriesContext(connection) as queries:
        assert hot_pass(account.pk) is None
    return sum(
        1
        for query in queries.captured_queries
        if "ratelimitbucket" not in query["sql"]
        and not query["sql"].lstrip().upper().startswith(TRANSACTION_CONTROL)
    )


@pytest.mark.parametrize(
    ("provider", "few", "many"),
    [("klaviyo", 1, 60), ("elasticpath", 2, 40)],
    ids=["status-filter", "by-id"],
)
def test_a_pass_that_finds_nothing_costs_constant_queries_and_leaves_no_row(
    sandbox, provider: str, few: int, many: int
) -> None:
    counts = []
    for n in (few, many):
        account, described = sandbox_account(sandbox, provider, jobs_per_kind=0)
        sid = described["id"]
        if provider == "klaviyo":
            klaviyo_jobs(sandbox, sid, IMPORT, n, queued=60, processing=600)
        else:
            sandbox.control(sid, "create_jobs", type="product-export", count=n, duration=600)
        assert sync_account(account.pk).outcome == "succeeded"
        assert Job.objects.filter(account=account, is_terminal=False).count() == n
        since = log_mark(sandbox, sid)
        counts.append(pass_queries(account))  # the sandbox's clock is frozen
        asked = requests_since(sandbox, sid, since)
        assert len(asked) == (1 if provider == "klaviyo" else n)
        assert not SyncRun.objects.filter(account=account, trigger="hot").exists()
        # Checked: the next pass within half a hot interval leaves them alone.
        assert not Job.objects.filter(
            account=account, last_checked_at__lt=timezone.now() - timedelta(seconds=60)
        ).exists()
    assert counts[0] == counts[1], counts


def test_the_budget_bounds_a_pass_and_the_least_recently_checked_go_first(
    sandbox, settings
) -> None:
    settings.JOBCENTER_HOT_SECONDS = 1
    settings.JOBCENTER_HOT_HEADROOM = 0.5
    account, described = sandbox_account(sandbox, "elasticpath", jobs_per_kind=0)
    sid = described["id"]
    sandbox.control(sid, "create_jobs", type="product-import", count=12, duration=600)
    assert sync_account(account.pk).outcome == "succeeded"
    # 10 a second: 10 * 1 s * 0.5 = 5 requests a pass.
    ProviderAccount.objects.filter(pk=account.pk).update(rate_limits={"*": [[10, 1]]})
    # Checked longest ago: the newest ids (not the id order).
    jobs = list(Job.objects.filter(account=account).order_by("-id"))
    now = timezone.now()
    for age, job in enumerate(jobs):
        Job.objects.filter(pk=job.pk).update(last_checked_at=now - timedelta(minutes=100 - age))
    order = [f"/pcm/jobs/{job.external_id}" for job in jobs]

    asked = []
    for _ in range(3):
        since = log_mark(sandbox, sid)
        assert hot_pass(account.pk) is None  # frozen clock: nothing changed
        asked.append([path for path, _ in requests_since(sandbox, sid, since)])
    assert asked[0] == order[:5]
    assert asked[1] == order[5:10]  # the ones left over, before those just checked
    assert asked[2][:2] == order[10:] and len(asked[2]) <= 5


def test_jobs_checked_less_than_half_an_interval_ago_are_left_alone(sandbox, settings) -> None:
    settings.JOBCENTER_HOT_SECONDS = 60  # half: 30 s
    account, described = sandbox_account(sandbox, "elasticpath", jobs_per_kind=0)
    sid = described["id"]
    sandbox.control(sid, "create_jobs", type="product-import", count=4, duration=600)
    assert sync_account(account.pk).outcome == "succeeded"
    jobs = list(Job.objects.filter(account=account).order_by("id"))
    now = timezone.now()
    Job.objects.filter(pk__in=[j.pk for j in jobs[:2]]).update(last_checked_at=now)
    Job.objects.filter(pk__in=[j.pk for j in jobs[2:]]).update(
        last_checked_at=now - timedelta(seconds=45)
    )
    since = log_mark(sandbox, sid)
    hot_pass(account.pk)
    assert sorted(requests_since(sandbox, sid, since)) == sorted(
        (f"/pcm/jobs/{job.external_id}", "") for job in jobs[2:]
    )


def test_a_pass_leaves_a_leased_account_to_its_sweep(sandbox) -> None:
    account, described = sandbox_account(sandbox, "elasticpath", jobs_per_kind=0)
    sid = described["id"]
    sandbox.control(sid, "create_jobs", type="product-import", count=2, duration=600)
    assert sync_account(account.pk).outcome == "succeeded"
    age_checks(account)
    assert Lease(account.pk, "a sweep").acquire()
    since = log_mark(sandbox, sid)
    assert hot_pass(account.pk) is None
    assert requests_since(sandbox, sid, since) == []
    assert ProviderAccount.objects.get(pk=account.pk).lease_owner == "a sweep"


def test_a_pass_told_to_slow_down_waits_as_long_as_the_provider_asks(sandbox) -> None:
    account, described = sandbox_account(sandbox, "elasticpath", jobs_per_kind=0)
    sid = described["id"]
    sandbox.control(sid, "create_jobs", type="product-import", count=2, duration=40)
    assert sync_account(account.pk).outcome == "succeeded"
    age_checks(account)
    # Every request answers 429, as Elastic Path does, without a Retry-After: the pass
    # is deferred for a minute, four hot intervals, instead of retried at the next.
    sandbox.control(sid, "faults", rate=1.0, mix={"429": 1})
    before = timezone.now()
    run = hot_pass(account.pk)

    assert run is not None and run.outcome == "deferred", run and run.error
    account.refresh_from_db()
    assert account.hot_next_at >= before + timedelta(seconds=60), run.error
    assert account.blocked_until is None  # the sweeps' schedule is theirs to keep
    assert account.lease_owner == ""


def test_a_scheduled_sweep_leaves_what_the_hot_lane_just_checked_and_a_manual_one_does_not(
    sandbox,
) -> None:
    account, described = sandbox_account(sandbox, "fullstory", processing_seconds=600)
    sid = described["id"]
    batch = create_fullstory_batch(sandbox, described, "events-batch-import", events(10))
    track_job(account, "events-batch-import", batch)
    assert sync_account(account.pk).outcome == "succeeded"
    age_checks(account)
    hot_pass(account.pk)  # checks the batch now

    since = log_mark(sandbox, sid)
    assert sync_account(account.pk, trigger="schedule").outcome == "succeeded"
    assert requests_since(sandbox, sid, since) == []  # checked a moment ago: not again

    since = log_mark(sandbox, sid)
    assert sync_account(account.pk, trigger="manual").outcome == "succeeded"
    assert [path for path, _ in requests_since(sandbox, sid, since)] == [
        f"/v2/events/batch/{batch}"
    ]
