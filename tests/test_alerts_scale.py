"""Alert evaluation costs the same number of queries for 100 changed jobs as for 10,000."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobcenter.alerts.evaluation import DIGEST_LIST_LIMIT, evaluate_after_sync
from jobcenter.models import (
    AlertChannel,
    AlertEvent,
    AlertRule,
    Job,
    JobError,
    JobSnapshot,
    ProviderAccount,
    SyncRun,
)
from tests.factories import sandbox_account

pytestmark = pytest.mark.django_db(transaction=True)

# Per rule: one INSERT ... SELECT per event type, one UPDATE for held events, and for the
# digest a read of its events, one of their first errors, the delivery and the link; the
# delivery task (inline in tests) a claim, a read and a save, plus django-q2's own rows.
# Four rules make about 55 on SQLite (which also logs BEGIN/COMMIT); none grows with jobs.
MAX_QUERIES = 60


def seed_changed_jobs(account: ProviderAccount, n: int) -> SyncRun:
    """A finished run that changed `n` jobs: 40% failed, 30% partly failed, 30% stuck."""
    now = timezone.now()
    run = SyncRun.objects.create(
        account=account,
        trigger="schedule",
        started_at=now - timedelta(minutes=1),
        finished_at=now,
        outcome="succeeded",
        jobs_changed=n,
    )
    long_ago = now - timedelta(hours=5)
    jobs = []
    for i in range(n):
        status = "failed" if i % 10 < 4 else "partially_failed" if i % 10 < 7 else "running"
        ended = status != "running"
        jobs.append(
            Job(
                account=account,
                provider=account.provider,
                kind="profile-bulk-import-job",
                external_id=f"job-{i:05d}",
                status=status,
                provider_status="complete" if ended else "processing",
                total_count=100,
                completed_count=0 if status == "failed" else 90 if ended else 30,
                failed_count=100 if status == "failed" else 10 if ended else 0,
                created_at=long_ago,
                started_at=long_ago,
                completed_at=now if ended else None,
                is_terminal=ended,
                last_seen_at=now,
                last_changed_at=now,
                errors_fetched_at=now if ended else None,
                error_count=1 if ended else 0,
            )
        )
    Job.objects.bulk_create(jobs, batch_size=2000)
    saved = list(Job.objects.filter(account=account).values_list("pk", "status"))
    snapshots = [JobSnapshot(job_id=pk, status="running", digest="a") for pk, _ in saved]
    snapshots += [JobSnapshot(job_id=pk, status=s, digest="b") for pk, s in saved if s != "running"]
    JobSnapshot.objects.bulk_create(snapshots, batch_size=4000)
    JobError.objects.bulk_create(
        [
            JobError(job_id=pk, position=0, code="invalid", message=f"row 2 of job {pk}: bad email")
            for pk, s in saved
            if s != "running"
        ],
        batch_size=4000,
    )
    return run


def test_evaluating_a_sync_that_changed_10000_jobs_runs_a_bounded_number_of_queries(
    sandbox, settings, django_assert_max_num_queries
) -> None:
    settings.JOBCENTER_ALERT_DIGEST_THRESHOLD = 10
    channel = AlertChannel.objects.create(name="mail", kind="email", recipients="ops@example.com")
    AlertRule.objects.create(
        name="failures", channel=channel, on_job_failed=True, on_job_partially_failed=True
    )
    AlertRule.objects.create(
        name="over 3%", channel=channel, on_job_partially_failed=True, partial_min_percent=3
    )
    AlertRule.objects.create(name="stuck", channel=channel, stuck_after_minutes=120)
    AlertRule.objects.create(name="failing", channel=channel, account_failures=3)
    small, _ = sandbox_account(sandbox, "klaviyo", jobs_per_kind=0)
    large, _ = sandbox_account(sandbox, "klaviyo", jobs_per_kind=0)

    small_run = seed_changed_jobs(small, 100)
    with CaptureQueriesContext(connection) as small_queries:
        evaluate_after_sync(small_run)
    assert AlertEvent.objects.filter(account=small).count() == 40 + 30 + 30 + 30

    large_run = seed_changed_jobs(large, 10_000)
    with (
        django_assert_max_num_queries(MAX_QUERIES),
        CaptureQueriesContext(connection) as large_queries,
    ):
        evaluation = evaluate_after_sync(large_run)
    assert len(large_queries) == len(small_queries)

    assert evaluation.fired == 4000 + 3000 + 3000 + 3000
    fired = AlertEvent.objects.filter(account=large)
    assert fired.filter(rule__name="failures").count() == 7000
    assert fired.filter(rule__name="over 3%").count() == 3000
    assert fired.filter(rule__name="stuck").count() == 3000
    # One digest per rule per evaluation: three for each account.
    assert len(mail.outbox) == 6
    subjects = sorted(m.subject for m in mail.outbox[3:])
    assert subjects == [
        "[Job Center] 3,000 alerts: over 3%",
        "[Job Center] 3,000 alerts: stuck",
        "[Job Center] 7,000 alerts: failures",
    ]
    digest = next(m.body for m in mail.outbox[3:] if "7,000" in m.subject)
    assert digest.count("\n- ") == DIGEST_LIST_LIMIT
    assert "…and 6,950 more" in digest
    assert "first error: invalid: row 2 of job" in digest

    # Evaluating the same run again finds nothing new, still in bounded queries.
    with django_assert_max_num_queries(MAX_QUERIES):
        again = evaluate_after_sync(large_run)
    assert again.fired == 0 and len(mail.outbox) == 6
