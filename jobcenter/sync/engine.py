"""The provider-agnostic sync engine: one account, one run.

1. Take the account's lease with one conditional UPDATE; a second worker that finds it
   held records a skipped run and does nothing else.
2. Page through each listing. Each page is one transaction with a constant number of
   queries: load the page's existing jobs, diff by payload digest, bulk-create new jobs,
   bulk-update changed ones, touch unchanged ones, bulk-create snapshots of the changes,
   save the listing's cursor (renewing the lease). A crash resumes at the saved page.
3. Refresh by id the non-terminal jobs no listing returned (tracked jobs, jobs beyond
   the list window, jobs that vanished), least recently checked first, bounded per run.
4. Fetch error records once for jobs that reached failed / partially failed.
5. Mark terminal jobs a complete listing no longer returns as gone; delete nothing.
6. Close the SyncRun with its counters and release the lease.

The engine reads `providers.base` types only, never a provider's JSON.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connections, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from jobcenter import alerts
from jobcenter.accounts import build_provider
from jobcenter.crypto import CredentialsUnreadable
from jobcenter.models import (
    AccountStatus,
    Job,
    JobError,
    JobSnapshot,
    ProviderAccount,
    SyncOutcome,
    SyncRun,
    SyncTrigger,
)
from jobcenter.sqlite_engine.checkpoints import background_checkpoints
from jobcenter.sync.bulk import JSONText, insert_rows, returns_inserted_rows
from jobcenter.sync.gcpolicy import fewer_collections
from jobcenter.sync.prefetch import prefetched
from providers.base import (
    FAILED_STATUSES,
    AccessDenied,
    AuthError,
    BadResponse,
    InvalidCursor,
    JobErrorRecord,
    JobPage,
    JobRecord,
    NotFound,
    NotReady,
    Provider,
    ProviderError,
    RateLimited,
    Status,
    canonical_json,
    payload_digest,
    text_digest,
)
from providers.http import redact

logger = logging.getLogger("jobcenter.sync")

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
# Pages already fetched that are written in one transaction: bounds the write lock's
# hold (about 25 ms a page) and what a crash makes the next run fetch again.
PAGES_PER_TRANSACTION = 10
# Failed jobs whose error records are written per transaction: few commits, and a crash
# re-fetches at most this many jobs' errors.
ERROR_JOBS_PER_TRANSACTION = 20

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
FAILED_VALUES = [s.value for s in FAILED_STATUSES]
REFRESH_BATCH = 50
GONE_FROM_LISTING = "no longer listed by the provider"


class LeaseLost(Exception):
    """Another worker took this account's lease (ours had expired): stop writing."""


@dataclass
class RunTotals:
    pages: int = 0
    jobs_seen: int = 0
    jobs_created: int = 0
    jobs_changed: int = 0
    jobs_gone: int = 0
    snapshots_written: int = 0
    errors_fetched: int = 0
    problems: list[str] = field(default_factory=list)


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


def inline_error_rows(record: JobRecord) -> list[dict[str, Any]] | None:
    """The rows of the error records a failed job's payload carries (None: none carried)."""
    if record.status not in FAILED_STATUSES or record.errors is None:
        return None
    return error_rows(record.errors[: settings.JOBCENTER_MAX_ERRORS_PER_JOB])


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


# --- lease -------------------------------------------------------------------------------


def acquire_lease(account_id: int, owner: str) -> bool:
    """Take the account's lease if it is free or expired: one conditional UPDATE."""
    now = timezone.now()
    return (
        ProviderAccount.objects.filter(pk=account_id)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(
            lease_owner=owner, lease_until=now + timedelta(seconds=settings.JOBCENTER_LEASE_SECONDS)
        )
        == 1
    )


def release_lease(account_id: int, owner: str) -> None:
    ProviderAccount.objects.filter(pk=account_id, lease_owner=owner).update(
        lease_owner="", lease_until=None
    )


# --- entry point -------------------------------------------------------------------------


