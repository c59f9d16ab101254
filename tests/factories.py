"""Builders shared by the tests: sandbox-backed accounts and local copies of state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import requests
from django.utils import timezone

from jobcenter.accounts import create_account
from jobcenter.alerts.evaluation import evaluate_after_sync
from jobcenter.models import Job, ProviderAccount, SyncRun
from jobcenter.sync.engine import AccountSync
from providers.base import JobErrorRecord, JobRecord, Status
from providers.sandbox.client import SandboxClient


def sandbox_account(
    sandbox: SandboxClient,
    provider: str,
    *,
    name: str | None = None,
    credentials: dict[str, str] | None = None,
    **options: Any,
) -> tuple[ProviderAccount, dict[str, Any]]:
    """A sandbox account (frozen clock, no rate limits unless asked) and its local twin."""
    options.setdefault("frozen", True)
    options.setdefault("rate_limits", False)
    described = sandbox.create_account(provider, **options)
    account = create_account(
        name or f"{provider} {described['id']}",
        provider,
        credentials or sandbox.credentials(described),
        base_url=sandbox.base_url(provider),
    )
    if not options["rate_limits"]:
        # The sandbox enforces no limit here, so the client need not pace itself either.
        account.rate_limits = {"*": [[1000, 1]]}
        account.save(update_fields=["rate_limits"])
    return account, described


def failing_account(sandbox: SandboxClient, count: int = 1) -> ProviderAccount:
    """A Klaviyo sandbox account with `count` failed jobs, ended ten minutes ago: what the
    alert tests sync to make a rule fire."""
    account, described = sandbox_account(sandbox, "klaviyo", jobs_per_kind=0)
    sandbox.control(
        described["id"],
        "create_jobs",
        kind="catalog-item-bulk-delete-job",
        count=count,
        outcome="fail",
    )
    sandbox.clock(described["id"], advance=600)
    return account


def local_jobs(account: ProviderAccount) -> dict[tuple[str, str], dict[str, Any]]:
    """Every visible local job of `account`, keyed like the sandbox state."""
    return {
        (job["kind"], job["external_id"]): job
        for job in Job.objects.filter(account=account, gone_at__isnull=True).values()
    }


def create_fullstory_batch(
    sandbox: SandboxClient, described: dict[str, Any], kind: str, objects: list[dict[str, Any]]
) -> str:
    """POST a batch to the sandbox as a Fullstory client would; returns the job id."""
    segment = "events" if kind == "events-batch-import" else "users"
    response = requests.post(
        f"{sandbox.base_url('fullstory')}/v2/{segment}/batch",
        json={"requests": objects},
        headers={"Authorization": f"Basic {described['credentials']['api_key']}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["job"]["id"]


def events(n: int, fail: range | set[int] = frozenset()) -> list[dict[str, Any]]:
    return [
        {
            "user": {"uid": f"customer-{i}"},
            "name": "Order Completed",
            "timestamp": "2024-05-01T10:00:00Z",
            "properties": {"order": i, **({"jobcenter_fail": True} if i in fail else {})},
        }
        for i in range(n)
    ]


def users(n: int, fail: range | set[int] = frozenset()) -> list[dict[str, Any]]:
    return [
        {
            "uid": f"customer-{i}",
            "display_name": f"Customer {i}",
            "email": f"customer-{i}@example.com",
            "properties": {"plan": "paid", **({"jobcenter_fail": True} if i in fail else {})},
        }
        for i in range(n)
    ]


def observe_job(
    account: ProviderAccount, status: Status, failed: int, created_at: datetime | None = None
) -> SyncRun:
    """One sync run that sees Klaviyo job "job-1" in `status` (10 rows, `failed` of them
    refused) through the engine's write path, then the alert evaluation every sync ends
    with. The account's lease must be held by "test"."""
    run = SyncRun.objects.create(account=account, trigger="manual")
    engine = AccountSync(account, run, owner="test")
    errors = [JobErrorRecord(message=f"row {n} refused", code="invalid") for n in range(failed)]
    ended = status in (Status.FAILED, Status.SUCCEEDED)
    record = JobRecord(
        kind="catalog-item-bulk-create-job",
        external_id="job-1",
        status=status,
        provider_status="complete" if ended else "processing",
        raw={"id": "job-1", "status": status.value, "failed": failed},
        total_count=10,
        completed_count=10 - failed,
        failed_count=failed,
        created_at=created_at,
        errors=errors if status == Status.FAILED else None,
    )
    engine.pages.apply_records([record])
    run.outcome, run.finished_at = "succeeded", timezone.now()
    run.save()
    evaluate_after_sync(run)
    return run
