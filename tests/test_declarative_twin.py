"""Proof that a definition can say what a coded provider does: the declared twin of Elastic
Path (tests/definitions/elasticpath_twin.yaml) syncs the Elastic Path sandbox to exactly
the jobs, snapshots and error records of the Python module (providers/elasticpath.py).

Two sandbox stores from the same seed and the same frozen start hold the same jobs; one
is synced through the coded provider, the other through the twin, by the real sync
engine over real HTTP, and every row is compared: statuses, counts, times, digests,
error texts, the history each sync wrote, and the runs' counters.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from jobcenter.models import Job, JobError, JobSnapshot, ProviderAccount, SyncRun
from jobcenter.sync.engine import sync_account
from providers import get_provider, register_definitions, unregister
from providers.declarative.auth import forget_tokens
from tests.factories import sandbox_account
from tests.leaks import assert_secret_nowhere

pytestmark = pytest.mark.django_db(transaction=True)

DEFINITIONS = Path(__file__).resolve().parent / "definitions"
TWIN = "elasticpath_twin"
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z: both stores' clocks start here
RUN_FIELDS = (
    "outcome",
    "pages",
    "jobs_seen",
    "jobs_created",
    "jobs_changed",
    "jobs_gone",
    "snapshots_written",
    "errors_fetched",
    "error",
)
JOB_FIELDS = (
    "kind",
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
    "is_terminal",
    "error_count",
    "digest",
    "payload",
    "tracked",
)
SNAPSHOT_FIELDS = (
    "status",
    "provider_status",
    "total_count",
    "completed_count",
    "failed_count",
    "digest",
    "payload",
)
ERROR_FIELDS = ("position", "code", "title", "message", "source", "external_id", "raw")


@pytest.fixture
def twin() -> Iterator[str]:
    slugs = register_definitions(DEFINITIONS)
    forget_tokens()
    yield TWIN
    unregister(slugs)


def rows(account: ProviderAccount) -> dict[str, Any]:
    """Everything a sync stored for the account, keyed by the provider's ids."""
    jobs = {
        job["external_id"]: {f: job[f] for f in JOB_FIELDS} | {"gone": job["gone_at"] is not None}
        for job in Job.objects.filter(account=account).values()
    }
    snapshots: dict[str, list[tuple[Any, ...]]] = {}
    for snapshot in (
        JobSnapshot.objects.filter(job__account=account)
        .order_by("job__external_id", "observed_at", "id")
        .values("job__external_id", *SNAPSHOT_FIELDS)
    ):
        key = snapshot.pop("job__external_id")
        snapshots.setdefault(key, []).append(tuple(snapshot[f] for f in SNAPSHOT_FIELDS))
    errors: dict[str, list[tuple[Any, ...]]] = {}
    for error in (
        JobError.objects.filter(job__account=account)
        .order_by("job__external_id", "position")
        .values("job__external_id", *ERROR_FIELDS)
    ):
        key = error.pop("job__external_id")
        errors.setdefault(key, []).append(tuple(error[f] for f in ERROR_FIELDS))
    return {"jobs": jobs, "snapshots": snapshots, "errors": errors}


def run_row(run: SyncRun) -> dict[str, Any]:
    return {field: getattr(run, field) for field in RUN_FIELDS}


def two_stores(sandbox, **options: Any) -> tuple[ProviderAccount, ProviderAccount, list[str]]:
    """The same store twice: one account on the coded provider, one on the twin."""
    options = {"seed": 11, "start": START, "frozen": True, **options}
    coded, coded_store = sandbox_account(sandbox, "elasticpath", **options)
    declared, declared_store = sandbox_account(sandbox, "elasticpath", **options)
    declared.provider = TWIN  # the same store's API, read by the definition
    declared.save(update_fields=["provider"])
    Job.objects.filter(account=declared).update(provider=TWIN)
    return coded, declared, [coded_store["id"], declared_store["id"]]