ProgressCallback = Callable[[str], None]


def sync_account(
    account_id: int,
    trigger: str = SyncTrigger.MANUAL,
    on_progress: ProgressCallback | None = None,
) -> SyncRun:
    """Run one sync of one account and return its SyncRun (also when skipped)."""
    account = ProviderAccount.objects.get(pk=account_id)
    run = SyncRun.objects.create(account=account, trigger=trigger)
    owner = uuid.uuid4().hex
    if not acquire_lease(account.pk, owner):
        run.outcome = SyncOutcome.SKIPPED
        run.error = "skipped: already running"
        run.finished_at = timezone.now()
        run.save(update_fields=["outcome", "error", "finished_at"])
        return run
    try:
        # Holding the lease, any other run of this account still marked running is dead.
        SyncRun.objects.filter(account=account, outcome=SyncOutcome.RUNNING).exclude(
            pk=run.pk
        ).update(
            outcome=SyncOutcome.FAILED,
            finished_at=timezone.now(),
            error="interrupted: the worker stopped before the run ended; the next run resumed it",
        )
        account.refresh_from_db()
        with background_checkpoints(), fewer_collections():
            AccountSync(account, run, owner, on_progress).run()
    finally:
        release_lease(account.pk, owner)
    try:
        alerts.evaluate_after_sync(run)
    except Exception:  # an alert must never fail a sync
        logger.exception("alert evaluation after sync run %s failed", run.pk)
    return run


