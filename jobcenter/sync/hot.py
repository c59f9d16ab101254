"""The hot lane: unfinished jobs refreshed every few seconds by the cheapest call.

Sweeps (engine.py) page through every listing once an interval (a minute by default):
they find new jobs and see each listing whole. Between sweeps the dispatcher
(`jobcenter.tasks`) queues a hot pass, every `JOBCENTER_HOT_SECONDS`, for each account
with unfinished jobs. Per listing the pass chooses from what the provider declares
(`providers.base.ListingFreshness`), never from who the provider is:

- a status filter: list only the unfinished jobs (a request or two whatever their
  number, new ones included), then fetch by id the known ones it no longer lists: they
  finished or vanished;
- newest first, no filter: the first page (new and recently started jobs), then by id
  the unfinished ones it did not show;
- neither: by id, least recently checked first.

Each rate-limit tier gives the pass at most `JOBCENTER_HOT_HEADROOM` of what the tier
allows in `JOBCENTER_HOT_SECONDS` (the provider's tightest steady window), so sweeps keep
the rest; jobs beyond that budget are checked first by the next pass. Jobs a sweep or a
pass checked less than half a hot interval ago are left alone.

A pass holds the account's lease (a sweep and a pass never write one account at once),
writes through the sweep's `PageWriter` (a constant number of queries per batch), fetches
the error records of jobs that just failed, and records a SyncRun (trigger "hot") only
when it changed something or failed: a pass that finds nothing new costs its provider
calls and a constant number of queries, and leaves no row behind. Its log lines carry
the pass's own id (`sync_pass`, also kept in the row's `detail`), and `sync_run` once
that row exists (jobcenter/logcontext.py).
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from jobcenter.accounts import build_provider
from jobcenter.alerts.evaluation import evaluate_after_sync
from jobcenter.logcontext import sync_log_context
from jobcenter.models import Job, ProviderAccount, SyncOutcome, SyncRun, SyncTrigger
from jobcenter.observability.metrics import observe_run
from jobcenter.sync.bookkeeping import RunBook
from jobcenter.sync.errors import ErrorFetcher
from jobcenter.sync.lease import Lease, LeaseLost
from jobcenter.sync.pages import PageWriter
from jobcenter.sync.refresh import REFRESH_BATCH, UnlistedJobs
from providers.base import JobRecord, Provider
from providers.errors import AuthError, ProviderError, RateLimited

logger = logging.getLogger("jobcenter.sync.hot")

HOT_FIELDS = ("id", "kind", "external_id", "status", "payload", "tracked", "last_checked_at")


def unfinished_jobs(account: ProviderAccount) -> Q:
    """The jobs the hot lane watches: not finished, not gone (index job_refresh_queue)."""
    return Q(account=account, is_terminal=False, gone_at__isnull=True)


class HotBudget:
    """Requests this pass may make per rate-limit tier: the headroom share of what the
    tier's tightest steady window allows in one hot interval, at least one."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.left: dict[str, int] = {}

    def tier_of(self, kind_or_listing: str) -> str:
        try:
            return self.provider.kind(kind_or_listing).rate_tier
        except KeyError:
            return "default"

    def take(self, kind_or_listing: str, calls: int = 1) -> bool:
        tier = self.tier_of(kind_or_listing)
        if tier not in self.left:
            limits = self.provider.client.rate_limits
            limit = limits.get(tier) or limits.get("default")
            # The tier's steady rate, as the client's own token bucket reads it.
            rate = limit.token_bucket(headroom=0)[0] if limit else 10.0
            share = rate * settings.JOBCENTER_HOT_SECONDS * settings.JOBCENTER_HOT_HEADROOM
            self.left[tier] = max(1, int(share))
        if self.left[tier] < calls:
            return False
        self.left[tier] -= calls
        return True

    def give_back(self, kind_or_listing: str) -> None:
        """Return one request taken ahead that was never made (the listing had ended)."""
        self.left[self.tier_of(kind_or_listing)] += 1


