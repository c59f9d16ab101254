"""Snapshot retention: delete old history, keep each job's first and last snapshot.

Snapshots grow with every observed change, for years. Old intermediate states are rarely
read; a job's first snapshot (how it started) and last one (how it is or ended) are what
its page and the exports need. So pruning deletes snapshots observed before the cutoff
unless they are the first or the last of their job (by observed time, then id, the
timeline's own order), whatever their age.

It walks the table by id range, one short transaction per range: each transaction holds
its locks (on SQLite the write lock, on PostgreSQL the deleted rows) for one batch only,
so syncs writing snapshots and staff reading them wait at most one batch, never the
whole prune. A crash loses nothing: the next run deletes what is left. Keeping the first
and last needs no extra index: the two EXISTS probes use (job, observed_at).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, Max, Min, OuterRef, Q
from django.utils import timezone

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

    @property
    def max_batch_seconds(self) -> float:
        return max(self.batch_seconds, default=0.0)


def deletable(cutoff: datetime) -> Q:
    """Snapshots older than `cutoff` with an earlier and a later one of the same job."""
    same_job = JobSnapshot.objects.filter(job_id=OuterRef("job_id"))
    earlier = same_job.filter(
        Q(observed_at__lt=OuterRef("observed_at"))
        | Q(observed_at=OuterRef("observed_at"), id__lt=OuterRef("id"))
    )
    later = same_job.filter(
        Q(observed_at__gt=OuterRef("observed_at"))
        | Q(observed_at=OuterRef("observed_at"), id__gt=OuterRef("id"))
    )
    return Q(observed_at__lt=cutoff) & Q(Exists(earlier)) & Q(Exists(later))


def prune_snapshots(
    days: int | None = None,
    *,
    batch_size: int | None = None,
    pause: float = 0.0,
    now: datetime | None = None,
    dry_run: bool = False,
    progress: Callable[[PruneResult], None] | None = None,
) -> PruneResult:
    """Delete snapshots observed more than `days` ago, except each job's first and last.

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
    result = PruneResult(cutoff=cutoff, batch_size=batch_size)
    started = time.perf_counter()
    # Snapshots written after this point are new, so newer than the cutoff: the id range
    # fixed here covers everything old enough.
    bounds = JobSnapshot.objects.filter(observed_at__lt=cutoff).aggregate(
        low=Min("id"), high=Max("id")
    )
    if bounds["low"] is None:
        result.seconds = time.perf_counter() - started
        return result
    condition = deletable(cutoff)
    for low in range(bounds["low"], bounds["high"] + 1, batch_size):
        batch_started = time.perf_counter()
        rows = JobSnapshot.objects.filter(id__gte=low, id__lt=low + batch_size).filter(condition)
        if dry_run:
            deleted = rows.count()
        else:
            with transaction.atomic():
                deleted, _ = rows.delete()
        result.batch_seconds.append(time.perf_counter() - batch_started)
        result.batches += 1
        result.deleted += deleted
        if progress:
            progress(result)
        if pause:
            time.sleep(pause)
    result.seconds = time.perf_counter() - started
    return result
