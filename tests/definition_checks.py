"""What every shipped provider definition must show, checked the same way for each
(tests/test_hubspot_definition.py, tests/test_mailchimp_definition.py): a sync through the
real engine against its sandbox over HTTP whose every request and answer holds to the
provider's official spec, a wrong credential that fails in words and leaks nowhere, a
malformed answer kept as a BadResponse with an excerpt, and 10,000 jobs synced equal to
the sandbox at a constant number of queries per page.

The official specs are read from ../shared/specs/reference-only/ and never copied into
the project (HubSpot's is not licensed for redistribution); the spec checks skip with a
message when that folder is absent.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext

from jobcenter.models import Job, ProviderAccount, SyncRun
from jobcenter.sync.engine import sync_account
from providers.sandbox.client import SandboxClient
from tests.factories import local_jobs, sandbox_account
from tests.leaks import assert_secret_nowhere
from tests.openapi_check import REFERENCE_ONLY_DIR, request_errors, response_errors, spec_path

# Retries that give up fast: a fault injected on every answer ends a run in seconds.
FAST_RETRY = {
    "max_attempts": 2,
    "backoff_base": 0.01,
    "backoff_cap": 0.05,
    "max_total_wait": 5.0,
    "max_inline_retry_after": 1.0,
}


@dataclass(frozen=True)
class Shipped:
    """One shipped definition and the facts its checks need."""

    slug: str
    spec: str  # the reference-only spec's name
    json_media_types: tuple[str, ...]  # error bodies the spec types otherwise
    credential: str  # the credential field holding the secret
    wrong_secret: str  # a well-formed secret the sandbox does not know
    # (a sandbox job from state(), the local job) -> what must agree, as two tuples
    agree: Callable[[dict[str, Any], dict[str, Any]], tuple[tuple[Any, ...], tuple[Any, ...]]]

    def spec_checks(self) -> dict[str, Any]:
        """The keywords of tests.openapi_check's request_errors and response_errors; skips
        the test when the spec is not beside the project."""
        path = spec_path(self.spec, REFERENCE_ONLY_DIR)
        if not path.is_file():
            pytest.skip(f"{self.slug}'s official spec is read from {path}, which is absent")
        return {"folder": REFERENCE_ONLY_DIR, "json_media_types": self.json_media_types}


def spec_problems(shipped: Shipped, log: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """For each logged request whose request or answer breaks the spec: what and why."""
    checks = shipped.spec_checks()
    problems = []
    with warnings.catch_warnings():  # openapi-core checks no OAuth 2 scheme; both offer one
        warnings.filterwarnings("ignore", "Unsupported scheme type", UserWarning)
        for entry in log:
            found = request_errors(shipped.spec, entry, **checks)
            found += response_errors(shipped.spec, entry, **checks)
            if found:
                problems.append(
                    (f"{entry['method']} {entry['path']}?{entry['query_string']}", found)
                )
    return problems


def assert_equal_to_state(shipped: Shipped, account: ProviderAccount, state: dict) -> None:
    """The account's visible jobs are the sandbox's, each agreeing with it."""
    local = local_jobs(account)
    remote = {(job["kind"], job["id"]): job for job in state["jobs"]}
    assert set(local) == set(remote)
    for key, job in remote.items():
        mine, theirs = shipped.agree(job, local[key])
        assert mine == theirs, key


def assert_sync_holds_to_the_spec(
    shipped: Shipped, sandbox: SandboxClient, **options: Any
) -> tuple[ProviderAccount, SyncRun, list[dict[str, Any]]]:
    """A sync of a fresh sandbox account; every request sent and answer received holds to
    the official spec. Returns the account, the run and the request log."""
    shipped.spec_checks()
    account, described = sandbox_account(sandbox, shipped.slug, **options)
    run = sync_account(account.pk)
    assert run.outcome == "succeeded", run.error
    log = sandbox.requests(described["id"])
    assert log
    assert spec_problems(shipped, log) == []
    assert_equal_to_state(shipped, account, sandbox.state(described["id"]))
    return account, run, log


def assert_wrong_credential_fails_in_words(
    shipped: Shipped, sandbox: SandboxClient, client: Client, caplog: pytest.LogCaptureFixture
) -> SyncRun:
    """A credential the provider does not know: the run fails as an authentication
    failure, after one request, and the secret is in no error, page, log or table."""
    caplog.set_level(logging.DEBUG)
    credentials = {shipped.credential: shipped.wrong_secret}
    account, _ = sandbox_account(sandbox, shipped.slug, jobs_per_kind=3, credentials=credentials)
    before = (sandbox.requests() or [{"seq": 0}])[-1]["seq"]
    run = sync_account(account.pk)
    account.refresh_from_db()
    assert run.outcome == "failed"
    assert run.error.startswith("authentication failed"), run.error
    assert account.last_status == "failing"
    sent = [e for e in sandbox.requests(since=before) if e["provider"] == shipped.slug]
    assert [e["status"] for e in sent] == [401], "an auth failure is not retried"
    assert_secret_nowhere(
        shipped.wrong_secret, client=client, account=account, run=run, log_text=caplog.text
    )
    return run


def assert_malformed_answer_is_kept_with_an_excerpt(
    shipped: Shipped, sandbox: SandboxClient
) -> SyncRun:
    """Every answer replaced by a proxy's HTML page under a 200: the listing ends as a
    BadResponse whose message and excerpt are in the run's error."""
    account, described = sandbox_account(sandbox, shipped.slug, jobs_per_kind=3)
    sandbox.control(described["id"], "faults", rate=1.0, mix={"content_type": 1})
    with override_settings(JOBCENTER_RETRY=FAST_RETRY):
        run = sync_account(account.pk)
    assert run.outcome in ("partial", "failed")
    assert "instead of JSON" in run.error, run.error
    assert "Down for maintenance" in run.error, run.error  # the answer's excerpt
    assert run.detail.get("failed_attempts", 0) >= 1
    assert not Job.objects.filter(account=account).exists()
    return run


def sync_counting_queries(
    shipped: Shipped, sandbox: SandboxClient, jobs: int, **options: Any
) -> tuple[ProviderAccount, dict[str, Any], SyncRun, int]:
    """A first sync of `jobs` sandbox jobs: the account, its sandbox state, the run and
    the number of queries the sync made."""
    account, described = sandbox_account(sandbox, shipped.slug, jobs_per_kind=jobs, **options)
    # The listings' cost alone: error records are fetched after them, per failed job.
    with (
        override_settings(JOBCENTER_ERROR_FETCHES_PER_RUN=0),
        CaptureQueriesContext(connection) as queries,
    ):
        run = sync_account(account.pk)
    assert run.outcome == "succeeded", run.error
    return account, sandbox.state(described["id"]), run, len(queries)


def assert_constant_queries_per_page(
    small: tuple[Any, ...], big: tuple[Any, ...], *, per_page: int, fixed: int
) -> None:
    """Two first syncs (of sync_counting_queries) cost `fixed` queries plus at most
    `per_page` for each page, whatever the number of jobs: the big one's ten times the
    jobs cost only its pages' queries more."""
    (_, _, small_run, small_queries), (_, _, big_run, big_queries) = small, big
    assert big_run.jobs_seen >= 5 * small_run.jobs_seen and big_run.pages > small_run.pages
    cost = (big_queries - small_queries) / (big_run.pages - small_run.pages)
    assert cost <= per_page, (small_queries, small_run.pages, big_queries, big_run.pages)
    assert 0 <= small_queries - cost * small_run.pages <= fixed, (small_queries, cost)
