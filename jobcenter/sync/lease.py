"""The account's lease: one sync of an account at a time, across every worker process.

The lease is two columns of the account's row (`lease_owner`, `lease_until`), so taking
it is one conditional UPDATE and needs no lock service. A run renews it with every
transaction it commits, in the same UPDATE that saves the listings' cursors; a worker
that dies mid-run holds it at most `JOBCENTER_LEASE_SECONDS` more, and the next run
resumes from the saved cursors. A worker that finds its lease taken over (it had
expired) stops writing: `LeaseLost`. The hot lane (hot.py) takes the same lease: a
sweep and a hot pass never write one account's jobs at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from jobcenter.models import ProviderAccount


class LeaseLost(Exception):
    """Another worker took this account's lease (ours had expired): stop writing."""


@dataclass(frozen=True, slots=True)
class Lease:
    """One run's hold on one account, named by a random owner token."""

    account_id: int
    owner: str

    def acquire(self, *, sweep: bool = True) -> bool:
        """Take the account's lease if it is free or expired: one conditional UPDATE.

        A sweep also makes the account due again (`next_sync_at` now): the dispatcher
        passes over leased accounts, so a sweep lost with its worker is followed by the
        next one as soon as its lease expires, one dispatch cycle later at most; a sweep
        that ends moves `next_sync_at` on by the interval (bookkeeping.RunBook.finish).
        """
        now = timezone.now()
        changes: dict[str, Any] = {
            "lease_owner": self.owner,
            "lease_until": now + timedelta(seconds=settings.JOBCENTER_LEASE_SECONDS),
        }
        if sweep:
            changes["next_sync_at"] = now
        return (
            ProviderAccount.objects.filter(pk=self.account_id)
            .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
            .update(**changes)
            == 1
        )

    def renew(self, sync_state: dict[str, Any] | None = None) -> None:
        """Save the cursors (if given: a hot pass leaves the sweeps' alone) and renew the
        lease in one UPDATE; fail if the lease is gone.

        Each page, refresh batch and error batch commits this UPDATE in its own
        transaction, so a run that lost its lease finds out before it commits more.
        """
        now = timezone.now()
        changes: dict[str, Any] = {
            "lease_until": now + timedelta(seconds=settings.JOBCENTER_LEASE_SECONDS)
        }
        if sync_state is not None:
            changes["sync_state"] = sync_state
        updated = ProviderAccount.objects.filter(pk=self.account_id, lease_owner=self.owner).update(
            **changes
        )
        if updated != 1:
            raise LeaseLost()

    def release(self) -> None:
        ProviderAccount.objects.filter(pk=self.account_id, lease_owner=self.owner).update(
            lease_owner="", lease_until=None
        )
