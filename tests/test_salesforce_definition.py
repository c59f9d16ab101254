"""Salesforce Bulk API 2.0, declared (providers/definitions/salesforce.yaml), synced by the
real sync engine from the Salesforce sandbox over HTTP: issue 19's "Must show" 5 for it.

A wrong secret ends the sync as an authentication failure in words with the secret
nowhere; a malformed answer is a BadResponse kept with an excerpt; 10,000 jobs sync to
exactly the sandbox's truth at a constant number of queries per page; a token the org
stops honouring mid-sync is renewed once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from jobcenter.models import Job, JobError, ProviderAccount
from jobcenter.sync.engine import sync_account
from jobcenter.sync.errors import ERROR_JOBS_PER_TRANSACTION
from providers import get_provider
from providers.declarative.auth import forget_tokens
from providers.sandbox.client import SandboxClient
from providers.times import parse_time
from tests.definition_checks import FAST_RETRY
from tests.factories import local_jobs, sandbox_account
from tests.leaks import assert_secret_nowhere

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN_PATH = "/services/oauth2/token"


@pytest.fixture(autouse=True)
def fresh_tokens() -> Iterator[None]:
    """Each test asks for its own token (the cache is shared by the whole process)."""
    forget_tokens()
    yield
    forget_tokens()


def assert_equal_to_state(account: ProviderAccount, state: dict[str, Any]) -> None:
    """Every local job, its counts, times and error records, equal the org's own."""
    local = local_jobs(account)
    remote = {(j["kind"], j["id"]): j for j in state["jobs"]}
    assert set(local) == set(remote)
    provider = get_provider("salesforce")
    errors: dict[int, list[str]] = {}
    for job_id, message in (
        JobError.objects.filter(job__account=account)
        .order_by("job_id", "position")
        .values_list("job_id", "message")
    ):
        errors.setdefault(job_id, []).append(message)
    for key, truth in remote.items():
        mine = local[key]
        assert mine["provider_status"] == truth["state"], key
        assert mine["completed_count"] == truth["numberRecordsProcessed"], key
        assert mine["failed_count"] == truth["numberRecordsFailed"], key
        assert mine["created_at"] == parse_time(truth["createdDate"], "createdDate"), key
        assert mine["updated_at"] == parse_time(truth["systemModstamp"], "systemModstamp"), key
        expected = provider.status(
            truth["state"], truth["numberRecordsProcessed"], truth["numberRecordsFailed"]
        )
        assert mine["status"] == expected, key
        if mine["status"] in ("failed", "partially_failed") and key[0] == "ingest":
            assert errors.get(mine["id"], []) == truth["errors"], key


