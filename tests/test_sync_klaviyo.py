"""The sync engine end to end against the Klaviyo sandbox over real HTTP."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from django.db import connection, connections, transaction
from django.db.models import Count
from django.test.utils import CaptureQueriesContext

from jobcenter.models import Job, JobError, JobSnapshot, ProviderAccount, SyncRun
from jobcenter.sync import engine as sync
from jobcenter.sync.bookkeeping import RunTotals
from jobcenter.sync.engine import AccountSync, sync_account
from jobcenter.sync.prefetch import Prefetched
from providers.base import JobErrorRecord, JobRecord, Status
from providers.klaviyo import KlaviyoProvider
from tests.factories import local_jobs, sandbox_account
from tests.leaks import admin_pages_for, assert_secret_nowhere

pytestmark = pytest.mark.django_db(transaction=True)

KINDS = [k.name for k in KlaviyoProvider.kinds]


def assert_equal_to_state(account: ProviderAccount, state: dict) -> None:
    local = local_jobs(account)
    remote = {(j["kind"], j["id"]): j for j in state["jobs"]}
    assert set(local) == set(remote)
    for key, job in remote.items():
        mine = local[key]
        assert mine["provider_status"] == job["status"], key
        assert mine["total_count"] == job["total_count"], key
        assert mine["completed_count"] == job["completed_count"], key
        assert mine["failed_count"] == job["failed_count"], key


def test_ten_thousand_jobs_sync_equal_to_the_sandbox_then_resync_writes_nothing(sandbox) -> None:
    account, described = sandbox_account(sandbox, "klaviyo", seed=7, jobs_per_kind=770)
    state = sandbox.state(described["id"])
    assert len(state["jobs"]) >= 10_000
    assert {j["kind"] for j in state["jobs"]} == set(KINDS)

    run = sync_account(account.pk)
    assert run.outcome == "succeeded", run.error
    assert run.jobs_created == len(state["jobs"])
    assert_equal_to_state(account, sandbox.state(described["id"]))
    assert JobSnapshot.objects.filter(job__account=account).count() == len(state["jobs"])
    # Payloads are stored as JSON objects (written as pre-encoded text), queryable as such.
    for rows in (
        Job.objects.filter(account=account),
        JobSnapshot.objects.filter(job__account=account),
        JobError.objects.filter(job__account=account),
    ):
        field = "raw" if rows.model is JobError else "payload"
        assert rows.exclude(**{f"{field}__has_key": "id"}).count() == 0
    job = Job.objects.filter(account=account).first()
    assert job.payload["id"] == job.external_id
    assert job.payload == job.snapshots.get().payload
    # Klaviyo has no failed status: failures are derived from the counts.
    statuses = set(Job.objects.filter(account=account).values_list("status", flat=True))
    assert {"succeeded", "partially_failed", "failed", "running", "queued"} <= statuses
    failed = Job.objects.filter(account=account, status__in=["failed", "partially_failed"])
    assert failed.exists()
    assert not failed.filter(errors_fetched_at__isnull=True).exists()
    assert JobError.objects.filter(job__account=account).count() == sum(
        j["error_count"] for j in state["jobs"] if j.get("error_count")
    )

    again = sync_account(account.pk)
    assert again.outcome == "succeeded", again.error
    assert again.snapshots_written == 0
    assert again.jobs_changed == 0
    assert again.jobs_created == 0


def test_progress_moves_jobs_and_snapshots_record_each_change(sandbox) -> None:
    account, described = sandbox_account(sandbox, "klaviyo", seed=3, jobs_per_kind=20)
    sync_account(account.pk)
    running = Job.objects.filter(account=account, is_terminal=False).count()
    assert running > 0
    sandbox.clock(described["id"], advance=6 * 3600)
    run = sync_account(account.pk)
    assert run.outcome == "succeeded", run.error
    assert run.jobs_changed > 0
    assert run.snapshots_written >= run.jobs_changed + run.jobs_created
    assert_equal_to_state(account, sandbox.state(described["id"]))
    moved = (
        Job.objects.filter(account=account).annotate(n=Count("snapshots")).filter(n__gte=2).first()
    )
    assert moved is not None
    history = list(moved.snapshots.order_by("observed_at"))
    assert history[0].observed_at < history[-1].observed_at
    assert (history[0].status, history[0].completed_count) != (
        history[-1].status,
        history[-1].completed_count,
    )


def test_queries_per_page_are_constant_whatever_the_page_holds(
    sandbox, django_assert_max_num_queries
) -> None:
    account, _ = sandbox_account(sandbox, "klaviyo", seed=5, jobs_per_kind=0)
    run = SyncRun.objects.create(account=account, trigger="manual")
    engine = AccountSync(account, run, owner="test")
    ProviderAccount.objects.filter(pk=account.pk).update(lease_owner="test")

    def record(i: int, status: Status, completed: int, failed: int = 0) -> JobRecord:
        errors = [JobErrorRecord(message=f"row {n} bad", code="invalid") for n in range(failed)]
        return JobRecord(
            kind="catalog-item-bulk-create-job",
            external_id=f"job-{i}",
            status=status,
            provider_status="complete" if status != Status.RUNNING else "processing",
            raw={"id": f"job-{i}", "completed": completed, "failed": failed},
            total_count=10,
            completed_count=completed,
            failed_count=failed,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
            errors=errors if status in (Status.FAILED, Status.PARTIALLY_FAILED) else None,
        )

    pages = [
        [record(0, Status.RUNNING, 1)],  # one new job
        [record(i, Status.RUNNING, 1) for i in range(100)],  # 99 new, 1 unchanged
        # 50 changed (some now failed, with errors), 50 unchanged, 100 new
        [
            record(i, Status.PARTIALLY_FAILED, 8, 2) if i < 50 else record(i, Status.RUNNING, 1)
            for i in range(100)
        ]
        + [record(i, Status.FAILED, 0, 10) for i in range(100, 200)],
    ]
    for page in pages:
        with django_assert_max_num_queries(12), transaction.atomic():
            engine.pages.apply_records(page)
            engine.save_progress()
    assert Job.objects.filter(account=account).count() == 200
    assert JobError.objects.filter(job__account=account).count() == 50 * 2 + 100 * 10


def test_a_whole_sync_costs_a_bounded_number_of_queries_per_page(sandbox) -> None:
    account, _ = sandbox_account(sandbox, "klaviyo", seed=11, jobs_per_kind=150)
    with CaptureQueriesContext(connection) as queries:
        run = sync_account(account.pk)
    assert run.outcome == "succeeded", run.error
    assert run.pages >= 2 * len(KINDS)
    # A constant handful per page written, per request sent (the shared token bucket),
    # per listing (gone-marking) and per failed job whose errors were fetched; nothing
    # grows with the number of jobs on a page.
    error_fetches = Job.objects.filter(
        account=account, kind="profile-bulk-import-job", status__in=["failed", "partially_failed"]
    ).count()
    assert error_fetches > 0
    bound = 20 + 10 * run.pages + 4 * run.requests + 2 * len(KINDS) + 6 * error_fetches
    assert len(queries) <= bound


def test_wrong_api_key_fails_in_words_without_retrying_or_leaking(
    sandbox, admin_client, caplog
) -> None:
    wrong_key = "pk_" + "0123456789abcdef" * 2 + "ff"
    caplog.set_level(logging.DEBUG)
    account, _ = sandbox_account(
        sandbox, "klaviyo", seed=1, jobs_per_kind=5, credentials={"api_key": wrong_key}
    )
    before = sandbox.requests()
    run = sync_account(account.pk)
    account.refresh_from_db()

    assert run.outcome == "failed"
    assert "authentication failed" in run.error
    assert account.last_status == "failing"
    assert "authentication failed" in account.last_error
    sent = [e for e in sandbox.requests() if e["seq"] > (before[-1]["seq"] if before else 0)]
    assert len(sent) == 1, "an auth failure must not be retried"
    assert sent[0]["status"] == 401

    assert "authentication failed" in admin_pages_for(admin_client, account, run)[2]
    assert_secret_nowhere(
        wrong_key, client=admin_client, account=account, run=run, log_text=caplog.text
    )


def test_pages_already_fetched_share_a_transaction_of_at_most_ten(sandbox, monkeypatch) -> None:
    account, described = sandbox_account(sandbox, "klaviyo", seed=5, jobs_per_kind=300)
    pages_per_commit: list[int] = []
    pages_then = [0]
    wrapper_class = type(connections["default"])
    real_commit = wrapper_class.commit

    def counting_commit(self) -> None:
        real_commit(self)
        if threading.current_thread() is threading.main_thread() and self.alias == "default":
            pages_per_commit.append(run_totals[0].pages - pages_then[0])
            pages_then[0] = run_totals[0].pages

    run_totals: list[RunTotals] = []
    real_init = sync.AccountSync.__init__

    def remember_totals(self, *args, **kwargs) -> None:
        real_init(self, *args, **kwargs)
        run_totals.append(self.book.totals)

    monkeypatch.setattr(sync.AccountSync, "__init__", remember_totals)
    monkeypatch.setattr(wrapper_class, "commit", counting_commit)
    # The provider answers faster than pages are written: pages wait in the queue.
    monkeypatch.setattr(Prefetched, "ready", _once_the_helper_answered(Prefetched.ready))
    run = sync_account(account.pk)
    assert run.outcome == "succeeded", run.error
    assert_equal_to_state(account, sandbox.state(described["id"]))
    assert sum(pages_per_commit) == run.pages
    assert max(pages_per_commit) > 1, "no page ever joined another's transaction"
    assert max(pages_per_commit) <= sync.PAGES_PER_TRANSACTION


def _once_the_helper_answered(
    real_ready: Callable[[Prefetched], bool],
) -> Callable[[Prefetched], bool]:
    """`ready` that first lets the helper fetch the next page, or find the listing's end.

    A provider that answers faster than pages are written, made certain instead of hoped
    for (a writer slowed by a sleep lost that race on a busy machine). The 60 s only ends
    a wait for a helper that never answers.
    """

    def ready(self: Prefetched) -> bool:
        deadline = time.monotonic() + 60
        while self.worker is not None and self.worker.is_alive() and self.handoff.empty():
            if real_ready(self) or time.monotonic() > deadline:
                break
            time.sleep(0.001)
        return real_ready(self)

    return ready