class HotPass:
    """One hot pass over one account's unfinished jobs."""

    def __init__(self, account: ProviderAccount, run: SyncRun, owner: str) -> None:
        self.account = account
        self.lease = Lease(account.pk, owner)
        self.book = RunBook(run)
        self.pages = PageWriter(account, self.book.totals)
        self.provider: Provider | None = None

    def run(self) -> str:
        """Refresh what is due; returns the outcome (the SyncRun is saved by the caller)."""
        provider = build_provider(self.account)
        self.book.secrets = provider.client.secrets
        self.provider = provider
        budget = HotBudget(provider)
        now = timezone.now()
        stale = Q(last_checked_at__isnull=True) | Q(
            last_checked_at__lt=now - timedelta(seconds=settings.JOBCENTER_HOT_SECONDS / 2)
        )
        jobs = list(
            Job.objects.filter(unfinished_jobs(self.account), stale)
            .order_by(F("last_checked_at").asc(nulls_first=True), "id")
            .only(*HOT_FIELDS)[: settings.JOBCENTER_REFRESH_PER_RUN]
        )
        by_listing: dict[str, list[Job]] = defaultdict(list)
        by_id: list[Job] = []
        listable = {k.name for k in provider.kinds if k.listable}
        for job in jobs:
            listing = self.listing_of(job)
            if job.tracked or job.kind not in listable or listing is None:
                by_id.append(job)
            else:
                by_listing[listing].append(job)
        for listing, listed_jobs in by_listing.items():
            by_id += self.refresh_listing(listing, listed_jobs, budget)
        self.refresh_by_id(by_id, budget)
        totals = self.book.totals
        if totals.jobs_changed or totals.jobs_created:
            ErrorFetcher(self.account, provider, self.book, self.lease_renew).fetch_errors()
        return SyncOutcome.PARTIAL if totals.problems else SyncOutcome.SUCCEEDED

    def listing_of(self, job: Job) -> str | None:
        """The listing that shows `job`: its kind's own, or the provider's catch-all."""
        assert self.provider is not None
        names = self.provider.listing_names()
        if job.kind in names:
            return job.kind
        others = [name for name in names if name not in {k.name for k in self.provider.kinds}]
        return others[0] if others else None

    def lease_renew(self) -> None:
        """Renew the lease (the sweeps' cursors are left as they are)."""
        self.lease.renew()

    def refresh_listing(self, listing: str, jobs: list[Job], budget: HotBudget) -> list[Job]:
        """Refresh `jobs` through their listing where it is cheaper than by id; returns
        the jobs still to be fetched by id."""
        assert self.provider is not None
        freshness = self.provider.listing_freshness(listing)
        calls = freshness.status_filter_calls
        filtered = bool(calls) and calls <= len(jobs) and budget.take(listing, calls)
        if filtered:
            pages, paid = self.provider.iter_unfinished(listing), calls
        elif freshness.newest_first and budget.take(listing):
            pages, paid = self.provider.iter_pages(listing), 1
        else:
            return jobs
        records: list[JobRecord] = []
        taken_ahead = False
        try:
            # The iterator makes a page's request when asked for the page: each request
            # past those paid for takes its share before it is made (a newest-first
            # listing stops after its first page), and is given back if none follows.
            for number, page in enumerate(pages, start=1):
                taken_ahead = False
                records += page.records
                if number >= paid:
                    if not (filtered and budget.take(listing)):
                        break
                    taken_ahead = True
        except (AuthError, RateLimited):
            raise
        except ProviderError as exc:
            self.book.note_problem(f"{listing}: {exc}")
            return jobs
        if taken_ahead:
            budget.give_back(listing)
        seen = {(r.kind, r.external_id) for r in records}
        with transaction.atomic():
            self.pages.apply_records(records)
            self.lease_renew()
        return [job for job in jobs if (job.kind, job.external_id) not in seen]

    def refresh_by_id(self, jobs: list[Job], budget: HotBudget) -> None:
        """Fetch jobs one by one within the budget, written in batches (refresh.py)."""
        assert self.provider is not None
        if not self.provider.fetches_by_id:
            return
        affordable = [job for job in jobs if budget.take(job.kind)]
        unlisted = UnlistedJobs(
            self.account, self.provider, self.pages, self.book, self.lease_renew
        )
        for start in range(0, len(affordable), REFRESH_BATCH):
            unlisted.refresh_batch(affordable[start : start + REFRESH_BATCH])


def hot_pass(account_id: int) -> SyncRun | None:
    """One hot pass over one account; the SyncRun if it changed something or failed."""
    account = ProviderAccount.objects.get(pk=account_id)
    lease = Lease(account.pk, uuid.uuid4().hex)
    # The pass has no SyncRun yet (it may never have one): its lines carry its own id.
    with sync_log_context(sync_pass=lease.owner, account=account.pk, provider=account.provider):
        return _hot_pass(account, lease)


def _hot_pass(account: ProviderAccount, lease: Lease) -> SyncRun | None:
    """The pass itself, inside its log context."""
    if not account.enabled or not lease.acquire(sweep=False):
        return None  # a sweep holds it, and refreshes these jobs itself
    run = SyncRun(
        account=account,
        trigger=SyncTrigger.HOT,
        started_at=timezone.now(),
        detail={"sync_pass": lease.owner},  # the id the pass's log lines carry
    )
    hot = HotPass(account, run, lease.owner)
    outcome, error = SyncOutcome.SUCCEEDED, ""
    try:
        outcome = hot.run()
    except LeaseLost:
        outcome, error = SyncOutcome.FAILED, "stopped: another worker took over this account"
    except RateLimited as exc:  # the hot lane waits as long as the provider asks
        wait = exc.retry_after or 60.0
        ProviderAccount.objects.filter(pk=account.pk).update(
            hot_next_at=timezone.now() + timedelta(seconds=wait)
        )
        outcome, error = SyncOutcome.DEFERRED, f"deferred for {wait:.0f}s: {exc}"
    except ProviderError as exc:  # the sweep reports the account's state; this is the pass's
        outcome, error = SyncOutcome.FAILED, str(exc)
    except Exception as exc:
        logger.exception("hot pass of account %s failed", account.pk)
        outcome, error = SyncOutcome.FAILED, f"internal error ({type(exc).__name__})"
    finally:
        lease.release()
    totals = hot.book.totals
    counters = hot.provider.client.counters if hot.provider is not None else None
    if outcome == SyncOutcome.SUCCEEDED and not (
        totals.jobs_created or totals.jobs_changed or totals.jobs_gone or totals.errors_fetched
    ):
        observe_run(run, outcome, counters)  # no row, but /metrics counts the pass
        return None
    hot.book.finish(outcome, error, None, counters)
    with sync_log_context(run=run.pk):  # the row exists now: the rest carries its id too
        try:
            evaluate_after_sync(run)
        except Exception:  # an alert must never fail a sync
            logger.exception("alert evaluation after hot pass %s failed", run.pk)
    return run


def hot_due(now: datetime) -> Q:
    """Accounts whose hot pass is due (the dispatcher adds the lease and sweep checks)."""
    return Q(hot_next_at__isnull=True) | Q(hot_next_at__lte=now)
