"""Gone means gone: a job is marked gone only when the provider confirms it.

Offset pages shift when the provider deletes jobs during a sweep, or between the runs of a
sweep resumed from its saved cursor: the jobs behind the deleted ones move up a page and
that sweep never returns them. Such a job is still there, so it must not be marked gone,
and no history row may repeat the one before it (issue 18, item 7).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from itertools import pairwise

import pytest
from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.test import override_settings
from django.utils import timezone

from jobcenter.models import Job, JobSnapshot, ProviderAccount, SyncRun
from jobcenter.sync.engine import AccountSync, sync_account
from jobcenter.sync.refresh import GONE_FROM_LISTING, UnlistedJobs
from providers.base import JobPage, JobRecord, Status
from providers.elasticpath import ElasticPathProvider
from tests.factories import sandbox_account

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = 5
ONE_TRY = {**settings.JOBCENTER_RETRY, "max_attempts": 1}


class Store:
    """An Elastic Path sandbox store, and deletions timed between the sync's page requests."""

    def __init__(self, sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sandbox = sandbox
        self.account, described = sandbox_account(sandbox, "elasticpath", seed=5, jobs_per_kind=8)
        self.id = described["id"]
        self.deleted: list[str] = []  # external ids, in the order the store deleted them
        # After the n-th page a sweep's request returned, before it asks for the next one.
        self.after_page: dict[int, Callable[[], None]] = {}
        real = ElasticPathProvider.iter_pages

        def iter_pages(provider, listing: str, cursor: str | None = None) -> Iterator[JobPage]:
            for n, page in enumerate(real(provider, listing, cursor), start=1):
                yield page
                action = self.after_page.get(n)
                if action is not None:
                    action()

        monkeypatch.setattr(ElasticPathProvider, "iter_pages", iter_pages)

    def ids(self) -> list[str]:
        """The store's job ids in its listing order (newest first)."""
        return [job["id"] for job in self.sandbox.state(self.id)["jobs"]]

    def delete_at(self, *positions: int) -> Callable[[], None]:
        """An action: delete the jobs now at these offsets of the listing."""

        def delete() -> None:
            ids = self.ids()
            doomed = [ids[p] for p in positions]
            answer = self.sandbox.control(self.id, "delete_jobs", ids=doomed)
            assert answer == {"deleted": doomed, "unknown": []}
            self.deleted.extend(doomed)

        return delete

    def fail_requests(self) -> None:
        """Every request fails (503) from now on: the sweep stops at its saved cursor."""
        self.sandbox.control(self.id, "faults", rate=1.0, mix={"503": 1})

    def sync(self, **after_page: Callable[[], None]) -> SyncRun:
        """One run; `page3=action` runs the action once the sweep has read its third page."""
        self.after_page = {int(n.removeprefix("page")): act for n, act in after_page.items()}
        try:
            with override_settings(
                JOBCENTER_RETRY=ONE_TRY,
                JOBCENTER_PROVIDER_OPTIONS={
                    **settings.JOBCENTER_PROVIDER_OPTIONS,
                    "elasticpath": {"page_limit": PAGE},
                },
            ):
                run = sync_account(self.account.pk)
        finally:
            self.sandbox.control(self.id, "faults", rate=0)
            self.after_page = {}
        self.assert_gone_means_gone()
        return run

    def jobs(self) -> QuerySet[Job]:
        return Job.objects.filter(account=self.account)

    def assert_gone_means_gone(self) -> None:
        """No job the store still has is marked gone; no history row repeats its previous."""
        wrongly_gone = self.jobs().filter(external_id__in=self.ids(), gone_at__isnull=False)
        assert not wrongly_gone.exists(), list(wrongly_gone.values("external_id", "gone_reason"))
        assert repeated_history(self.account) == []

    def skipped(self, sweep_started: datetime) -> set[str]:
        """Finished jobs the store still has that the sweep begun then did not return."""
        return set(
            self.jobs()
            .filter(external_id__in=self.ids(), is_terminal=True, last_seen_at__lt=sweep_started)
            .values_list("external_id", flat=True)
        )

    def gone(self) -> dict[str, str]:
        """Jobs marked gone, with the reason."""
        return dict(
            self.jobs().filter(gone_at__isnull=False).values_list("external_id", "gone_reason")
        )


def repeated_history(account: ProviderAccount) -> list[tuple[int, str, str]]:
    """Snapshots equal to the one before them for the same job (same payload and status)."""
    rows = (
        JobSnapshot.objects.filter(job__account=account)
        .order_by("job_id", "observed_at", "id")
        .values_list("job_id", "digest", "status")
    )
    return [after for before, after in pairwise(rows) if before == after]


def test_offset_pages_that_shift_under_deletions_mark_only_deleted_jobs_gone(
    sandbox, monkeypatch
) -> None:
    """Every sync runs right after the previous one, as the fastest sweeps do; the
    invariants are checked after each (`Store.sync`)."""
    store = Store(sandbox, monkeypatch)
    first = store.sync()
    assert first.outcome == "succeeded", first.error
    assert store.jobs().count() == len(store.ids()) == 40
    queued = set(store.jobs().filter(is_terminal=False).values_list("external_id", flat=True))
    assert set(store.ids()[:5]) == queued  # the newest five, one per type, still queued

    # Sweep 2 pages while the store deletes a queued job of page 1 once page 1 is read,
    # and two finished jobs of page 3 once page 3 is read: the jobs behind them move up
    # a page, and this sweep never returns them.
    second = store.sync(page1=store.delete_at(1), page3=store.delete_at(10, 12))
    assert second.outcome == "succeeded", second.error
    during_second = store.deleted[:]
    assert len(store.skipped(second.started_at)) == 3  # the old rule marked these gone
    assert store.gone() == {}  # this sweep returned each deleted job before it went

    # Sweep 3 stops after four pages (the store fails), its cursor saved; jobs it read
    # are deleted before the next run resumes it, past them.
    third = store.sync(page4=store.fail_requests)
    assert third.outcome == "partial"
    state = ProviderAccount.objects.get(pk=store.account.pk).sync_state["pcm-jobs"]
    assert state["cursor"] == str(4 * PAGE)
    store.delete_at(2, 8, 9)()
    between_runs = store.deleted[len(during_second) :]
    fourth = store.sync()
    assert fourth.outcome == "succeeded", fourth.error
    assert len(store.skipped(third.started_at)) == 3  # the old rule marked these gone
    # A queued job the store deleted is asked for by id once a complete sweep misses it,
    # and the store's 404 confirms it; a finished one takes two complete sweeps.
    queued_deleted = queued & set(store.deleted)
    assert len(queued_deleted) == 2
    assert set(store.gone()) == queued_deleted
    assert all(reason.startswith("expired at the provider") for reason in store.gone().values())

    # Sweep 5 is the second complete sweep to miss the finished jobs deleted during sweep
    # 2: gone. The store deletes a finished job of page 1 as it pages.
    fifth = store.sync(page1=store.delete_at(4))
    assert fifth.outcome == "succeeded", fifth.error
    during_fifth = store.deleted[len(during_second) + len(between_runs) :]
    assert len(store.skipped(fifth.started_at)) == 1
    gone = store.gone()
    assert set(gone) == set(during_second) | queued_deleted
    assert {gone[i] for i in set(during_second) - queued} == {GONE_FROM_LISTING}

    sixth = store.sync()  # the second to miss the ones deleted between runs 3 and 4
    assert sixth.outcome == "succeeded", sixth.error
    assert set(store.gone()) == set(store.deleted) - set(during_fifth)
    seventh = store.sync()
    assert seventh.outcome == "succeeded", seventh.error
    assert set(store.gone()) == set(store.deleted)
    assert len(store.deleted) == 7
    # The whole history: a snapshot for each job when first seen, one more for each that
    # expired at the provider, nothing else (nothing else changed at the store).
    assert JobSnapshot.objects.filter(job__account=store.account).count() == 40 + 2


def test_a_gone_job_back_unchanged_loses_its_mark_without_a_history_row(sandbox) -> None:
    """Back unchanged: the mark goes, no snapshot. Back changed, or back in another status
    than the one it was ended with: a change, with its snapshot."""
    account, _ = sandbox_account(sandbox, "klaviyo", seed=5, jobs_per_kind=0)
    run = SyncRun.objects.create(account=account, trigger="manual")
    engine = AccountSync(account, run, owner="test")
    ProviderAccount.objects.filter(pk=account.pk).update(lease_owner="test")

    def record(i: int, status: Status) -> JobRecord:
        return JobRecord(
            kind="catalog-item-bulk-create-job",
            external_id=f"job-{i}",
            status=status,
            provider_status=status.value,
            raw={"id": f"job-{i}", "status": status.value},
        )

    def write(*records: JobRecord) -> None:
        with transaction.atomic():
            engine.pages.apply_records(records)

    write(record(1, Status.SUCCEEDED), record(2, Status.SUCCEEDED), record(3, Status.RUNNING))
    jobs = Job.objects.filter(account=account)
    # 1: gone from a listing; 2: gone, and back changed; 3: the provider said it expired.
    then = timezone.now()
    jobs.filter(external_id__in=["job-1", "job-2"]).update(
        gone_at=then, gone_reason=GONE_FROM_LISTING
    )
    # mark_not_found, what refresh.py does with a 404, asks no provider.
    unlisted = UnlistedJobs(account, None, engine.pages, engine.book, engine.save_progress)
    with transaction.atomic():
        unlisted.mark_not_found([(jobs.get(external_id="job-3"), "job not found")], then)
    changed_before = engine.book.totals.jobs_changed

    write(record(1, Status.SUCCEEDED), record(2, Status.FAILED), record(3, Status.RUNNING))

    back = {job.external_id: job for job in jobs}
    assert all(job.gone_at is None and job.gone_reason == "" for job in back.values())
    assert back["job-1"].last_seen_at > then
    assert back["job-1"].last_changed_at > then  # seen again: a change to follow (changed_after)
    assert back["job-3"].status == Status.RUNNING.value and not back["job-3"].is_terminal
    history = {
        external_id: list(
            JobSnapshot.objects.filter(job__external_id=external_id, job__account=account)
            .order_by("id")
            .values_list("status", flat=True)
        )
        for external_id in back
    }
    assert history == {
        "job-1": ["succeeded"],  # back unchanged: no new row
        "job-2": ["succeeded", "failed"],
        "job-3": ["running", "expired", "running"],
    }
    assert engine.book.totals.jobs_changed - changed_before == 2
