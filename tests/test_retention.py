"""Snapshot retention: old history goes, each job's first and last stay, and the snapshots
its alerts' episodes rest on, so no alert is sent twice; locks stay short."""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from io import StringIO

import pytest
from django.core import mail
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.models import Min
from django.test import override_settings
from django.utils import timezone

from bench.seed import seed
from jobcenter.alerts.ledger import JOB_EVENT_STATES
from jobcenter.models import (
    AlertChannel,
    AlertDelivery,
    AlertEvent,
    AlertRule,
    Job,
    JobSnapshot,
    ProviderAccount,
)
from jobcenter.sync.pruning import prune
from jobcenter.sync.retention import PruneResult, prune_snapshots
from providers.base import Status
from tests.factories import observe_job


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
    """Ids that must stay: everything since the cutoff, each job's first and last, and its
    last (by id) outside each alerting state set, an alert's episode."""
    keep: set[int] = set()
    first: dict[int, tuple] = {}
    last: dict[int, tuple] = {}
    episodes: dict[tuple[int, int], int] = {}
    rows = JobSnapshot.objects.values_list("id", "job_id", "observed_at", "status")
    for pk, job_id, observed, status in rows:
        key = (observed, pk)
        if job_id not in first or key < first[job_id]:
            first[job_id] = key
        if job_id not in last or key > last[job_id]:
            last[job_id] = key
        if observed >= cutoff:
            keep.add(pk)
        for n, states in enumerate(JOB_EVENT_STATES.values()):
            if status not in states:
                episodes[job_id, n] = max(episodes.get((job_id, n), 0), pk)
    ends = {key[1] for key in first.values()} | {key[1] for key in last.values()}
    return keep | ends | set(episodes.values())


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


def prune_snapshots_by(entry: str, dry_run: bool) -> int:
    """Prune snapshots by one of the three ways in; returns what it deleted (or would)."""
    if entry == "prune_snapshots":
        return prune_snapshots(dry_run=dry_run, batch_size=2).deleted
    if entry == "prune":
        outcome = prune(["snapshots"], dry_run=dry_run, batch_size=2)[0]
        assert outcome.result is not None
        return outcome.result.deleted
    out = StringIO()
    call_command("prune", "--only", "snapshots", *(["--dry-run"] if dry_run else []), stdout=out)
    return int(out.getvalue().split()[3 if dry_run else 2].replace(",", ""))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("entry", ["prune_snapshots", "prune", "command"])
@override_settings(JOBCENTER_SNAPSHOT_RETENTION_DAYS=30, JOBCENTER_SITE_URL="http://jc.test")
def test_pruning_snapshots_never_makes_a_job_still_failed_alert_again(entry: str) -> None:
    """The ledger's episode of a failed job is its last snapshot before it failed, a
    middle one: pruning keeps it, so the job, still failed, is the same episode."""
    channel = AlertChannel.objects.create(name="ops", kind="email", recipients="ops@example.com")
    AlertRule.objects.create(name="failures", channel=channel, on_job_failed=True)
    account = ProviderAccount.objects.create(name="ledger", provider="klaviyo")
    ProviderAccount.objects.filter(pk=account.pk).update(lease_owner="test")
    observe_job(account, Status.RUNNING, 0)
    observe_job(account, Status.QUEUED, 0)  # requeued by the provider
    observe_job(account, Status.RUNNING, 0)
    observe_job(account, Status.FAILED, 10)  # the alert: episode = the snapshot before
    observe_job(account, Status.FAILED, 9)  # still failed, counts moved: no alert
    event = AlertEvent.objects.get()
    assert (AlertDelivery.objects.count(), len(mail.outbox)) == (1, 1)
    snapshots = list(JobSnapshot.objects.order_by("id").values_list("id", "status"))
    assert [status for _, status in snapshots] == ["running", "queued", "running"] + ["failed"] * 2
    assert event.episode == snapshots[2][0]  # the ledger's: the last one not failed
    JobSnapshot.objects.update(observed_at=timezone.now() - timedelta(days=40))  # all old

    would = prune_snapshots_by(entry, dry_run=True)
    deleted = prune_snapshots_by(entry, dry_run=False)

    # Kept: the first, the episode's, the last; the two middle ones went.
    kept = set(JobSnapshot.objects.values_list("id", flat=True))
    assert kept == {snapshots[0][0], snapshots[2][0], snapshots[4][0]}
    assert would == deleted == 2
    assert prune_snapshots_by(entry, dry_run=False) == 0
    observe_job(account, Status.FAILED, 8)  # still failed, evaluated again: the same episode
    assert list(AlertEvent.objects.all()) == [event]
    assert (AlertDelivery.objects.count(), len(mail.outbox)) == (1, 1)
    observe_job(account, Status.RUNNING, 0)  # retried, and failed again: a new episode
    observe_job(account, Status.FAILED, 10)
    assert AlertEvent.objects.count() == 2
    assert (AlertDelivery.objects.count(), len(mail.outbox)) == (2, 2)


