"""Mailchimp batch operations as a definition (providers/definitions/mailchimp.yaml),
synced by the real engine against the Mailchimp sandbox over HTTP
(tests/definition_checks.py)."""

from __future__ import annotations

from typing import Any

import pytest

from jobcenter.models import Job, JobError
from jobcenter.sync.engine import sync_account
from providers import get_provider
from providers.errors import AuthError
from tests import definition_checks as checks

pytestmark = pytest.mark.django_db(transaction=True)
COUNTS = ("total_operations", "finished_operations", "errored_operations")


def agree(job: dict[str, Any], local: dict[str, Any]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    return (
        (job["status"], *(job[c] for c in COUNTS)),
        (
            local["provider_status"],
            local["total_count"],
            local["completed_count"],
            local["failed_count"],
        ),
    )


MAILCHIMP = checks.Shipped(
    slug="mailchimp",
    spec="mailchimp-batches",
    json_media_types=("application/problem+json",),  # RFC 9457 error answers
    credential="api_key",
    wrong_secret="0123456789abcdef0123456789abcdef-us21",
    agree=agree,
)


def test_a_sync_sends_and_receives_only_what_the_spec_documents(sandbox) -> None:
    account, _, log = checks.assert_sync_holds_to_the_spec(
        MAILCHIMP, sandbox, seed=4, jobs_per_kind=2_500
    )
    listed = [e for e in log if e["path"] == "/3.0/batches"]
    assert [e["query_string"] for e in listed] == [
        f"offset={offset}&count=1000" for offset in (0, 1000, 2000)
    ]
    assert all(e["headers"]["Authorization"] == "Bearer [redacted]" for e in log)
    # "finished" is read by the counts; the results archive is a link, never fetched.
    jobs = Job.objects.filter(account=account)
    statuses = set(jobs.values_list("status", flat=True))
    assert {"queued", "running", "succeeded", "partially_failed", "failed"} <= statuses
    assert not JobError.objects.filter(job__account=account).exists()
    assert all(not e["path"].endswith(".tar.gz") for e in log)
    finished = jobs.filter(provider_status="finished").first()
    provider = get_provider("mailchimp")
    assert provider.job_links(finished.payload) == [
        ("Results archive", finished.payload["response_body_url"])
    ]


def test_the_definition_declares_what_mailchimp_documents() -> None:
    provider = get_provider("mailchimp")
    assert provider.fetches_by_id
    freshness = provider.listing_freshness("batch")
    assert (freshness.status_filter_calls, freshness.newest_first) == (0, False)
    # The data centre is the key's suffix; a key without one fails before anything is sent.
    assert provider.rendered_base_url(provider.template_values({"api_key": "ab12-us6"})) == (
        "https://us6.api.mailchimp.com"
    )
    with pytest.raises(AuthError, match="authentication failed: the API key does not say"):
        provider.template_values({"api_key": "ab12"})


def test_a_wrong_key_fails_in_words_and_leaks_nowhere(sandbox, admin_client, caplog) -> None:
    run = checks.assert_wrong_credential_fails_in_words(MAILCHIMP, sandbox, admin_client, caplog)
    assert "HTTP 401" in run.error and "API key may be invalid" in run.error


def test_a_malformed_answer_is_a_bad_response_kept_with_an_excerpt(sandbox) -> None:
    checks.assert_malformed_answer_is_kept_with_an_excerpt(MAILCHIMP, sandbox)


def test_ten_thousand_batches_sync_equal_at_a_constant_cost_per_page(sandbox) -> None:
    small = checks.sync_counting_queries(MAILCHIMP, sandbox, 2_000, seed=8)
    big = checks.sync_counting_queries(MAILCHIMP, sandbox, 10_000, seed=8)
    account, state, run, _ = big
    assert len(state["jobs"]) == 10_000 and run.pages == 10
    checks.assert_equal_to_state(MAILCHIMP, account, state)
    # Transactions of ten pages: 4 queries a page, 16 for the run (measured).
    checks.assert_constant_queries_per_page(small, big, per_page=8, fixed=20)
    again = sync_account(account.pk)
    assert (again.outcome, again.jobs_created, again.jobs_changed) == ("succeeded", 0, 0)
    assert again.requests == again.pages == 10  # no error endpoint to ask
