"""A sync run's bookkeeping: its running totals, its problems, and the SyncRun that ends it.

Every pass of a sync adds to one `RunBook`: counters, problems that did not stop the
run (one listing out of scope, one job the provider refused), and a line per listing.
`finish` copies them onto the SyncRun with the HTTP client's counters and sets the
account's status in one UPDATE. Problems and reports are redacted with the client's
secrets when they are noted: they are shown in the admin and the API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from jobcenter.models import AccountStatus, ProviderAccount, SyncOutcome, SyncRun, SyncTrigger
from jobcenter.observability.metrics import observe_run
from providers.http import HttpCounters
from providers.redaction import EXCERPT_CHARS, redact, redact_then_cut

ProgressCallback = Callable[[str], None]
# The longest problem a run keeps, and the longest error it stores (both after redaction).
PROBLEM_CHARS = 500
ERROR_CHARS = 4000


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


def skip_run(run: SyncRun) -> None:
    """Close a run that found the account's lease held: another worker is syncing it.

    The account is due again: the dispatcher sweeps it once the lease is free (if the
    holder was a sweep, its end moves `next_sync_at` on by the interval after this).
    """
    now = timezone.now()
    run.outcome = SyncOutcome.SKIPPED
    run.error = "skipped: already running"
    run.finished_at = now
    run.save(update_fields=["outcome", "error", "finished_at"])
    ProviderAccount.objects.filter(pk=run.account_id).update(next_sync_at=now)
    observe_run(run, run.outcome, None)


def end_interrupted_runs(account: ProviderAccount, run: SyncRun) -> None:
    """Holding the lease, any other run of this account still marked running is dead."""
    SyncRun.objects.filter(account=account, outcome=SyncOutcome.RUNNING).exclude(pk=run.pk).update(
        outcome=SyncOutcome.FAILED,
        finished_at=timezone.now(),
        error="interrupted: the worker stopped before the run ended; the next run resumed it",
    )


def next_sweep_at(run: SyncRun) -> datetime:
    """When the account's next sweep is due: an interval after this one started, less
    half the dispatcher's granularity (its cycle, or the Schedule's minute): a sweep that
    started a moment after its dispatch is due again at the dispatch an interval on, not
    one cycle after it (lease.Lease.acquire made it due while it ran)."""
    cycle = settings.JOBCENTER_DISPATCH_SECONDS or 60
    interval = timedelta(minutes=max(1, run.account.sync_interval_minutes))
    return run.started_at + interval - timedelta(seconds=cycle / 2)


class RunBook:
    """What one run has done so far, and how it ends on its SyncRun and account."""

    def __init__(self, run: SyncRun, on_progress: ProgressCallback | None = None) -> None:
        self.run = run
        self.on_progress = on_progress
        self.totals = RunTotals()
        self.listing_report: dict[str, str] = {}
        # The HTTP client's own list once the provider is built: it grows when the
        # client is issued a token mid-run, and redaction here sees that one too.
        self.secrets: list[str] = []

    def note_problem(self, text: str) -> None:
        """Keep a problem that did not stop the run (safe from the prefetch thread)."""
        self.totals.problems.append(redact_then_cut(text, self.secrets, PROBLEM_CHARS))

    def excerpt(self, text: str) -> str:
        """A piece of a provider's answer for the run's error: redacted, then cut."""
        return redact_then_cut(text, self.secrets, EXCERPT_CHARS)

    def report(self, listing: str, text: str) -> None:
        text = redact(text, self.secrets)
        self.listing_report[listing] = text
        if self.on_progress is not None:
            self.on_progress(f"{listing}: {text}")

    def finish(
        self,
        outcome: str,
        error: str,
        blocked_until: datetime | None,
        counters: HttpCounters | None,
    ) -> None:
        """Close the SyncRun with the totals and set the account's status; the run's
        error is the one that stopped it (if any), then its problems, redacted."""
        problems = self.totals.problems
        if not error and problems:
            error = "; ".join(problems)
        elif error and problems:
            error = "; ".join([error, *problems])
        error = redact_then_cut(error, self.secrets, ERROR_CHARS)
        now = timezone.now()
        run = self.run
        self.copy_totals(run, counters)
        run.outcome = outcome
        run.error = error
        run.finished_at = now
        run.save()
        observe_run(run, outcome, counters)  # the run's end, for /metrics
        if run.trigger == SyncTrigger.HOT:
            return  # the account's status and schedule are the sweeps' to set
        ok = outcome in (SyncOutcome.SUCCEEDED, SyncOutcome.PARTIAL)
        updates: dict[str, Any] = {
            "last_sync_at": now,
            "last_error": error,
            "next_sync_at": next_sweep_at(run),
        }
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
        ProviderAccount.objects.filter(pk=run.account_id).update(**updates)

    def copy_totals(self, run: SyncRun, counters: HttpCounters | None) -> None:
        """The run's counters onto its SyncRun; the client's too once it was built."""
        t = self.totals
        run.pages = t.pages
        run.jobs_seen = t.jobs_seen
        run.jobs_created = t.jobs_created
        run.jobs_changed = t.jobs_changed
        run.jobs_gone = t.jobs_gone
        run.snapshots_written = t.snapshots_written
        run.errors_fetched = t.errors_fetched
        if counters is not None:
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