class Worker(threading.Thread):
    """A thread with its own database connection that runs what it is handed, one at a time.

    The prune runs on the test's connection; a worker is "another client" (a staff page
    reading, a sync writing) whose call either completes or fails while the prune waits.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.tasks: queue.Queue[Callable[[], object] | None] = queue.Queue()
        self.results: queue.Queue[tuple[object, BaseException | None]] = queue.Queue()

    def run(self) -> None:
        try:
            while (task := self.tasks.get()) is not None:
                try:
                    self.results.put((task(), None))
                except BaseException as exc:  # handed back to the caller
                    self.results.put((None, exc))
        finally:
            connection.close()

    def call(self, task: Callable[[], object]) -> object:
        """Run `task` on this worker's connection; fail if it errs or never completes.

        The 60 s bound is no performance claim: a call that waits on a lock the prune
        holds fails after the SQLite busy timeout (30 s) instead, and PostgreSQL never
        makes these statements wait on a prune's deletes.
        """
        self.tasks.put(task)
        try:
            value, error = self.results.get(timeout=60)
        except queue.Empty:
            pytest.fail("another connection's statement did not complete within 60 s")
        if error is not None:
            raise error
        return value

    def finish(self) -> None:
        self.tasks.put(None)
        self.join(timeout=60)
        assert not self.is_alive()


@pytest.mark.django_db(transaction=True)
def test_pruning_a_large_table_never_blocks_readers_or_writers_beyond_one_batch() -> None:
    """Each batch is its own transaction; readers read through it; writers get in between.

    Asserted by structure, not by timing: while a batch's delete is done but not yet
    committed, another connection reads the batch's rows (and still sees them); after
    each batch, before the next starts, another connection writes a snapshot and sees
    the batch's deletions committed.
    """
    seeded = seed(24_000, accounts=4, small_jobs=100, days=365, drop_indexes=False)
    assert seeded.snapshots > 100_000
    writer_job = Job.objects.create(
        account_id=seeded.accounts[0], kind="k", external_id="writer", status="running"
    )
    cutoff_days = 120
    batch_size = 4_000
    cutoff = seeded.now - timedelta(days=cutoff_days)
    expected = expected_survivors(cutoff)
    assert len(expected) < seeded.snapshots * 0.7  # a good share of the table goes

    # The prune walks ids from the oldest-but-cut one in fixed ranges: batch i covers
    # [low + i * batch_size, low + (i + 1) * batch_size).
    low = JobSnapshot.objects.filter(observed_at__lt=cutoff).aggregate(low=Min("id"))["low"]
    before: Counter[int] = Counter()
    after: Counter[int] = Counter()
    for pk in JobSnapshot.objects.filter(id__gte=low).values_list("id", flat=True).iterator():
        before[(pk - low) // batch_size] += 1
        if pk in expected:
            after[(pk - low) // batch_size] += 1

    def rows_in_batch(index: int) -> Callable[[], int]:
        start = low + index * batch_size
        return lambda: JobSnapshot.objects.filter(id__gte=start, id__lt=start + batch_size).count()

    def write_snapshot() -> int:
        with transaction.atomic():
            return JobSnapshot.objects.create(job=writer_job, status="running", digest="w").pk

    reader, writer = Worker(), Worker()
    reader.start()
    writer.start()
    deletes: list[tuple[bool, list[str]]] = []  # (in a transaction, its savepoints) per delete
    commits: list[int] = []  # the delete count when each batch's transaction committed
    read_during_batch: list[int] = []
    written_between: list[int] = []
    seen_after_batch: list[int] = []

    def during_batch(
        execute: Callable[..., object], sql: str, params: object, many: bool, context: dict
    ) -> object:
        outcome = execute(sql, params, many, context)
        if sql.lstrip().upper().startswith("DELETE") and JobSnapshot._meta.db_table in sql:
            # The batch's rows are deleted, its transaction still open: on SQLite it holds
            # the write lock, on PostgreSQL the deleted rows' locks.
            savepoints = [sid for sid in connection.savepoint_ids if sid]
            deletes.append((connection.in_atomic_block, savepoints))
            index = len(deletes) - 1
            transaction.on_commit(lambda: commits.append(len(deletes)))
            read_during_batch.append(reader.call(rows_in_batch(index)))
        return outcome

    def between_batches(result: PruneResult) -> None:
        assert not connection.in_atomic_block  # the prune holds no transaction here
        written_between.append(writer.call(write_snapshot))
        seen_after_batch.append(writer.call(rows_in_batch(result.batches - 1)))

    try:
        with connection.execute_wrapper(during_batch):
            result = prune_snapshots(
                cutoff_days, batch_size=batch_size, now=seeded.now, progress=between_batches
            )
    finally:
        reader.finish()
        writer.finish()

    # (a) exactly the expected rows remain (the writer's new rows aside).
    remaining = set(
        JobSnapshot.objects.exclude(job=writer_job).values_list("id", flat=True).iterator()
    )
    assert remaining == expected
    assert result.deleted == seeded.snapshots - len(expected)
    assert result.batches >= 20  # a prune of many batches, not one

    batches = range(result.batches)
    # (b) each batch is its own transaction: one delete per batch, each in an outermost
    # transaction (no savepoint inside a longer one), committed before the next began.
    assert deletes == [(True, [])] * result.batches
    assert commits == [i + 1 for i in batches]
    # (c) a reader completed while each batch's transaction was open, and read the rows
    # as they were before it (its deletes were not yet committed).
    assert read_during_batch == [before[i] for i in batches]
    # (d) a writer got in after each batch, before the next, and found it committed.
    assert seen_after_batch == [after[i] for i in batches]
    assert set(JobSnapshot.objects.filter(job=writer_job).values_list("id", flat=True)) == set(
        written_between
    )
    assert len(written_between) == result.batches
