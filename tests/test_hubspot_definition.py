"""HubSpot CRM imports as a definition (providers/definitions/hubspot.yaml), synced by the
real engine against the HubSpot sandbox over HTTP (tests/definition_checks.py)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from jobcenter.models import Job, JobError
from jobcenter.sync.engine import sync_account
from providers import get_provider
from tests import definition_checks as checks

pytestmark = pytest.mark.django_db(transaction=True)


def agree(job: dict[str, Any], local: dict[str, Any]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    return (
        (job["status"], job["total_count"], job["completed_count"]),
        (local["provider_status"], local["total_count"], local["completed_count"]),
    )


HUBSPOT = checks.Shipped(
    slug="hubspot",
    spec="hubspot-imports-v3",
    json_media_types=("*/*",),  # HubSpot's error answers are JSON, typed */* by its spec
    credential="access_token",
    wrong_secret="pat-na1-00000000-1111-4222-8333-444444444444",
    agree=agree,
)


def test_a_sync_sends_and_receives_only_what_the_spec_documents(sandbox) -> None:
    account, run, log = checks.assert_sync_holds_to_the_spec(
        HUBSPOT, sandbox, seed=4, jobs_per_kind=250
    )
    listed = [e for e in log if e["path"] == "/crm/v3/imports"]
    assert len(listed) == run.pages == 3  # 250 imports in pages of 100, by `after`
    errors = [e for e in log if e["path"].endswith("/errors")]
    assert errors and all("includeErrorMessage=true" in e["query_string"] for e in errors)
    # Failed imports carry their row errors, with HubSpot's message and type.
    failed = Job.objects.filter(account=account, status="failed")
    assert failed.exists() and not failed.filter(errors_fetched_at__isnull=True).exists()
    error = JobError.objects.filter(job__account=account).exclude(code="INVALID_SPREADSHEET")
    assert error.exists() and all(e.message and e.code and e.source for e in error[:20])
    statuses = set(Job.objects.filter(account=account).values_list("status", flat=True))
    assert {"queued", "running", "succeeded", "failed", "cancelled"} <= statuses


def test_the_definition_declares_what_hubspot_documents() -> None:
    provider = get_provider("hubspot")
    assert provider.fetches_by_id
    freshness = provider.listing_freshness("crm-import")
    assert (freshness.status_filter_calls, freshness.newest_first) == (0, False)
    assert provider.kinds[0].name == "crm-import"


def test_a_wrong_token_fails_in_words_and_leaks_nowhere(sandbox, admin_client, caplog) -> None:
    run = checks.assert_wrong_credential_fails_in_words(HUBSPOT, sandbox, admin_client, caplog)
    assert "HTTP 401" in run.error and "Authentication credentials not found" in run.error


def test_a_malformed_answer_is_a_bad_response_kept_with_an_excerpt(sandbox) -> None:
    checks.assert_malformed_answer_is_kept_with_an_excerpt(HUBSPOT, sandbox)


def test_ten_thousand_imports_sync_equal_at_a_constant_cost_per_page(sandbox) -> None:
    small = checks.sync_counting_queries(HUBSPOT, sandbox, 1_000, seed=8)
    big = checks.sync_counting_queries(HUBSPOT, sandbox, 10_000, seed=8)
    account, state, run, _ = big
    assert len(state["jobs"]) == 10_000 and run.pages == 100
    checks.assert_equal_to_state(HUBSPOT, account, state)
    # Transactions of ten pages: 42 queries per ten pages, 14 for the run (measured).
    # PostgreSQL reads the new jobs' ids back after the COPY: one query more a page.
    per_page = 5 if connection.vendor == "sqlite" else 6
    checks.assert_constant_queries_per_page(small, big, per_page=per_page, fixed=20)

    # The next sync changes nothing and fetches failed imports' errors (200 a run).
    again = sync_account(account.pk)
    assert (again.outcome, again.jobs_created, again.jobs_changed) == ("succeeded", 0, 0)
    assert again.requests == again.pages + 200
    expected = {job["id"]: job["error_count"] for job in state["jobs"]}
    fetched = Job.objects.filter(account=account, errors_fetched_at__isnull=False)
    assert fetched.count() == 200
    for job in fetched.only("external_id", "error_count"):
        assert job.error_count == expected[job.external_id], job.external_id
