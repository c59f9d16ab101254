"""Sync benchmark: ratios measured in one run against the Klaviyo sandbox.

Prints, for N sandbox jobs (default 100,000):
- bare fetch: the time to fetch and parse every page the sync fetches (the listings,
  and the error pages of failed jobs, as many as one run fetches) into records with the
  same provider client, writing nothing;
- sync: the time of a full first sync of the same jobs, and its ratio to bare fetch
  (target <= 2.0), then an unchanged re-sync and its ratio;
- naive: a per-row `update_or_create` loop over 10,000 of those records against the
  engine's page writes of the same records (target speed-up >= 10x);
- peak memory (max RSS) of this process.

Usage: python bench/sync.py [--jobs 100000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def configure_django(database_url: str | None) -> None:
    from cryptography.fernet import Fernet

    workdir = tempfile.mkdtemp(prefix="jobcenter-bench-")
    os.environ["DATABASE_URL"] = database_url or f"sqlite:///{workdir}/bench.sqlite3"
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key")
    os.environ["JOBCENTER_FERNET_KEYS"] = Fernet.generate_key().decode()
    os.environ["JOBCENTER_ALLOW_LOOPBACK_PROVIDERS"] = "1"
    os.environ["DJANGO_SETTINGS_MODULE"] = "jobcenter.settings"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    if database_url:
        call_command("flush", interactive=False, verbosity=0)


def bare_fetch(provider: Any, keep: int = 0) -> tuple[int, list[Any]]:
    """Fetch and parse every page a first sync fetches, writing nothing.

    The listings' pages, then the error pages of the failed jobs whose payloads carry no
    error records, as many as one sync run fetches (JOBCENTER_ERROR_FETCHES_PER_RUN,
    JOBCENTER_MAX_ERRORS_PER_JOB): the same requests as the sync, so the ratio is the
    cost of the writes. Returns the number of jobs and the first `keep` records.
    """
    from itertools import islice

    from django.conf import settings

    from providers.base import FAILED_STATUSES

    fetched, sample, need_errors = 0, [], []
    for listing in provider.listing_names():
        for page in provider.iter_pages(listing):
            fetched += len(page.records)
            if len(sample) < keep:
                sample.extend(page.records[: keep - len(sample)])
            need_errors += [
                r for r in page.records if r.status in FAILED_STATUSES and r.errors is None
            ]
    for record in need_errors[: settings.JOBCENTER_ERROR_FETCHES_PER_RUN]:
        errors = provider.iter_errors(record.kind, record.external_id)
        for _ in islice(errors, settings.JOBCENTER_MAX_ERRORS_PER_JOB):
            pass
    return fetched, sample


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--naive-jobs", type=int, default=10_000)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args()
    configure_django(args.database_url)

    from django.db import connection, transaction

    from jobcenter.accounts import build_provider, create_account
    from jobcenter.models import Job, JobError, JobSnapshot, SyncRun
    from jobcenter.sync.engine import AccountSync, sync_account
    from providers.sandbox.client import start_sandbox, stop_sandbox

    process, sandbox = start_sandbox(
        args=[
            "--jobs-per-kind",
            "0",
            "--no-rate-limits",
            "--no-log-bodies",
            "--providers",
            "klaviyo",
        ]
    )
    try:
        kinds = 13
        described = sandbox.create_account(
            "klaviyo",
            seed=42,
            jobs_per_kind=math.ceil(args.jobs / kinds),
            frozen=True,
            rate_limits=False,
        )
        total = len(sandbox.state(described["id"])["jobs"])

        def new_account(name: str):
            account = create_account(
                name, "klaviyo", described["credentials"], base_url=sandbox.base_url("klaviyo")
            )
            # The sandbox runs without limits here: measure the engine, not the pacing.
            account.rate_limits = {"*": [[100_000, 1]]}
            account.save(update_fields=["rate_limits"])
            return account

        account = new_account("bench")
        print(f"database: {connection.vendor}; sandbox jobs: {total:,}")

        # 1. bare fetch and parse, same client, no writes
        provider = build_provider(account)
        started = time.perf_counter()
        # The sample is kept for the naive comparison; the rest is parsed and dropped.
        fetched_count, sample = bare_fetch(provider, keep=args.naive_jobs)
        fetch_seconds = time.perf_counter() - started
        pages = provider.client.counters.requests
        print(
            f"bare fetch: {fetched_count:,} jobs, {pages} pages in {fetch_seconds:.2f}s "
            f"({fetched_count / fetch_seconds:,.0f} jobs/s)"
        )

        # 2. full first sync, then an unchanged re-sync
        started = time.perf_counter()
        run = sync_account(account.pk)
        sync_seconds = time.perf_counter() - started
        assert run.outcome == "succeeded", run.error
        started = time.perf_counter()
        resync = sync_account(account.pk)
        resync_seconds = time.perf_counter() - started
        assert resync.snapshots_written == 0, "an unchanged re-sync wrote snapshots"
        print(
            f"first sync: {run.jobs_created:,} jobs in {sync_seconds:.2f}s "
            f"({run.jobs_created / sync_seconds:,.0f} jobs/s)"
        )
        print(f"re-sync (nothing changed): {resync_seconds:.2f}s, 0 snapshots")

        # 3. naive per-row loop against the engine: the same records and the same rows
        #    (job, snapshot, inline error records), database writes only
        naive_account = new_account("bench-naive")
        started = time.perf_counter()
        for record in sample:
            with transaction.atomic():
                job, _ = Job.objects.update_or_create(
                    account=naive_account,
                    kind=record.kind,
                    external_id=record.external_id,
                    defaults={
                        "provider": "klaviyo",
                        "status": record.status.value,
                        "provider_status": record.provider_status,
                        "total_count": record.total_count,
                        "completed_count": record.completed_count,
                        "failed_count": record.failed_count,
                        "created_at": record.created_at,
                        "completed_at": record.completed_at,
                        "expires_at": record.expires_at,
                        "payload": record.raw,
                        "digest": record.digest,
                        "is_terminal": record.is_terminal,
                    },
                )
                JobSnapshot.objects.create(
                    job=job, status=job.status, payload=record.raw, digest=record.digest
                )
                if record.status.value in ("failed", "partially_failed"):
                    for position, error in enumerate(record.errors or []):
                        JobError.objects.update_or_create(
                            job=job,
                            position=position,
                            defaults={
                                "code": error.code,
                                "message": error.message,
                                "raw": error.raw,
                            },
                        )
        naive_seconds = time.perf_counter() - started

        engine_account = new_account("bench-engine")
        engine_run = SyncRun.objects.create(account=engine_account, trigger="manual")
        engine_account.lease_owner = "bench"
        engine_account.save(update_fields=["lease_owner"])
        engine = AccountSync(engine_account, engine_run, owner="bench")
        started = time.perf_counter()
        for start in range(0, len(sample), 100):
            with transaction.atomic():
                engine.pages.apply_records(sample[start : start + 100])
                engine.save_progress()
        engine_seconds = time.perf_counter() - started
        print(
            f"naive update_or_create: {len(sample):,} jobs in {naive_seconds:.2f}s; "
            f"engine page writes: {engine_seconds:.2f}s"
        )

        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print()
        print(f"{'figure':<44}{'value':>12}{'target':>12}")
        print(
            f"{'sync time / bare fetch time':<44}{sync_seconds / fetch_seconds:>12.2f}{'<= 2.0':>12}"
        )
        print(
            f"{'unchanged re-sync / bare fetch time':<44}{resync_seconds / fetch_seconds:>12.2f}{'':>12}"
        )
        print(
            f"{'speed-up over naive update_or_create':<44}{naive_seconds / engine_seconds:>11.1f}x{'>= 10x':>12}"
        )
        print(f"{'peak memory of this process (max RSS, MB)':<44}{peak_mb:>12.0f}{'':>12}")
    finally:
        stop_sandbox(process)
    return 0


if __name__ == "__main__":
    sys.exit(main())
