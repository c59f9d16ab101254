"""`manage.py prune_snapshots [--days N]`: delete old history, keep each job's ends and
the snapshots its alerts' episodes rest on.

Run it daily (cron, a django-q2 Schedule, a Kubernetes CronJob); see jobcenter.sync.retention.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from jobcenter.management.base import AuditedCommand
from jobcenter.sync.retention import PruneResult, prune_snapshots


class Command(AuditedCommand):
    help = (
        "Delete snapshots observed more than N days ago (JOBCENTER_SNAPSHOT_RETENTION_DAYS), "
        "except the first and last of each job and its last before each alerting state "
        "(the episode of its alerts), in short batches."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help="retention in days (default: JOBCENTER_SNAPSHOT_RETENTION_DAYS)",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help="snapshot ids per transaction (default: JOBCENTER_RETENTION_BATCH_SIZE)",
        )
        parser.add_argument(
            "--pause", type=float, default=0.0, help="seconds to sleep between batches"
        )
        parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"]
        if days is None:
            days = settings.JOBCENTER_SNAPSHOT_RETENTION_DAYS
            if days < 1:
                self.stdout.write(
                    "retention is off (JOBCENTER_SNAPSHOT_RETENTION_DAYS is 0): nothing pruned"
                )
                return
        if days < 1:
            raise CommandError("--days must be at least 1")
        if options["batch_size"] is not None and options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        verbose = options["verbosity"] > 1

        def progress(result: PruneResult) -> None:
            if verbose and result.batches % 100 == 0:
                self.stdout.write(f"  {result.batches} batches, {result.deleted:,} deleted")

        result = prune_snapshots(
            days,
            batch_size=options["batch_size"],
            pause=options["pause"],
            dry_run=options["dry_run"],
            progress=progress,
        )
        verb = "would delete" if options["dry_run"] else "deleted"
        self.stdout.write(
            f"{verb} {result.deleted:,} snapshots observed before "
            f"{result.cutoff:%Y-%m-%d %H:%M} UTC (first and last of each job, and its alerts' "
            f"episodes, kept) in "
            f"{result.batches} batches of {result.batch_size:,} ids, {result.seconds:.1f}s; "
            f"longest batch {result.max_batch_seconds * 1000:.0f} ms"
        )
