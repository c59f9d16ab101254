"""Page writes: a page's records encoded, diffed against the stored jobs, and written.

A page costs a constant number of queries whatever it holds: load the page's existing
jobs, diff by payload digest, insert the new jobs (as plain rows, `bulk.insert_rows`:
one executemany on SQLite, one COPY on PostgreSQL), bulk-update the changed ones, touch
the unchanged ones, insert snapshots of the new and changed ones, and replace the error
records their payloads carry. A job marked gone that comes back with the same payload
and status is unchanged: the touch clears its mark, and it writes no snapshot (its last
one says the same); one whose status differs (expired by refresh.py, say) is a change
like any other. The caller holds the transaction (engine.py: up to ten fetched pages
share one) and saves the progress in it.

Each payload is encoded once (`encode_record`, in the prefetch thread), as the
canonical text its digest is taken from: the job row and its snapshot carry that text.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connections
from django.db.models import Case, F, Value, When
from django.utils import timezone

from jobcenter.models import Job, JobSnapshot, ProviderAccount
from jobcenter.sync.bookkeeping import RunTotals
from jobcenter.sync.bulk import JSONText, insert_rows, returns_inserted_rows
from jobcenter.sync.errors import inline_error_rows, replace_errors
from providers.base import (
    FAILED_STATUSES,
    JobPage,
    JobRecord,
    Status,
    canonical_json,
    text_digest,
)

RECORD_FIELDS = (
    "status",
    "provider_status",
    "total_count",
    "completed_count",
    "failed_count",
    "created_at",
    "started_at",
    "completed_at",
    "updated_at",
    "expires_at",
)
CHANGED_FIELDS = (
    *RECORD_FIELDS,
    "payload",
    "digest",
    "is_terminal",
    "last_seen_at",
    "last_changed_at",
    "last_checked_at",
    "gone_at",
    "gone_reason",
    "errors_fetched_at",
    "error_count",
)


@dataclass(slots=True)
class EncodedRecord:
    """A record with its payload's canonical text and digest.

    Made in the prefetch thread, beside the fetching: every record needs its digest
    (changed or not?), and the encoding is Python work the writer would otherwise do
    while the database sits idle. The rows of the error records a payload carries are
    made there only while pages wait for the writer (`prepare_error_rows`, a spare-time
    step): most failed jobs a re-sync sees have theirs stored already, and the writer
    builds the rows of the jobs that take them when the helper had no time.
    """

    record: JobRecord
    text: JSONText
    digest: str
    error_rows: list[dict[str, Any]] | None = None


def encode_record(record: JobRecord) -> EncodedRecord:
    text = JSONText(canonical_json(record.raw))
    return EncodedRecord(record, text, text_digest(text))


def encoded_pages(pages: Iterable[JobPage]) -> Iterator[tuple[JobPage, list[EncodedRecord]]]:
    """Each page with its records encoded (runs in the prefetch thread)."""
    for page in pages:
        yield page, [encode_record(record) for record in page.records]


def prepare_error_rows(encoded_page: tuple[JobPage, list[EncodedRecord]]) -> None:
    """Build a page's inline error rows ahead (the prefetch thread's spare-time step)."""
    for encoded in encoded_page[1]:
        encoded.error_rows = inline_error_rows(encoded.record)


@dataclass(slots=True)
class WrittenJob:
    """One job a page writes: its record, the payload text and digest, and where it goes.

    A new job is a row for insert_rows (`row`, its "id" set once inserted); a changed
    one is its model instance (`job`), updated in place.
    """

    encoded: EncodedRecord
    job: Job | None = None
    row: dict[str, Any] | None = None

    @property
    def pk(self) -> int:
        return self.job.pk if self.job is not None else self.row["id"]  # type: ignore[index]

    def get(self, name: str) -> Any:
        return getattr(self.job, name) if self.job is not None else self.row[name]  # type: ignore[index]

    def set(self, name: str, value: Any) -> None:
        if self.job is not None:
            setattr(self.job, name, value)
        else:
            self.row[name] = value  # type: ignore[index]


class PageWriter:
    """Writes batches of one account's records: listing pages and refreshed jobs."""

    def __init__(self, account: ProviderAccount, totals: RunTotals) -> None:
        self.account = account
        self.totals = totals

    def apply_records(self, records: Iterable[JobRecord | EncodedRecord]) -> None:
        """Write one batch of records with a constant number of queries (call in atomic).

        New jobs are written as plain rows (no model instances) and every payload is
        encoded once, as the canonical text its digest is taken from: the job row and
        its snapshot carry that same text.
        """
        now = timezone.now()
        by_key: dict[tuple[str, str], EncodedRecord] = {}
        for item in records:
            encoded = item if isinstance(item, EncodedRecord) else encode_record(item)
            by_key[(encoded.record.kind, encoded.record.external_id)] = encoded
        if not by_key:
            return
        self.totals.jobs_seen += len(by_key)
        existing = {
            (job.kind, job.external_id): job
            for job in Job.objects.filter(
                account=self.account,
                kind__in={key[0] for key in by_key},
                external_id__in={key[1] for key in by_key},
            ).only(  # every field bulk_update writes that fill() does not set
                "id",
                "kind",
                "external_id",
                "digest",
                "status",
                "errors_fetched_at",
                "error_count",
                "gone_at",
            )
        }
        new_rows: list[dict[str, Any]] = []
        changed: list[Job] = []
        written: list[WrittenJob] = []
        unchanged_ids: list[int] = []
        back_unchanged = False  # a job marked gone is listed again as it was
        for key, encoded in by_key.items():
            job = existing.get(key)
            if job is None:
                row = self.new_job_row(encoded, now)
                new_rows.append(row)
                written.append(WrittenJob(encoded, row=row))
            elif job.digest != encoded.digest or (
                job.gone_at is not None and job.status != encoded.record.status.value
            ):
                self.fill(job, encoded.record, encoded.digest, now)
                changed.append(job)
                written.append(WrittenJob(encoded, job=job))
            else:
                unchanged_ids.append(job.pk)
                back_unchanged = back_unchanged or job.gone_at is not None
        # Marked before the jobs are written, so the job rows carry it: no second update.
        inline_errors = self.take_inline_errors(written, now)
        if new_rows:
            self.insert_jobs(new_rows)
            self.totals.jobs_created += len(new_rows)
        if changed:
            Job.objects.bulk_update(changed, CHANGED_FIELDS)
            self.totals.jobs_changed += len(changed)
        if unchanged_ids:
            # A gone job back unchanged just loses the mark, in the same UPDATE: a page
            # costs the queries it did.
            # It changed for whoever follows changes (the API's changed_after): the
            # unchanged jobs beside it keep their last_changed_at.
            unmark = (
                {
                    "gone_at": None,
                    "gone_reason": "",
                    "last_changed_at": Case(
                        When(gone_at__isnull=False, then=Value(now)),
                        default=F("last_changed_at"),
                    ),
                }
                if back_unchanged
                else {}
            )
            Job.objects.filter(pk__in=unchanged_ids).update(
                last_seen_at=now, last_checked_at=now, **unmark
            )
        self.write_snapshots(written, now)
        replace_errors(
            [(item.pk, rows) for item, rows in inline_errors],
            now,
            self.totals,
            existing=bool(changed),
        )

    def new_job_row(self, encoded: EncodedRecord, now: datetime) -> dict[str, Any]:
        """Every column of a new job, keyed by attribute name, for insert_rows."""
        record = encoded.record
        return {
            "account_id": self.account.pk,
            "provider": self.account.provider,
            "kind": record.kind,
            "external_id": record.external_id,
            "status": record.status.value,
            "provider_status": record.provider_status,
            "total_count": record.total_count,
            "completed_count": record.completed_count,
            "failed_count": record.failed_count,
            "created_at": record.created_at,
            "started_at": record.started_at,
            "completed_at": record.completed_at,
            "updated_at": record.updated_at,
            "expires_at": record.expires_at,
            "first_seen_at": now,
            "last_seen_at": now,
            "last_changed_at": now,
            "last_checked_at": now,
            "is_terminal": record.is_terminal,
            "gone_at": None,
            "gone_reason": "",
            "tracked": False,
            "errors_fetched_at": None,
            "error_count": 0,
            "payload": encoded.text,
            "digest": encoded.digest,
        }

    def insert_jobs(self, rows: list[dict[str, Any]]) -> None:
        """Insert new jobs' rows and learn their ids: returned by the INSERT where that
        is cheapest (SQLite), else read back in one indexed query."""
        if returns_inserted_rows(connections[Job.objects.db]):
            returned = insert_rows(Job, rows, returning=("id", "kind", "external_id"))
        else:
            insert_rows(Job, rows)
            returned = Job.objects.filter(
                account=self.account,
                kind__in={row["kind"] for row in rows},
                external_id__in={row["external_id"] for row in rows},
            ).values_list("pk", "kind", "external_id")
        ids = {(kind, external_id): pk for pk, kind, external_id in returned}
        for row in rows:
            row["id"] = ids[(row["kind"], row["external_id"])]

    @staticmethod
    def fill(job: Job, record: JobRecord, digest: str, now: datetime) -> None:
        """Copy a changed record onto its existing job."""
        status_changed = job.status != record.status.value
        for name in RECORD_FIELDS:
            value = getattr(record, name)
            setattr(job, name, value.value if isinstance(value, Status) else value)
        job.payload = record.raw
        job.digest = digest
        job.is_terminal = record.is_terminal
        job.last_seen_at = now
        job.last_changed_at = now
        job.last_checked_at = now
        job.gone_at = None
        job.gone_reason = ""
        if status_changed and record.status in FAILED_STATUSES:
            # A job that fails again after recovering reports its errors again.
            job.errors_fetched_at = None

    def write_snapshots(self, written: list[WrittenJob], now: datetime) -> None:
        if not written:
            return
        insert_rows(
            JobSnapshot,
            [
                {
                    "job_id": item.pk,
                    "observed_at": now,
                    "status": record.status.value,
                    "provider_status": record.provider_status,
                    "total_count": record.total_count,
                    "completed_count": record.completed_count,
                    "failed_count": record.failed_count,
                    "payload": item.encoded.text,
                    "digest": item.encoded.digest,
                }
                for item in written
                for record in (item.encoded.record,)
            ],
        )
        self.totals.snapshots_written += len(written)

    @staticmethod
    def take_inline_errors(
        written: list[WrittenJob], now: datetime
    ) -> list[tuple[WrittenJob, list[dict[str, Any]]]]:
        """The error records payloads carry for jobs that just failed; marks them fetched."""
        taken = []
        for item in written:
            if item.get("errors_fetched_at") is not None:
                continue
            rows = item.encoded.error_rows  # made ahead in the prefetch thread's spare time
            if rows is None:
                rows = inline_error_rows(item.encoded.record)
            if rows is not None:
                item.set("errors_fetched_at", now)
                item.set("error_count", len(rows))
                taken.append((item, rows))
        return taken
