"""`manage.py prune [--only TABLE ...] [--dry-run]`: every table that grows, by its age.

Each table has its own retention setting (0: off) and keeps what Job Center still reads
(jobcenter.sync.pruning; docs/operations.md#retention). Run it daily (cron, or
JOBCENTER_PRUNE_DAILY with `setup_schedules`). `prune_snapshots` still prunes snapshots
alone.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import CommandError, CommandParser

from jobcenter.management.base import AuditedCommand
from jobcenter.sync.pruning import TARGET_NAMES, prune
from jobcenter.sync.retention import PruneResult

PROGRESS_SECONDS = 1.0  # at most one progress line a second, per table


class Command(AuditedCommand):
    help = (
        "Delete old rows of every table that grows (snapshots, sync runs, error records of "
        "gone jobs, alert events and deliveries, django-q2 task rows, the audit log), each "
        "by its own retention setting, keeping what is still read, in short batches."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--only",
            nargs="+",
            choices=TARGET_NAMES,
            metavar="TABLE",
            help=f"prune only these: {', '.join(TARGET_NAMES)}",
        )
        parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help="rows per transaction, snapshots: ids (default: JOBCENTER_RETENTION_BATCH_SIZE)",
        )
        parser.add_argument(
            "--pause", type=float, default=0.0, help="seconds to sleep between batches"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] is not None and options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        if options["pause"] < 0:
            raise CommandError("--pause must not be negative")
        dry_run = options["dry_run"]
        verb = "would delete" if dry_run else "deleted"
        shown: dict[str, float] = {}

        def progress(result: PruneResult) -> None:
            now = time.monotonic()
            if now - shown.get(result.target, 0.0) >= PROGRESS_SECONDS:
                shown[result.target] = now
                self.stdout.write(
                    f"  {result.target}: {result.batches:,} batches, {result.deleted:,} {verb}"
                )

        show_progress = options["verbosity"] > 1 or self.stdout.isatty()
        outcomes = prune(
            options["only"],
            batch_size=options["batch_size"],
            pause=options["pause"],
            dry_run=dry_run,
            progress=progress if show_progress else None,
        )
        for outcome in outcomes:
            target, result = outcome.target, outcome.result
            if result is None:
                self.stdout.write(f"{target.name}: off ({target.setting} is 0)")
                continue
            self.stdout.write(
                f"{target.name}: {verb} {result.deleted:,} {target.rows} before "
                f"{result.cutoff:%Y-%m-%d %H:%M} UTC ({outcome.days} days; kept whatever "
                f"their age: {target.protects}) in {result.batches:,} batches, "
                f"{result.seconds:.1f}s; longest batch {result.max_batch_seconds * 1000:.0f} ms"
            )
