"""Elastic Path PXM jobs through the sync engine, against the sandbox over real HTTP."""

from __future__ import annotations

import logging

import pytest
from django.conf import settings
from django.test import override_settings
from django.urls import reverse

from jobcenter.models import Job, JobError
from jobcenter.sync.engine import sync_account
from providers.elasticpath import ElasticPathProvider
from tests.factories import local_jobs, sandbox_account
from tests.leaks import assert_secret_nowhere

pytestmark = pytest.mark.django_db(transaction=True)

TYPES = {k.name for k in ElasticPathProvider.kinds}
EP_STATUS = {
    "pending": "queued",
    "started": "running",
    "success": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
}


def test_store_with_every_type_and_status_syncs_equal_to_the_sandbox(sandbox, admin_client) -> None:
    account, described = sandbox_account(sandbox, "elasticpath", seed=4, jobs_per_kind=30)
    state = sandbox.state(described["id"])
    assert {j["kind"] for j in state["jobs"]} == TYPES
    assert {j["status"] for j in state["jobs"]} == set(EP_STATUS)

    run = sync_account(account.pk)
    assert run.outcome == "succeeded", run.error

    local = local_jobs(account)
    remote = {(j["kind"], j["id"]): j for j in state["jobs"]}
    assert set(local) == set(remote)
    for key, job in remote.items():
        mine = local[key]
        assert mine["provider_status"] == job["status"]
        assert mine["status"] == EP_STATUS[job["status"]]
        assert mine["payload"]["meta"] == job["meta"]
        assert mine["total_count"] is None  # Elastic Path reports no counts
        errors = list(
            JobError.objects.filter(job_id=mine["id"])
            .order_by("position")
            .values_list("message", flat=True)
        )
        assert errors == job["errors"], key

    export = next(
        j
        for j in state["jobs"]
        if j["kind"] == "product-export" and j["meta"].get("file_locations")
    )
    job = Job.objects.get(account=account, external_id=export["id"])
    page = admin_client.get(reverse("admin:jobcenter_job_change", args=[job.pk])).content.decode()
    for url in export["meta"]["file_locations"]:
        assert f'href="{url}"' in page

    again = sync_account(account.pk)
    assert again.snapshots_written == 0


def test_a_token_that_expires_mid_sync_is_renewed_and_the_sync_succeeds(sandbox) -> None:
    options = {**settings.JOBCENTER_PROVIDER_OPTIONS, "elasticpath": {"page_limit": 5}}
    with override_settings(JOBCENTER_PROVIDER_OPTIONS=options):
        account, described = sandbox_account(
            sandbox, "elasticpath", seed=9, jobs_per_kind=12, token_lifetime=2, frozen=False
        )
        # 60 jobs in pages of 5 at 4 requests/s outlive a 2-second token.
        account.rate_limits = {"*": [[4, 1]]}
        account.save(update_fields=["rate_limits"])
        run = sync_account(account.pk)
    assert run.outcome == "succeeded", run.error
    assert run.pages >= 12
    state = sandbox.state(described["id"])
    assert state["tokens_issued"] >= 2
    assert Job.objects.filter(account=account).count() == len(state["jobs"])


def test_a_revoked_secret_fails_after_one_renewal_and_never_leaks(
    sandbox, admin_client, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    account, described = sandbox_account(sandbox, "elasticpath", seed=2, jobs_per_kind=3)
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