class AccountSync:
    """One run over one account; holds the provider and the run's running totals."""

    def __init__(
        self,
        account: ProviderAccount,
        run: SyncRun,
        owner: str,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.on_progress = on_progress
        self.listing_report: dict[str, str] = {}
        self.account = account
        self.run_record = run
        self.owner = owner
        self.started = run.started_at
        self.totals = RunTotals()
        self.state: dict[str, dict] = dict(account.sync_state or {})
        self.provider: Provider | None = None
        self.secrets: list[str] = []
        self.completed_listings: list[str] = []

    # -- the run ----------------------------------------------------------------------
    def run(self) -> None:
        outcome, error, blocked_until = SyncOutcome.SUCCEEDED, "", None
        try:
            self.provider = build_provider(self.account)
            self.secrets = self.provider.client.secrets
            for listing in self.provider.listing_names():
                self.sweep_listing(listing)
            self.refresh_by_id()
            self.fetch_errors()
            if self.totals.problems:
                outcome = SyncOutcome.PARTIAL
        except AuthError as exc:
            outcome, error = SyncOutcome.FAILED, str(exc)
        except RateLimited as exc:
            wait = exc.retry_after or 60.0
            outcome = SyncOutcome.DEFERRED
            blocked_until = timezone.now() + timedelta(seconds=wait)
            error = f"deferred for {wait:.0f}s: {exc}"
        except BadResponse as exc:
            outcome = SyncOutcome.FAILED
            error = f"{exc}" + (f" — the answer began: {exc.excerpt}" if exc.excerpt else "")
        except ProviderError as exc:
            outcome, error = SyncOutcome.FAILED, str(exc)
        except CredentialsUnreadable as exc:
            outcome, error = SyncOutcome.FAILED, f"credentials unreadable: {exc}"
        except ValidationError as exc:
            outcome, error = SyncOutcome.FAILED, "base URL refused: " + "; ".join(exc.messages)
        except LeaseLost:
            outcome, error = SyncOutcome.FAILED, "stopped: another worker took over this account"
        except Exception as exc:
            logger.exception("sync of account %s failed", self.account.pk)
            outcome = SyncOutcome.FAILED
            error = f"internal error ({type(exc).__name__}); see the worker log"
        if not error and self.totals.problems:
            error = "; ".join(self.totals.problems)
        elif error and self.totals.problems:
            error = "; ".join([error, *self.totals.problems])
        self.finish(outcome, redact(error, self.secrets)[:4000], blocked_until)

    def finish(self, outcome: str, error: str, blocked_until: datetime | None) -> None:
        now = timezone.now()
        run = self.run_record
        self.copy_totals(run)
        run.outcome = outcome
        run.error = error
        run.finished_at = now
        run.save()
        ok = outcome in (SyncOutcome.SUCCEEDED, SyncOutcome.PARTIAL)
        updates: dict = {"last_sync_at": now, "last_error": error}
        if ok:
            updates |= {
                "last_success_at": now,
                "last_status": AccountStatus.OK,
                "consecutive_failures": 0,
            }
        elif outcome == SyncOutcome.FAILED:
            updates |= {
                "last_status": AccountStatus.FAILING,
                "consecutive_failures": F("consecutive_failures") + 1,
            }
        if blocked_until is not None:
            updates["blocked_until"] = blocked_until
        ProviderAccount.objects.filter(pk=self.account.pk).update(**updates)

    def copy_totals(self, run: SyncRun) -> None:
        t = self.totals
        run.pages = t.pages
        run.jobs_seen = t.jobs_seen
        run.jobs_created = t.jobs_created
        run.jobs_changed = t.jobs_changed
        run.jobs_gone = t.jobs_gone
        run.snapshots_written = t.snapshots_written
        run.errors_fetched = t.errors_fetched
        if self.provider is not None:
            counters = self.provider.client.counters
            run.requests = counters.requests
            run.retries = counters.retries
            run.detail = {
                **(run.detail or {}),
                "failed_attempts": counters.failed_attempts,
                "rate_limit_waits": counters.rate_limit_waits,
                "waited_seconds": round(counters.waited_seconds, 3),
                "faults": counters.faults[-50:],
                "problems": t.problems[-50:],
                "listings": self.listing_report,
            }

    def note_problem(self, text: str) -> None:
        self.totals.problems.append(redact(text, self.secrets)[:500])

    # -- 2. listings --------------------------------------------------------------------
    def sweep_listing(self, listing: str) -> None:
        assert self.provider is not None
        state = dict(self.state.get(listing) or {})
        cursor = state.get("cursor")
        if cursor and state.get("sweep_started_at"):
            sweep_started = parse_datetime(state["sweep_started_at"]) or self.started
        else:
            cursor, sweep_started = None, self.started
        try:
            self.page_through(listing, cursor, sweep_started)
        except InvalidCursor:
            if cursor is None:
                raise
            self.note_problem(f"{listing}: saved cursor refused; listing started again")
            self.page_through(listing, None, self.started)
        except AccessDenied as exc:  # one listing out of scope; the others may work
            self.note_problem(f"{listing}: {exc}")
            self.report(listing, f"failed: {exc}")
        except (AuthError, RateLimited, LeaseLost):
            raise
        except ProviderError as exc:
            self.note_problem(f"{listing}: {exc}")
            self.report(listing, f"failed: {exc}")

    def page_through(self, listing: str, cursor: str | None, sweep_started: datetime) -> None:
        assert self.provider is not None
        t = self.totals
        before = (t.pages, t.jobs_seen, t.jobs_created, t.jobs_changed, t.jobs_gone)
        truncated = False
        pages = encoded_pages(self.provider.iter_pages(listing, cursor))
        with prefetched(pages, spare=prepare_error_rows) as fetched:
            for page, encoded in fetched:
                # Pages that arrived while this one was written go in the same
                # transaction: fewer commits while the provider answers faster than we
                # write, and no transaction left open while we wait for it.
                with transaction.atomic():
                    for pages_in_transaction in range(1, PAGES_PER_TRANSACTION + 1):
                        truncated = truncated or page.window_truncated
                        self.apply_page(listing, page, encoded, sweep_started)
                        if pages_in_transaction == PAGES_PER_TRANSACTION or not fetched.ready():
                            break
                        page, encoded = next(fetched)
        if not truncated:
            self.mark_gone(listing, sweep_started)
        self.completed_listings.append(listing)
        pages, seen, new, changed, gone = (
            now - then
            for now, then in zip(
                (t.pages, t.jobs_seen, t.jobs_created, t.jobs_changed, t.jobs_gone),
                before,
                strict=True,
            )
        )
        self.report(
            listing,
            f"{pages} pages, {seen} jobs ({new} new, {changed} changed, {gone} gone)"
            + (" — the provider's list window ends here" if truncated else ""),
        )

    def report(self, listing: str, text: str) -> None:
        text = redact(text, self.secrets)
        self.listing_report[listing] = text
        if self.on_progress is not None:
            self.on_progress(f"{listing}: {text}")

    def apply_page(
        self,
        listing: str,
        page: JobPage,
        encoded: list[EncodedRecord],
        sweep_started: datetime,
    ) -> None:
        if page.next_cursor:
            listing_state = {
                "cursor": page.next_cursor,
                "sweep_started_at": sweep_started.isoformat(),
            }
        else:
            listing_state = {"cursor": None, "last_complete_at": timezone.now().isoformat()}
        with transaction.atomic(savepoint=False):  # within page_through's, if any
            self.apply_records(encoded)
            self.totals.pages += 1
            self.state[listing] = listing_state
            self.save_progress()

    def save_progress(self) -> None:
        """Save the cursors and renew the lease in one UPDATE; fail if the lease is gone."""
        now = timezone.now()
        updated = ProviderAccount.objects.filter(pk=self.account.pk, lease_owner=self.owner).update(
            sync_state=self.state,
            lease_until=now + timedelta(seconds=settings.JOBCENTER_LEASE_SECONDS),
        )
        if updated != 1:
            raise LeaseLost()

    def listing_filter(self, listing: str) -> Q:
        """The jobs a listing covers: its own kind, or every kind no other listing names."""
        assert self.provider is not None
        kind_names = {k.name for k in self.provider.kinds}
        if listing in kind_names:
            return Q(kind=listing)
        return ~Q(kind__in=[name for name in self.provider.listing_names() if name in kind_names])

    def mark_gone(self, listing: str, sweep_started: datetime) -> None:
        """Terminal jobs a complete listing no longer returns are gone (kept, marked)."""
        gone = Job.objects.filter(
            self.listing_filter(listing),
            account=self.account,
            tracked=False,
            is_terminal=True,
            gone_at__isnull=True,
            last_seen_at__lt=sweep_started,
        ).update(gone_at=timezone.now(), gone_reason=GONE_FROM_LISTING)
        self.totals.jobs_gone += gone

    # -- the per-page write ---------------------------------------------------------------
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
        for key, encoded in by_key.items():
            job = existing.get(key)
            if job is None:
                row = self.new_job_row(encoded, now)
                new_rows.append(row)
                written.append(WrittenJob(encoded, row=row))
            elif job.digest != encoded.digest or job.gone_at is not None:
                self.fill(job, encoded.record, encoded.digest, now)
                changed.append(job)
                written.append(WrittenJob(encoded, job=job))
            else:
                unchanged_ids.append(job.pk)
        # Marked before the jobs are written, so the job rows carry it: no second update.
        inline_errors = self.take_inline_errors(written, now)
        if new_rows:
            self.insert_jobs(new_rows)
            self.totals.jobs_created += len(new_rows)
        if changed:
            Job.objects.bulk_update(changed, CHANGED_FIELDS)
            self.totals.jobs_changed += len(changed)
        if unchanged_ids:
            Job.objects.filter(pk__in=unchanged_ids).update(last_seen_at=now, last_checked_at=now)
        self.write_snapshots(written, now)
        self.replace_errors(
            [(item.pk, rows) for item, rows in inline_errors], now, existing=bool(changed)
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

    def replace_errors(
        self, batch: list[tuple[int, list[dict[str, Any]]]], now: datetime, existing: bool = True
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
        self.totals.errors_fetched += sum(len(rows) for _, rows in batch)

    # -- 3. refresh by id -----------------------------------------------------------------
    def refresh_by_id(self) -> None:
        """Poll the non-terminal jobs no completed listing returned in this run."""
        assert self.provider is not None
        listable = {k.name for k in self.provider.kinds if k.listable}
        missed = Q(tracked=True) | ~Q(kind__in=listable)
        for listing in self.completed_listings:
            missed |= self.listing_filter(listing) & (
                Q(last_seen_at__lt=self.started) | Q(last_seen_at__isnull=True)
            )
        candidates = list(
            Job.objects.filter(
                missed, account=self.account, is_terminal=False, gone_at__isnull=True
            )
            .order_by(F("last_checked_at").asc(nulls_first=True), "id")
            .only("id", "kind", "external_id", "status", "payload", "tracked")[
                : settings.JOBCENTER_REFRESH_PER_RUN
            ]
        )
        for start in range(0, len(candidates), REFRESH_BATCH):
            self.refresh_batch(candidates[start : start + REFRESH_BATCH])

    def refresh_batch(self, jobs: list[Job]) -> None:
        assert self.provider is not None
        now = timezone.now()
        records: list[JobRecord] = []
        not_found: list[tuple[Job, str]] = []
        failed_ids: list[int] = []
        for job in jobs:
            try:
                records.append(self.provider.fetch_job(job.kind, job.external_id))
            except NotFound as exc:
                not_found.append((job, str(exc)))
            except AccessDenied as exc:
                failed_ids.append(job.pk)
                self.note_problem(f"{job.kind} {job.external_id}: {exc}")
            except (AuthError, RateLimited):
                raise
            except ProviderError as exc:
                failed_ids.append(job.pk)
                self.note_problem(f"{job.kind} {job.external_id}: {exc}")
        with transaction.atomic():
            self.apply_records(records)
            self.mark_not_found(not_found, now)
            if failed_ids:
                Job.objects.filter(pk__in=failed_ids).update(last_checked_at=now)
            self.save_progress()

    def mark_not_found(self, not_found: list[tuple[Job, str]], now: datetime) -> None:
        """The provider does not know these ids: end them, say why, and stop asking."""
        if not not_found:
            return
        changed: list[Job] = []
        for job, message in not_found:
            was_seen = bool(job.payload)
            job.status = Status.EXPIRED.value if was_seen else Status.UNKNOWN.value
            job.is_terminal = True
            job.gone_at = now
            job.gone_reason = ("expired at the provider: " if was_seen else "not found: ") + message
            job.last_checked_at = now
            job.last_changed_at = now
            changed.append(job)
        Job.objects.bulk_update(
            changed,
            [
                "status",
                "is_terminal",
                "gone_at",
                "gone_reason",
                "last_checked_at",
                "last_changed_at",
            ],
        )
        seen = [job for job in changed if job.payload]
        JobSnapshot.objects.bulk_create(
            JobSnapshot(
                job_id=job.pk,
                observed_at=now,
                status=job.status,
                payload=job.payload,
                digest=payload_digest(job.payload),
            )
            for job in seen
        )
        self.totals.snapshots_written += len(seen)
        self.totals.jobs_gone += len(changed)

    # -- 4. error records -----------------------------------------------------------------
    def fetch_errors(self) -> None:
        """Fetch error records once for failed jobs whose payload did not carry them."""
        assert self.provider is not None
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
        assert self.provider is not None
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
                self.note_problem(f"errors of {job.kind} {job.external_id}: {exc}")
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
        with transaction.atomic():
            self.replace_errors([(job.pk, rows) for job, rows in batch], now)
            Job.objects.bulk_update(jobs, ["errors_fetched_at", "error_count"])
            self.save_progress()


def error_rows(records: list[JobErrorRecord]) -> list[dict[str, Any]]:
    """JobError rows for insert_rows, cut to the columns' lengths.

    replace_errors sets the job and the time (fetched errors' rows are built ahead, in
    the prefetch thread).
    """
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