def test_a_wrong_secret_fails_in_words_and_the_secret_is_nowhere(
    sandbox: SandboxClient, admin_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    account, described = sandbox_account(sandbox, "salesforce", seed=2, jobs_per_kind=3)
    wrong = "E2" + "0123456789ABCDEF" * 4  # shaped like a consumer secret, not this one
    account.set_credentials({**account.get_credentials(), "client_secret": wrong})
    account.save()

    run = sync_account(account.pk)

    assert run.outcome == "failed"
    assert run.error.startswith("authentication failed"), run.error
    assert "invalid client credentials" in run.error
    sent = sandbox.requests(described["id"])
    assert [(e["path"], e["status"]) for e in sent] == [(TOKEN_PATH, 400)], (
        "refused once, not retried, nothing else sent"
    )
    assert_secret_nowhere(
        wrong, client=admin_client, account=account, run=run, log_text=caplog.text
    )


def test_a_malformed_answer_is_a_bad_response_kept_with_an_excerpt(
    sandbox: SandboxClient,
) -> None:
    account, described = sandbox_account(sandbox, "salesforce", seed=4, jobs_per_kind=5)
    assert sync_account(account.pk).outcome == "succeeded"
    # The token is cached now; every API answer becomes a maintenance page.
    sandbox.control(described["id"], "faults", rate=1.0, mix={"content_type": 1})
    with override_settings(JOBCENTER_RETRY=FAST_RETRY):
        run = sync_account(account.pk)
    # Each listing ends on its first page: the run keeps both, message and excerpt.
    assert run.outcome == "partial"
    for listing in ("ingest", "query"):
        kept = run.detail["listings"][listing]
        assert "Salesforce Bulk API 2.0 answered with text/html instead of JSON" in kept
        assert "the answer began: <html><body>Down for maintenance" in kept
        assert f"{listing}: Salesforce" in run.error
    assert described["credentials"]["client_secret"] not in run.error


def test_ten_thousand_jobs_sync_to_the_orgs_truth_at_constant_queries_per_page(
    sandbox: SandboxClient,
) -> None:
    account, described = sandbox_account(sandbox, "salesforce", seed=7, jobs_per_kind=5000)
    # Every failed job's error records in this one run (a deployment spreads them out).
    with (
        override_settings(JOBCENTER_ERROR_FETCHES_PER_RUN=10_000),
        CaptureQueriesContext(connection) as captured,
    ):
        run = sync_account(account.pk)
    assert run.outcome == "succeeded", run.error
    state = sandbox.state(described["id"])
    assert len(state["jobs"]) == 10_000
    assert run.pages == 10  # 1,000 a page, by nextRecordsUrl under the /salesforce prefix
    assert_equal_to_state(account, state)
    statuses = set(Job.objects.filter(account=account).values_list("status", flat=True))
    assert {"queued", "running", "succeeded", "partially_failed", "failed", "cancelled"} <= (
        statuses
    )
    with_errors = sum(1 for j in state["jobs"] if j["error_count"])
    assert run.errors_fetched == sum(j["error_count"] for j in state["jobs"]) > 0
    # The shared rate-limit bucket costs a query or two per request where it lives in the
    # database; beside it, a constant handful per page of 1,000 jobs, per listing, and per
    # transaction of failed jobs' error records: nothing grows with the jobs on a page.
    queries = [q for q in captured if "ratelimitbucket" not in q["sql"].lower()]
    error_batches = math.ceil(with_errors / ERROR_JOBS_PER_TRANSACTION)
    bound = 20 + 15 * run.pages + 2 * 2 + 12 * error_batches
    assert len(queries) <= bound, (len(queries), bound)


def test_a_token_refused_mid_sync_is_renewed_once(sandbox: SandboxClient) -> None:
    account, described = sandbox_account(sandbox, "salesforce", seed=3, jobs_per_kind=40)
    assert sync_account(account.pk).outcome == "succeeded"
    assert sandbox.state(described["id"])["tokens_issued"] == 1
    # The org ends every session (an admin's revocation, a session timeout): the next call
    # is a 401 INVALID_SESSION_ID, answered by one new token, and the sync goes on.
    sandbox.control(described["id"], "revoke_tokens")
    sandbox.control(described["id"], "create_jobs", kind="ingest", count=3, size=50, failed=5)
    sandbox.clock(described["id"], advance=600)
    since = sandbox.requests(described["id"])[-1]["seq"]

    run = sync_account(account.pk)

    assert run.outcome == "succeeded", run.error
    sent = sandbox.requests(described["id"], since=since)
    assert [e["status"] for e in sent if e["path"] == TOKEN_PATH] == [200]
    assert [e["status"] for e in sent].count(401) == 1
    assert sandbox.state(described["id"])["tokens_issued"] == 2
    assert_equal_to_state(account, sandbox.state(described["id"]))


def test_a_staff_base_url_on_a_my_domain_host_is_accepted() -> None:
    from django.core.exceptions import ValidationError

    from jobcenter.accounts import validate_base_url

    url = "https://acme.my.salesforce.com"
    assert validate_base_url("salesforce", url + "/") == url
    for refused in ("https://my.salesforce.com.evil.example", "https://a.b.my.salesforce.com"):
        with pytest.raises(ValidationError):
            validate_base_url("salesforce", refused)