def sync_both(coded: ProviderAccount, declared: ProviderAccount) -> None:
    first, second = sync_account(coded.pk), sync_account(declared.pk)
    assert first.outcome == "succeeded", first.error
    assert run_row(first) == run_row(second)


def test_the_twin_syncs_the_store_to_the_same_rows_as_the_module(sandbox, twin) -> None:
    # Small pages, so paging and its cursor carry the comparison too.
    options = {
        **settings.JOBCENTER_PROVIDER_OPTIONS,
        "elasticpath": {"page_limit": 7},
        TWIN: {"page_limit": 7},
    }
    with override_settings(JOBCENTER_PROVIDER_OPTIONS=options):
        coded, declared, stores = two_stores(sandbox, jobs_per_kind=20)
        sync_both(coded, declared)
        before = rows(coded)
        assert len(before["jobs"]) == 100
        assert {job["status"] for job in before["jobs"].values()} >= {
            "queued",
            "running",
            "succeeded",
            "failed",
            "cancelled",
        }
        assert before["errors"], "failed jobs carry error records"
        assert Job.objects.filter(account=declared, provider=TWIN).count() == 100
        assert rows(declared) == before

        # The queue moves on, new jobs fail with errors of their own, a job is deleted.
        for store in stores:
            sandbox.control(
                store,
                "create_jobs",
                type="price-import",
                count=2,
                outcome="failed",
                errors=["row 7: sku: No product found with this sku."],
            )
            sandbox.clock(store, advance=900)
        sync_both(coded, declared)
        sync_both(coded, declared)
        after = rows(coded)
        assert after != before
        assert rows(declared) == after

    payloads = [job["payload"] for job in after["jobs"].values()]
    coded_class, twin_class = get_provider("elasticpath"), get_provider(TWIN)
    assert [coded_class.job_links(p) for p in payloads] == [
        twin_class.job_links(p) for p in payloads
    ]
    assert any(coded_class.job_links(p) for p in payloads)
    assert [coded_class.job_details(p) for p in payloads] == [
        twin_class.job_details(p) for p in payloads
    ]


def test_the_twin_renews_an_expired_token_as_the_module_does(sandbox, twin) -> None:
    options = {**settings.JOBCENTER_PROVIDER_OPTIONS, TWIN: {"page_limit": 5}}
    with override_settings(JOBCENTER_PROVIDER_OPTIONS=options):
        account, described = sandbox_account(
            sandbox, "elasticpath", seed=9, jobs_per_kind=12, token_lifetime=2, frozen=False
        )
        account.provider = TWIN
        # 60 jobs in pages of 5 at 4 requests/s outlive a 2-second token.
        account.rate_limits = {"*": [[4, 1]]}
        account.save(update_fields=["provider", "rate_limits"])
        run = sync_account(account.pk)
    assert run.outcome == "succeeded", run.error
    assert run.pages >= 12
    state = sandbox.state(described["id"])
    assert state["tokens_issued"] >= 2
    assert Job.objects.filter(account=account).count() == len(state["jobs"])


def test_a_revoked_secret_fails_after_one_renewal_and_never_leaks(
    sandbox, twin, admin_client, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    account, described = sandbox_account(sandbox, "elasticpath", seed=2, jobs_per_kind=3)
    account.provider = TWIN
    account.save(update_fields=["provider"])
    assert sync_account(account.pk).outcome == "succeeded"
    sandbox.control(described["id"], "revoke")
    since = sandbox.requests(described["id"])[-1]["seq"]

    run = sync_account(account.pk)

    assert run.outcome == "failed"
    assert "authentication failed" in run.error
    sent = sandbox.requests(described["id"], since=since)
    token_requests = [e for e in sent if e["path"] == "/oauth/access_token"]
    assert len(token_requests) == 1, [(e["method"], e["path"], e["status"]) for e in sent]
    secret = described["credentials"]["client_secret"]
    assert_secret_nowhere(
        secret, client=admin_client, account=account, run=run, log_text=caplog.text
    )
