"""Jobs the listings did not return: refreshed by id, or marked gone.

A listing shows what the provider lists now; some jobs are not in it. Tracked jobs and
kinds with no list endpoint never are; a running job may have slid past the provider's
list window, or vanished. After the listings, `refresh_by_id` asks for each non-terminal
job that no completed listing returned in this run, least recently checked first, at
most `JOBCENTER_REFRESH_PER_RUN` a run: the rest are asked first next time. An id the
provider does not know ends the job (expired, or not found) with the reason.

A terminal job is marked gone (`mark_gone`) when two consecutive complete sweeps of its
listing, each started after it was last seen, did not return it: kept, with `gone_at`
and the reason; nothing is deleted. One sweep's absence proves nothing: offset pages
shift when the provider deletes jobs during a sweep, or between the runs of a sweep
resumed from its saved cursor, and the jobs behind the deleted ones are never returned
by that sweep. A gone job a listing returns again with the same payload and status just
loses the mark (pages.py), without a new snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from jobcenter.models import Job, JobSnapshot, ProviderAccount
from jobcenter.sync.bookkeeping import RunBook
from jobcenter.sync.pages import PageWriter
from providers.base import JobRecord, Provider, Status, payload_digest
from providers.errors import AccessDenied, AuthError, NotFound, ProviderError, RateLimited

REFRESH_BATCH = 50
GONE_FROM_LISTING = "no longer listed by the provider"


def listing_filter(provider: Provider, listing: str) -> Q:
    """The jobs a listing covers: its own kind, or every kind no other listing names."""
    kind_names = {k.name for k in provider.kinds}
    if listing in kind_names:
        return Q(kind=listing)
    return ~Q(kind__in=[name for name in provider.listing_names() if name in kind_names])


class UnlistedJobs:
    """Steps 3 and 5 of a sync for one account: refresh by id, mark gone."""

    def __init__(
        self,
        account: ProviderAccount,
        provider: Provider,
        pages: PageWriter,
        book: RunBook,
        save_progress: Callable[[], None],
    ) -> None:
        self.account = account
        self.provider = provider
        self.pages = pages
        self.book = book
        self.save_progress = save_progress

    def mark_gone(self, listing: str, previous_sweep_started: datetime) -> None:
        """At the end of a complete sweep: terminal jobs last seen before the complete
        sweep before it started are missing from both, so gone (kept, marked)."""
        now = timezone.now()
        gone = Job.objects.filter(
            listing_filter(self.provider, listing),
            account=self.account,
            tracked=False,
            is_terminal=True,
            gone_at__isnull=True,
            last_seen_at__lt=previous_sweep_started,
        ).update(gone_at=now, gone_reason=GONE_FROM_LISTING, last_changed_at=now)
        self.book.totals.jobs_gone += gone

    def refresh_by_id(
        self, started: datetime, completed_listings: list[str], *, scheduled: bool = False
    ) -> None:
        """Poll the non-terminal jobs no completed listing returned in this run.

        A scheduled sweep leaves out what the hot lane checked less than half a hot
        interval before it started: asking again so soon costs a request and shows
        nothing new. A sweep staff asked for asks for everything.
        """
        listable = {k.name for k in self.provider.kinds if k.listable}
        missed = Q(tracked=True) | ~Q(kind__in=listable)
        for listing in completed_listings:
            missed |= listing_filter(self.provider, listing) & (
                Q(last_seen_at__lt=started) | Q(last_seen_at__isnull=True)
            )
        if scheduled and settings.JOBCENTER_HOT_SECONDS > 0:
            recent = started - timedelta(seconds=settings.JOBCENTER_HOT_SECONDS / 2)
            missed &= Q(last_checked_at__isnull=True) | Q(last_checked_at__lt=recent)
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
        """Fetch a batch of jobs by id, then write what came back in one transaction."""
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
                self.book.note_problem(f"{job.kind} {job.external_id}: {exc}")
            except (AuthError, RateLimited):
                raise
            except ProviderError as exc:
                failed_ids.append(job.pk)
                self.book.note_problem(f"{job.kind} {job.external_id}: {exc}")
        with transaction.atomic():
            self.pages.apply_records(records)
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
        self.book.totals.snapshots_written += len(seen)
        self.book.totals.jobs_gone += len(changed)
