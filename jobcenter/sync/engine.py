"""The provider-agnostic sync engine: one account, one run. Read this file first.

One sync, step by step, and the module that does each step:

1. `sync_account` takes the account's lease (lease.py) with one conditional UPDATE; a
   second worker that finds it held records a skipped run (bookkeeping.py) and does
   nothing else.
2. `AccountSync.sweep_listing` pages through each listing. A helper thread fetches the
   next pages and encodes their records meanwhile (prefetch.py, pages.py). Each page is
   written with a constant number of queries (pages.py: load the page's existing jobs,
   diff by payload digest, insert new jobs, update changed ones, touch unchanged ones,
   insert snapshots of the changes and the error records payloads carry), and its
   listing's cursor is saved with the lease's renewal; pages already fetched share a
   transaction, up to ten. A crash resumes at the saved page. A complete listing marks
   gone the terminal jobs missing from it and from the complete sweep before it (offset
   pages shift under deletions, so one sweep's absence proves nothing); a job back
   unchanged loses the mark without a new snapshot; nothing is deleted (refresh.py).
3. Refresh by id the non-terminal jobs no listing returned (tracked jobs, jobs beyond
   the list window, jobs that vanished), least recently checked first, bounded per run
   (refresh.py).
4. Fetch error records once for jobs that reached failed / partially failed (errors.py).
5. Close the SyncRun with its counters and set the account's status (bookkeeping.py),
   release the lease, then evaluate the alert rules (jobcenter.alerts).

While a sync runs, SQLite's WAL checkpoints move to a helper thread
(sqlite_engine/checkpoints.py) and the garbage collector runs less often (gcpolicy.py).
Every log line of the run, from any logger and the prefetch thread, carries the run's
id as `sync_run` (jobcenter/logcontext.py). The engine reads `providers.base` types
only, never a provider's JSON.
"""

from __future__ import annotations

import logging
import os
import uuid
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from jobcenter.accounts import build_provider, refused_settings
from jobcenter.alerts.evaluation import evaluate_after_sync
from jobcenter.crypto import CredentialsUnreadable
from jobcenter.logcontext import sync_log_context
from jobcenter.models import ProviderAccount, SyncOutcome, SyncRun, SyncTrigger
from jobcenter.sqlite_engine.checkpoints import background_checkpoints
from jobcenter.sync.bookkeeping import ProgressCallback, RunBook, end_interrupted_runs, skip_run
from jobcenter.sync.errors import ErrorFetcher
from jobcenter.sync.gcpolicy import fewer_collections
from jobcenter.sync.lease import Lease, LeaseLost
from jobcenter.sync.pages import EncodedRecord, PageWriter, encoded_pages, prepare_error_rows
from jobcenter.sync.prefetch import prefetched
from jobcenter.sync.refresh import UnlistedJobs
from providers.base import JobPage, Provider
from providers.errors import (
    AccessDenied,
    AuthError,
    BadResponse,
    InvalidCursor,
    ProviderError,
    RateLimited,
)

logger = logging.getLogger("jobcenter.sync")

# Pages already fetched that are written in one transaction: bounds the write lock's
# hold (about 25 ms a page) and what a crash makes the next run fetch again.
PAGES_PER_TRANSACTION = 10


def sync_account(
    account_id: int,
    trigger: str = SyncTrigger.MANUAL,
    on_progress: ProgressCallback | None = None,
) -> SyncRun:
    """Run one sync of one account and return its SyncRun (also when skipped)."""
    account = ProviderAccount.objects.get(pk=account_id)
    # The worker process is named, so operations (and tests) can tell which one runs it.
    run = SyncRun.objects.create(account=account, trigger=trigger, detail={"pid": os.getpid()})
    # From here on every log line, from any logger and the prefetch thread, names the run.
    with sync_log_context(run=run.pk, account=account.pk, provider=account.provider):
        lease = Lease(account.pk, uuid.uuid4().hex)
        if not lease.acquire():
            skip_run(run)
            return run
        try:
            end_interrupted_runs(account, run)
            account.refresh_from_db()
            with background_checkpoints(), fewer_collections():
                AccountSync(account, run, lease.owner, on_progress).run()
        finally:
            lease.release()
        try:
            evaluate_after_sync(run)
        except Exception:  # an alert must never fail a sync
            logger.exception("alert evaluation after sync run %s failed", run.pk)
    return run


