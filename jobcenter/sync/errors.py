"""Error records of failed jobs: rows built from records, fetched once per job, replaced.

A failed job's error records arrive in one of two ways. Some providers' payloads carry
them (`inline_error_rows`): the page write stores them with the job, in the page's
transaction (pages.py). For the others, `ErrorFetcher` asks once per job after the
listings, at most `JOBCENTER_ERROR_FETCHES_PER_RUN` jobs a run; the rest wait for the
next run. Either way a job's stored records are replaced, never merged, and
`errors_fetched_at` says they are there (a job that fails again after recovering has it
cleared, and reports again).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from itertools import islice
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from jobcenter.models import Job, JobError, ProviderAccount
from jobcenter.sync.bookkeeping import RunBook, RunTotals
from jobcenter.sync.bulk import JSONText, insert_rows
from jobcenter.sync.prefetch import prefetched
from providers.base import FAILED_STATUSES, JobErrorRecord, JobRecord, Provider, canonical_json
from providers.errors import AuthError, NotFound, NotReady, ProviderError, RateLimited

FAILED_VALUES = [s.value for s in FAILED_STATUSES]
# Failed jobs whose error records are written per transaction: few commits, and a crash
# re-fetches at most this many jobs' errors.
ERROR_JOBS_PER_TRANSACTION = 20


def error_rows(records: list[JobErrorRecord]) -> list[dict[str, Any]]:
    """JobError rows for insert_rows, cut to the columns' lengths; without the failing
    record's own data (what its provider declares) when the deployment keeps none
    (JOBCENTER_ERROR_RECORD_PERSONAL_DATA=drop).

    replace_errors sets the job and the time (fetched errors' rows are built ahead, in
    the prefetch thread).
    """
    if settings.JOBCENTER_ERROR_RECORD_PERSONAL_DATA == "drop":
        records = [record.without_personal_data() for record in records]
    return [
        {
            "job_id": None,
            "position": position,
            "code": record.code[:200],
            "title": record.title[:500],
            "message": record.message,
            "source": record.source[:500],
            "external_id": record.external_id[:255],
            "raw": JSONText(canonical_json(record.raw)),
            "fetched_at": None,
        }
        for position, record in enumerate(records)
    ]


def inline_error_rows(record: JobRecord) -> list[dict[str, Any]] | None:
    """The rows of the error records a failed job's payload carries (None: none carried)."""
    if record.status not in FAILED_STATUSES or record.errors is None:
        return None
    return error_rows(record.errors[: settings.JOBCENTER_MAX_ERRORS_PER_JOB])


def replace_errors(
    batch: list[tuple[int, list[dict[str, Any]]]],
    now: datetime,
    totals: RunTotals,
    existing: bool = True,
) -> None:
    """Replace the stored error records of the jobs (by id) in `batch` with `error_rows`
    rows (call in atomic).

    `existing=False` says none of these jobs can have records yet (all just inserted):
    nothing to delete.
    """
    if not batch:
        return
    if existing:
        JobError.objects.filter(job_id__in=[pk for pk, _ in batch]).delete()
    for pk, rows in batch:
        for row in rows:
            row["job_id"] = pk
            row["fetched_at"] = now
    insert_rows(JobError, [row for _, rows in batch for row in rows])
    totals.errors_fetched += sum(len(rows) for _, rows in batch)


class ErrorFetcher:
    """Step 4 of a sync: error records for failed jobs whose payload did not carry them.

    The provider is asked in the prefetch thread while the previous jobs' records are
    written; `ERROR_JOBS_PER_TRANSACTION` jobs' records commit together, with the
    run's progress (which renews the lease).
    """

    def __init__(
        self,
        account: ProviderAccount,
        provider: Provider,
        book: RunBook,
        save_progress: Callable[[], None],
    ) -> None:
        self.account = account
        self.provider = provider
        self.book = book
        self.save_progress = save_progress

    def fetch_errors(self) -> None:
        """Fetch error records once for failed jobs whose payload did not carry them."""
        jobs = list(
            Job.objects.filter(
                account=self.account,
                status__in=FAILED_VALUES,
                errors_fetched_at__isnull=True,
                gone_at__isnull=True,
            )
            .order_by("id")
            .only("id", "kind", "external_id")[: settings.JOBCENTER_ERROR_FETCHES_PER_RUN]
        )
        batch: list[tuple[Job, list[dict[str, Any]]]] = []
        with prefetched(self.errors_of(jobs)) as fetched:
            for job, rows in fetched:
                batch.append((job, rows))
                if len(batch) == ERROR_JOBS_PER_TRANSACTION:
                    self.store_fetched_errors(batch)
                    batch = []
        self.store_fetched_errors(batch)

    def errors_of(self, jobs: list[Job]) -> Iterator[tuple[Job, list[dict[str, Any]]]]:
        """Each job's error records from the provider, as rows; skips the ones it cannot
        give now.

        Runs in the prefetch thread: it touches the provider only, never the database
        (note_problem only appends to this run's list).
        """
        limit = settings.JOBCENTER_MAX_ERRORS_PER_JOB
        for job in jobs:
            try:
                records = list(islice(self.provider.iter_errors(job.kind, job.external_id), limit))
            except NotReady:
                continue  # asked again next run
            except NotFound:
                records = []
            except (AuthError, RateLimited):
                raise
            except ProviderError as exc:  # AccessDenied included: this job's, not the run's
                self.book.note_problem(f"errors of {job.kind} {job.external_id}: {exc}")
                continue
            yield job, error_rows(records)

    def store_fetched_errors(self, batch: list[tuple[Job, list[dict[str, Any]]]]) -> None:
        """Replace the error records of a few jobs in one transaction, with the progress."""
        if not batch:
            return
        now = timezone.now()
        jobs = [job for job, _ in batch]
        for job, rows in batch:
            job.errors_fetched_at = now
            job.error_count = len(rows)
            job.last_changed_at = now  # new error records are a change to follow
        with transaction.atomic():
            replace_errors([(job.pk, rows) for job, rows in batch], now, self.book.totals)
            Job.objects.bulk_update(jobs, ["errors_fetched_at", "error_count", "last_changed_at"])
            self.save_progress()
