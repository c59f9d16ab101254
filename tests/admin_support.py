"""Builders shared by the admin and browser tests: a synced sandbox world, seeded jobs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Count

from jobcenter.models import Job, ProviderAccount
from jobcenter.sync.engine import sync_account
from providers.sandbox.client import SandboxClient
from tests.factories import sandbox_account


@dataclass
class World:
    klaviyo: ProviderAccount
    klaviyo_sandbox_id: str
    elasticpath: ProviderAccount
    failed_job: Job  # a failed Klaviyo job with error records and more than one snapshot


def synced_world(sandbox: SandboxClient, *, jobs_per_kind: int = 3) -> World:
    """A Klaviyo and an Elastic Path account synced twice, the clock moved in between, so
    jobs have timelines, and some Klaviyo jobs failed with error records."""
    klaviyo, described = sandbox_account(
        sandbox, "klaviyo", name="Klaviyo main", seed=3, jobs_per_kind=jobs_per_kind
    )
    elasticpath, ep_described = sandbox_account(
        sandbox, "elasticpath", name="Elastic Path EU", seed=4, jobs_per_kind=jobs_per_kind
    )
    for account in (klaviyo, elasticpath):
        assert sync_account(account.pk).outcome == "succeeded"
    sandbox.clock(described["id"], advance=6 * 3600)
    sandbox.clock(ep_described["id"], advance=6 * 3600)
    for account in (klaviyo, elasticpath):
        assert sync_account(account.pk).outcome == "succeeded"
    failed = (
        Job.objects.filter(account=klaviyo, status="failed", error_count__gt=0)
        .annotate(n=Count("snapshots"))
        .order_by("-n", "-error_count", "pk")
        .first()
    )
    assert failed is not None, "the seeded Klaviyo world has a failed job with errors"
    return World(klaviyo, described["id"], elasticpath, failed)


SEED_KINDS = [
    ("klaviyo", "catalog-item-bulk-create-job"),
    ("klaviyo", "profile-bulk-import-job"),
    ("elasticpath", "product-import"),
    ("elasticpath", "product-export"),
    ("fullstory", "events-batch-import"),
]
SEED_STATUSES = ["succeeded"] * 6 + ["failed", "partially_failed", "running", "queued"]
SEED_DAYS = 120  # history accumulates: a quarter of the seeded jobs fall in the 30-day window
SEED_SPACING = 104  # seconds between two seeded jobs: 100,000 jobs span 120 days
STUCK_EVERY = 2500  # one old job in this many never ends


SEED_COLUMNS = (
    "account_id",
    "provider",
    "kind",
    "external_id",
    "status",
    "provider_status",
    "total_count",
    "completed_count",
    "failed_count",
    "created_at",
    "started_at",
    "completed_at",
    "first_seen_at",
    "last_seen_at",
    "last_changed_at",
    "is_terminal",
    "gone_reason",
    "tracked",
    "error_count",
    "payload",
    "digest",
)


def seed_jobs(accounts: dict[str, ProviderAccount], n: int, now: datetime) -> None:
    """`n` jobs, one every SEED_SPACING seconds back from `now`, in batches of 5,000.

    executemany rather than bulk_create: model instances and bulk_create's per-field
    preparation take 30 s for 100,000 rows; this takes about one.
    """
    adapt = connection.ops.adapt_datetimefield_value
    placeholders = ", ".join(["%s"] * len(SEED_COLUMNS))
    sql = f"INSERT INTO jobcenter_job ({', '.join(SEED_COLUMNS)}) VALUES ({placeholders})"  # noqa: S608
    rows = []
    for i in range(n):
        provider, kind = SEED_KINDS[i % len(SEED_KINDS)]
        status = SEED_STATUSES[(i // len(SEED_KINDS)) % len(SEED_STATUSES)]
        age = (i * SEED_SPACING) % (SEED_DAYS * 86400)
        created = now - timedelta(seconds=age)
        if status in ("running", "queued") and age > 3 * 3600 and i % STUCK_EVERY:
            status = "succeeded"  # jobs end; a few old ones stay stuck
        terminal = status not in ("running", "queued")
        rows.append(
            (
                accounts[provider].pk,
                provider,
                kind,
                f"seed-{i:06d}",
                status,
                status,
                100,
                100 if terminal else 40,
                10 if status in ("failed", "partially_failed") else 0,
                adapt(created),
                adapt(created + timedelta(seconds=5)),
                adapt(created + timedelta(minutes=3)) if terminal else None,
                adapt(created),
                adapt(now),
                adapt(created + timedelta(minutes=3)),
                terminal,
                "",
                False,
                0,
                json.dumps({"id": f"seed-{i:06d}"}),
                "",
            )
        )
    with connection.cursor() as cursor:
        for start in range(0, n, 5000):
            cursor.executemany(sql, rows[start : start + 5000])


def plain_account(name: str, provider: str, **fields: Any) -> ProviderAccount:
    """An account row without a sandbox behind it (for figures that need no provider)."""
    from jobcenter.accounts import create_account

    credentials = {
        "klaviyo": {"api_key": "pk_test_000000000000000000000000000000abcd"},
        "elasticpath": {"client_id": "client-1234", "client_secret": "secret-000000000000wxyz"},
        "fullstory": {"api_key": "na1.fullstory-test-key-0000wxyz"},
    }[provider]
    account = create_account(name, provider, credentials)
    if fields:
        ProviderAccount.objects.filter(pk=account.pk).update(**fields)
        account.refresh_from_db()
    return account