class AccountSync:
    """One run over one account: the listings, then the refresh and error passes.

    It holds what the passes share: the provider, the listings' cursors (saved with the
    lease's renewal), the page writer and the run's book.
    """

    def __init__(
        self,
        account: ProviderAccount,
        run: SyncRun,
        owner: str,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.account = account
        self.lease = Lease(account.pk, owner)
        self.started = run.started_at
        self.book = RunBook(run, on_progress)
        self.pages = PageWriter(account, self.book.totals)
        self.state: dict[str, dict] = dict(account.sync_state or {})
        self.provider: Provider | None = None
        self.unlisted: UnlistedJobs | None = None
        self.completed_listings: list[str] = []

    def run(self) -> None:
        """Every pass in order; how the run ended goes on its SyncRun, in words."""
        outcome, error, blocked_until = SyncOutcome.SUCCEEDED, "", None
        try:
            self.provider = build_provider(self.account)
            self.book.secrets = self.provider.client.secrets
            self.unlisted = UnlistedJobs(
                self.account, self.provider, self.pages, self.book, self.save_progress
            )
            for listing in self.provider.listing_names():
                self.sweep_listing(listing)
            self.unlisted.refresh_by_id(
                self.started,
                self.completed_listings,
                scheduled=self.book.run.trigger == SyncTrigger.SCHEDULE,
            )
            ErrorFetcher(self.account, self.provider, self.book, self.save_progress).fetch_errors()
            if self.book.totals.problems:
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
            answer = self.book.excerpt(exc.excerpt)
            error = f"{exc}" + (f" — the answer began: {answer}" if answer else "")
        except ProviderError as exc:
            outcome, error = SyncOutcome.FAILED, str(exc)
        except CredentialsUnreadable as exc:
            outcome, error = SyncOutcome.FAILED, f"credentials unreadable: {exc}"
        except ValidationError as exc:
            outcome, error = SyncOutcome.FAILED, refused_settings(exc)
        except LeaseLost:
            outcome, error = SyncOutcome.FAILED, "stopped: another worker took over this account"
        except Exception as exc:
            logger.exception("sync of account %s failed", self.account.pk)
            outcome = SyncOutcome.FAILED
            error = f"internal error ({type(exc).__name__}); see the worker log"
        counters = self.provider.client.counters if self.provider is not None else None
        self.book.finish(outcome, error, blocked_until, counters)

    def save_progress(self) -> None:
        """Save the cursors and renew the lease in one UPDATE; fail if the lease is gone."""
        self.lease.renew(self.state)

    # -- 2. listings --------------------------------------------------------------------
    def sweep_listing(self, listing: str) -> None:
        """One listing from its saved cursor (or from the start); a refused cursor
        starts it again, a listing out of scope is a problem, not the run's failure."""
        state = dict(self.state.get(listing) or {})
        cursor = state.get("cursor")
        if cursor and state.get("sweep_started_at"):
            sweep_started = parse_datetime(state["sweep_started_at"]) or self.started
        else:
            cursor, sweep_started = None, self.started
        # When the last complete sweep before this one started: a job last seen before
        # then is missing from both, which is what marks it gone (refresh.mark_gone).
        previous = parse_datetime(state.get("complete_sweep_started_at") or "")
        try:
            self.page_through(listing, cursor, sweep_started, previous)
        except InvalidCursor:
            if cursor is None:
                raise
            self.book.note_problem(f"{listing}: saved cursor refused; listing started again")
            self.page_through(listing, None, self.started, previous)
        except AccessDenied as exc:  # one listing out of scope; the others may work
            self.book.note_problem(f"{listing}: {exc}")
            self.book.report(listing, f"failed: {exc}")
        except (AuthError, RateLimited, LeaseLost):
            raise
        except ProviderError as exc:
            self.book.note_problem(f"{listing}: {exc}")
            self.book.report(listing, f"failed: {exc}")

    def page_through(
        self,
        listing: str,
        cursor: str | None,
        sweep_started: datetime,
        previous: datetime | None,
    ) -> None:
        assert self.provider is not None and self.unlisted is not None
        t = self.book.totals
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
                        self.apply_page(listing, page, encoded, sweep_started, previous, truncated)
                        if pages_in_transaction == PAGES_PER_TRANSACTION or not fetched.ready():
                            break
                        page, encoded = next(fetched)
        self.completed_listings.append(listing)
        pages, seen, new, changed, gone = (
            now - then
            for now, then in zip(
                (t.pages, t.jobs_seen, t.jobs_created, t.jobs_changed, t.jobs_gone),
                before,
                strict=True,
            )
        )
        self.book.report(
            listing,
            f"{pages} pages, {seen} jobs ({new} new, {changed} changed, {gone} gone)"
            + (" — the provider's list window ends here" if truncated else ""),
        )

    def apply_page(
        self,
        listing: str,
        page: JobPage,
        encoded: list[EncodedRecord],
        sweep_started: datetime,
        previous: datetime | None,
        truncated: bool,
    ) -> None:
        """Write one page and save its listing's cursor: the next run resumes after it.

        The last page of a sweep that reached every job (no list window cut it) marks
        gone, in the same transaction, the finished jobs missing from this sweep and the
        complete one before it (`previous`), and saves this sweep's start for the next.
        One sweep's absence proves nothing: offset pages shift when the provider deletes
        jobs meanwhile, within a sweep or between the runs of a resumed one.
        """
        complete = page.next_cursor is None and not truncated
        last_complete = sweep_started if complete else previous
        listing_state: dict[str, str | None] = {
            "cursor": page.next_cursor,
            "complete_sweep_started_at": last_complete.isoformat() if last_complete else None,
        }
        if page.next_cursor:
            listing_state["sweep_started_at"] = sweep_started.isoformat()
        else:
            listing_state["last_complete_at"] = timezone.now().isoformat()
        with transaction.atomic(savepoint=False):  # within page_through's, if any
            self.pages.apply_records(encoded)
            self.book.totals.pages += 1
            if complete and previous is not None:
                assert self.unlisted is not None
                self.unlisted.mark_gone(listing, previous)
            self.state[listing] = listing_state
            self.save_progress()
