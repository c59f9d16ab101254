"""Snapshot retention: old history goes, each job's first and last stay, locks stay short."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

from bench.seed import seed
from jobcenter.models import Job, JobSnapshot, ProviderAccount
from jobcenter.sync.retention import prune_snapshots


def make_job(name: str = "a") -> Job:
    account, _ = ProviderAccount.objects.get_or_create(name="retention", provider="klaviyo")
    return Job.objects.create(account=account, kind="k", external_id=name, status="running")


def snap(job: Job, days_ago: float, status: str = "running") -> JobSnapshot:
    return JobSnapshot.objects.create(
        job=job,
        observed_at=timezone.now() - timedelta(days=days_ago),
        status=status,
        digest="d",
    )


def expected_survivors(cutoff: object) -> set[int]:
    """Ids that must stay: everything since the cutoff, and each job's first and last."""
    keep: set[int] = set()
    first: dict[int, tuple] = {}
    last: dict[int, tuple] = {}
    for pk, job_id, observed in JobSnapshot.objects.values_list("id", "job_id", "observed_at"):
        key = (observed, pk)
        if job_id not in first or key < first[job_id]:
            first[job_id] = key
        if job_id not in last or key > last[job_id]:
            last[job_id] = key
        if observed >= cutoff:
            keep.add(pk)
    return keep | {key[1] for key in first.values()} | {key[1] for key in last.values()}


@pytest.mark.django_db
def test_first_and_last_of_each_job_are_kept_whatever_their_age() -> None:
    old_only = make_job("old only")
    a = [snap(old_only, days) for days in (400, 300, 200, 100)]
    mixed = make_job("mixed")
    b = [snap(mixed, 50), snap(mixed, 40), snap(mixed, 5), snap(mixed, 1)]
    single = make_job("single")
    c = snap(single, 500)
    tie = make_job("tie")  # same observed time: the id decides the order
    moment = timezone.now() - timedelta(days=90)
    d = [
        JobSnapshot.objects.create(job=tie, observed_at=moment, status="s", digest="d")
        for _ in range(3)
    ]

    result = prune_snapshots(30, batch_size=2)

    remaining = set(JobSnapshot.objects.values_list("id", flat=True))
    assert remaining == {a[0].pk, a[-1].pk, b[0].pk, b[2].pk, b[3].pk, c.pk, d[0].pk, d[2].pk}
    assert result.deleted == 4
    assert result.batches > 1  # 2 ids per transaction
    # A second run finds nothing more to do.
    assert prune_snapshots(30).deleted == 0


@pytest.mark.django_db
def test_command_uses_the_setting_counts_on_dry_run_and_refuses_nonsense() -> None:
    job = make_job()
    for days in (100, 90, 80, 70, 1):
        snap(job, days)
    out = StringIO()
    call_command("prune_snapshots", stdout=out)
    assert "retention is off" in out.getvalue()
    assert JobSnapshot.objects.count() == 5

    with override_settings(JOBCENTER_SNAPSHOT_RETENTION_DAYS=30):
        out = StringIO()
        call_command("prune_snapshots", "--dry-run", stdout=out)
        assert out.getvalue().startswith("would delete 3 snapshots")
        assert JobSnapshot.objects.count() == 5
        out = StringIO()
        call_command("prune_snapshots", "--batch-size", "1", stdout=out)
        assert out.getvalue().startswith("deleted 3 snapshots")
    assert JobSnapshot.objects.count() == 2
    with pytest.raises(CommandError, match="at least 1"):
        call_command("prune_snapshots", "--days", "0")
    with pytest.raises(ValueError, match="at least one day"):
        prune_snapshots(0)


class Contender(threading.Thread):
    """Short reads or writes of snapshots in a loop, each one timed."""

    def __init__(self, job_ids: list[int], write: bool) -> None:
        super().__init__(daemon=True)
        self.job_ids = job_ids
        self.write = write
        self.latencies: list[float] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            n = 0
            while not self.stop.is_set():
                n += 1
                job_id = self.job_ids[n % len(self.job_ids)]
                started = time.perf_counter()
                if self.write:
                    with transaction.atomic():
                        JobSnapshot.objects.create(job_id=job_id, status="running", digest="w")
                else:
                    list(JobSnapshot.objects.filter(job_id=job_id).order_by("observed_at", "id"))
                self.latencies.append(time.perf_counter() - started)
                time.sleep(0.002)
        except BaseException as exc:  # re-raised by the test
            self.error = exc
        finally:
            connection.close()


@pytest.mark.django_db(transaction=True)
def test_pruning_a_large_table_never_blocks_readers_or_writers_beyond_one_batch() -> None:
    seeded = seed(24_000, accounts=4, small_jobs=100, days=365, drop_indexes=False)
    assert seeded.snapshots > 100_000
    writer_job = Job.objects.create(
        account_id=seeded.accounts[0], kind="k", external_id="writer", status="running"
    )
    cutoff_days = 120
    expected = expected_survivors(seeded.now - timedelta(days=cutoff_days))
    assert len(expected) < seeded.snapshots * 0.7  # a good share of the table goes

    contenders = [
        Contender(list(range(1, seeded.jobs + 1, 97)), write=False),
        Contender([writer_job.pk], write=True),
    ]
    for contender in contenders:
        contender.start()
    time.sleep(0.2)
    result = prune_snapshots(cutoff_days, batch_size=4_000, now=seeded.now)
    time.sleep(0.2)
    for contender in contenders:
        contender.stop.set()
        contender.join()
        assert contender.error is None, contender.error

    # (a) exactly the expected rows remain (the writer's new rows aside).
    remaining = set(
        JobSnapshot.objects.exclude(job=writer_job).values_list("id", flat=True).iterator()
    )
    assert remaining == expected
    assert result.deleted == seeded.snapshots - len(expected)

    # (b) nobody waited longer than about one batch, though the prune took many.
    reader, writer = (max(c.latencies) for c in contenders)
    longest_batch = result.max_batch_seconds
    report = (
        f"{result.batches} batches in {result.seconds:.2f}s, longest {longest_batch:.3f}s; "
        f"reader waited at most {reader:.3f}s, writer {writer:.3f}s "
        f"({len(contenders[1].latencies)} writes)"
    )
    assert result.batches >= 20, report
    assert len(contenders[0].latencies) > 50 and len(contenders[1].latencies) > 50, report
    # Readers are never blocked (WAL on SQLite, MVCC on PostgreSQL) beyond a batch.
    assert reader <= longest_batch + 0.1, report
    # A writer waits for the batch in progress. On SQLite its busy handler polls every
    # up to 100 ms and may miss the short gaps between batches more than once, so its
    # wait is bounded loosely: never the whole prune, as one long transaction would be.
    assert writer < result.seconds / 2, report
