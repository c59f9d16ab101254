"""Snapshot retention: delete old history, keep each job's ends and its alerts' episodes.

Snapshots grow with every observed change, for years. Old intermediate states are rarely
read; a job's first snapshot (how it started) and last one (how it is or ended) are what
its page and the exports need. So pruning deletes snapshots observed before the cutoff
unless they are the first or the last of their job (by observed time, then id, the
timeline's own order), whatever their age.

One more snapshot per job may stay: the alert ledger's episode. A job alert's episode is
the id of the job's last snapshot outside the alerting state (`JOB_EVENT_STATES` in
`jobcenter.alerts.ledger`: failed; partly failed; queued or running), recomputed at every
evaluation: a job failed for months has as episode the snapshot from before it failed, a
middle one. Were it deleted, the next evaluation of the still failed job would find an
older snapshot, a new episode, and send the alert again. So for each of those state sets
the job's last snapshot outside it (by id, the ledger's order) is kept, whatever its age:
then no prune can change an episode, and a job still in its state alerts once. The rule
rests on the snapshots alone, not on the alert events that name the episodes: it holds
for rules that have not fired yet, and for an alert recorded while a prune runs (a
NOT EXISTS on the events would miss one committed after the delete's statement began).
It costs at most one snapshot per job in an alerting state (the last before it failed,
say); a job that left the state needs no more than its last.

It walks the table by id range, one short transaction per range: each transaction holds
its locks (on SQLite the write lock, on PostgreSQL the deleted rows) for one batch only,
so syncs writing snapshots and staff reading them wait at most one batch, never the
whole prune. A crash loses nothing: the next run deletes what is left. The rule needs no
extra index: its EXISTS probes all use (job, observed_at). `prune_snapshots` and
`manage.py prune --only snapshots` delete the same rows (`snapshots_that_go`).

The batching is every table's: `delete_in_batches` deletes a queryset's rows window by
window, one transaction each, over `id_ranges` (fixed ranges of ids, the snapshots') or
`key_batches` (the next keys of the rows to delete, any key type); `jobcenter.sync.pruning`
runs it over the other tables that grow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, Max, Min, OuterRef, Q, QuerySet
from django.utils import timezone

from jobcenter.alerts.ledger import JOB_EVENT_STATES
from jobcenter.models import JobSnapshot


@dataclass
class PruneResult:
    """What one prune did, with the timing of its longest transaction."""

    cutoff: datetime
    batch_size: int
    batches: int = 0
    deleted: int = 0
    seconds: float = 0.0
    batch_seconds: list[float] = field(default_factory=list)
    target: str = "snapshots"

    @property
    def max_batch_seconds(self) -> float:
        return max(self.batch_seconds, default=0.0)


def deletable(cutoff: datetime) -> Q:
    """Snapshots older than `cutoff` with an earlier and a later one of the same job, on
    which no alert episode rests (`not_an_episode`)."""
    same_job = JobSnapshot.objects.filter(job_id=OuterRef("job_id"))
    earlier = same_job.filter(
        Q(observed_at__lt=OuterRef("observed_at"))
        | Q(observed_at=OuterRef("observed_at"), id__lt=OuterRef("id"))
    )
    later = same_job.filter(
        Q(observed_at__gt=OuterRef("observed_at"))
        | Q(observed_at=OuterRef("observed_at"), id__gt=OuterRef("id"))
    )
    return Q(observed_at__lt=cutoff) & Q(Exists(earlier)) & Q(Exists(later)) & not_an_episode()


def not_an_episode() -> Q:
    """Snapshots no alert's episode rests on: for every alerting state set, the snapshot
    is in it, or a later snapshot (by id, the ledger's order) of its job is outside it.
    The one that is neither is its job's last outside the set: the episode
    `jobcenter.alerts.ledger.job_rows` computes for the set's event.

    "Later" also asks for an observed time not earlier, so each probe is a range of the
    (job, observed_at) index; that can only keep more (a later id observed earlier,
    workers' clocks apart), never less. A snapshot in a set is not probed for it.
    """
    after = JobSnapshot.objects.filter(
        job_id=OuterRef("job_id"),
        observed_at__gte=OuterRef("observed_at"),
        id__gt=OuterRef("id"),
    )
    condition = Q()
    for states in JOB_EVENT_STATES.values():
        condition &= Q(status__in=states) | Q(Exists(after.exclude(status__in=states)))
    return condition


def old_snapshots(cutoff: datetime) -> QuerySet[JobSnapshot]:
    """Snapshots observed before `cutoff`: the span of ids the batches cover."""
    return JobSnapshot.objects.filter(observed_at__lt=cutoff)


def snapshots_that_go(cutoff: datetime) -> QuerySet[JobSnapshot]:
    """What a snapshot prune deletes, both `prune_snapshots` and `pruning.prune`."""
    return JobSnapshot.objects.filter(deletable(cutoff))


def prune_snapshots(
    days: int | None = None,
    *,
    batch_size: int | None = None,
    pause: float = 0.0,
    now: datetime | None = None,
    dry_run: bool = False,
    progress: Callable[[PruneResult], None] | None = None,
) -> PruneResult:
    """Delete snapshots observed more than `days` ago, except each job's first and last
    and those an alert episode rests on (see the module's docstring).

    `days` defaults to JOBCENTER_SNAPSHOT_RETENTION_DAYS, `batch_size` (snapshot ids per
    transaction) to JOBCENTER_RETENTION_BATCH_SIZE. `pause` seconds are slept between
    batches to leave the database to others on a busy system. With `dry_run`, counts
    what would go and deletes nothing. `progress` is called after each batch, once its
    transaction has committed and before the next one begins (tests/test_retention.py
    lets other connections in there).
    """
    days = settings.JOBCENTER_SNAPSHOT_RETENTION_DAYS if days is None else days
    if days < 1:
        raise ValueError("retention must be at least one day")
    batch_size = batch_size or settings.JOBCENTER_RETENTION_BATCH_SIZE
    if batch_size < 1:
        raise ValueError("batch size must be positive")
    cutoff = (now or timezone.now()) - timedelta(days=days)
    # Snapshots written after this point are new, so newer than the cutoff: the id range
    # fixed here covers everything old enough.
    windows = id_ranges(old_snapshots(cutoff), batch_size)
    return delete_in_batches(
        snapshots_that_go(cutoff),
        windows,
        PruneResult(cutoff=cutoff, batch_size=batch_size),
        dry_run=dry_run,
        pause=pause,
        progress=progress,
    )


def id_ranges(old: QuerySet, batch_size: int) -> Iterator[Q]:
    """Consecutive ranges of `batch_size` ids over the span of the `old` rows' ids.

    The span is read once, at the start: a table whose new rows are never old enough
    (snapshots) has nothing to prune past it. A range costs an index range scan
    whatever the rows in it, so the batches' cost is even.
    """
    bounds = old.aggregate(low=Min("pk"), high=Max("pk"))
    if bounds["low"] is None:
        return
    for low in range(bounds["low"], bounds["high"] + 1, batch_size):
        yield Q(pk__gte=low, pk__lt=low + batch_size)


def key_batches(rows: QuerySet, batch_size: int) -> Iterator[Q]:
    """The keys of the next `batch_size` rows to delete, in key order, batch after batch.

    For rows to delete scattered among rows that stay (error records of gone jobs) or
    keys that are not integers (django-q2's task ids): each batch holds `batch_size` rows
    (the last one fewer), so n rows take ceil(n / batch_size) transactions. Each key list
    is read outside the delete's transaction; the delete checks the condition again.
    """
    last = None
    while True:
        page = rows if last is None else rows.filter(pk__gt=last)
        keys = list(page.order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not keys:
            return
        yield Q(pk__in=keys)
        last = keys[-1]


def delete_in_batches(
    rows: QuerySet,
    windows: Iterable[Q],
    result: PruneResult,
    *,
    dry_run: bool = False,
    pause: float = 0.0,
    progress: Callable[[PruneResult], None] | None = None,
) -> PruneResult:
    """Delete `rows` window by window, each window in its own transaction; fill `result`.

    With `dry_run`, counts each window's rows and deletes nothing. `progress` is called
    after each batch, once its transaction has committed and before the next begins;
    `pause` seconds are slept between batches. Only the rows' own model is counted:
    what a delete sets to NULL elsewhere is no deleted row.
    """
    started = time.perf_counter()
    label = rows.model._meta.label
    for window in windows:
        batch_started = time.perf_counter()
        batch = rows.filter(window)
        if dry_run:
            deleted = batch.count()
        else:
            with transaction.atomic():
                _, by_model = batch.delete()
            deleted = by_model.get(label, 0)
        result.batch_seconds.append(time.perf_counter() - batch_started)
        result.batches += 1
        result.deleted += deleted
        if progress:
            progress(result)
        if pause:
            time.sleep(pause)
    result.seconds = time.perf_counter() - started
    return result
