"""What real APIs and networks do to a sync: injected by the sandbox, survived by the client."""

from __future__ import annotations

import itertools
import threading

import pytest
from django.db.models import Count, Sum
from django.test import override_settings

from jobcenter.models import Job, JobSnapshot, SyncRun
from jobcenter.sync.engine import sync_account
from jobcenter.sync.tracking import track_job
from providers.errors import BadResponse, TransientError
from providers.fullstory import FullstoryProvider
from providers.http import RetryPolicy
from providers.outbound import OutboundPolicy
from tests.factories import create_fullstory_batch, events, local_jobs, sandbox_account, users

FAST_RETRY = {
    "max_attempts": 4,
    "backoff_base": 0.02,
    "backoff_cap": 0.2,
    "max_total_wait": 10.0,
    "max_inline_retry_after": 2.0,
}
ONE_TRY = RetryPolicy(max_attempts=1)


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("500", TransientError),
        ("502", TransientError),
        ("503", TransientError),
        ("reset", TransientError),
        ("truncated", TransientError),
        ("timeout", TransientError),
        ("content_type", BadResponse),
    ],
)
def test_every_fault_kind_becomes_a_typed_error(sandbox, fault, error) -> None:
    described = sandbox.create_account("fullstory", frozen=True, rate_limits=False)
    batch = create_fullstory_batch(sandbox, described, "users-batch-import", users(2))
    sandbox.control(described["id"], "faults", rate=1.0, mix={fault: 1}, timeout_seconds=1.0)
    provider = FullstoryProvider(
        described["credentials"],
        base_url=sandbox.base_url("fullstory"),
        retry=ONE_TRY,
        # Only the timeout fault may time out: the others have all the time they need.
        timeout=(10.0, 0.5 if fault == "timeout" else 30.0),
        outbound=OutboundPolicy.development(),  # the sandbox is on loopback
    )
    with pytest.raises(error):
        provider.fetch_job("users-batch-import", batch)
    assert provider.client.counters.failed_attempts == 1


def test_a_short_429_is_waited_out_and_counted(sandbox) -> None:
    described = sandbox.create_account("fullstory", frozen=True, rate_limits=False)
    batch = create_fullstory_batch(sandbox, described, "users-batch-import", users(2))
    sandbox.control(described["id"], "faults", rate=0.5, mix={"429": 1}, seed=3)
    provider = FullstoryProvider(
        described["credentials"],
        base_url=sandbox.base_url("fullstory"),
        retry=RetryPolicy(max_attempts=8, max_total_wait=20),
        outbound=OutboundPolicy.development(),
    )
    for _ in range(6):
        assert provider.fetch_job("users-batch-import", batch).external_id == batch
    injected = sandbox.stats()["accounts"][described["id"]]["faults"]["injected"].get("429", 0)
    assert injected > 0
    assert provider.client.counters.retries == injected
    assert provider.client.counters.rate_limit_waits == injected


@pytest.mark.django_db(transaction=True)
def test_soak_with_faults_and_moving_jobs_then_a_clean_sync_equals_the_sandbox(sandbox) -> None:
    # A read times out after 2 s, an injected timeout fault is 3 s of silence: only the
    # injected ones time out, however slowly a busy machine answers the rest.
    with override_settings(JOBCENTER_RETRY=FAST_RETRY, JOBCENTER_HTTP_TIMEOUT=(5.0, 2.0)):
        klaviyo, k = sandbox_account(sandbox, "klaviyo", seed=21, jobs_per_kind=25, frozen=False)
        store, e = sandbox_account(sandbox, "elasticpath", seed=22, jobs_per_kind=15, frozen=False)
        org, f = sandbox_account(sandbox, "fullstory", processing_seconds=120, page_size=20)
        batches = [
            create_fullstory_batch(
                sandbox, f, "events-batch-import", events(60, fail=range(0, 60, 3))
            ),
            create_fullstory_batch(sandbox, f, "users-batch-import", users(30)),
            create_fullstory_batch(sandbox, f, "users-batch-import", users(10, fail=range(10))),
        ]
        for kind, batch in zip(
            ["events-batch-import", "users-batch-import", "users-batch-import"],
            batches,
            strict=True,
        ):
            track_job(org, kind, batch)
        accounts = [(klaviyo, k), (store, e), (org, f)]
        for _, described in accounts:
            sandbox.control(
                described["id"], "faults", rate=0.2, seed=5, timeout_seconds=3.0, retry_after=1
            )

        # Jobs keep moving while the syncs run: every account's clock runs fast.
        stop = threading.Event()

        def move_clocks() -> None:
            while not stop.wait(0.1):
                for _, described in accounts:
                    sandbox.clock(described["id"], advance=20)

        mover = threading.Thread(target=move_clocks, daemon=True)
        mover.start()
        try:
            for _ in range(4):
                for account, _ in accounts:
                    run = sync_account(account.pk)
                    assert run.outcome in ("succeeded", "partial", "failed"), run.error
        finally:
            stop.set()
            mover.join()

        injected = 0
        for _, described in accounts:
            plan = sandbox.stats()["accounts"][described["id"]]["faults"]["injected"]
            injected += sum(n for kind, n in plan.items() if kind != "expired_cursor")
            sandbox.control(described["id"], "faults", rate=0)
            sandbox.clock(described["id"], freeze=True)
        runs = SyncRun.objects.filter(account__in=[a for a, _ in accounts])
        failed_attempts = sum(r.detail.get("failed_attempts", 0) for r in runs)
        assert injected > 20, "the soak did not inject enough faults to mean anything"
        assert failed_attempts == injected, "every injected fault shows in a SyncRun"
        assert runs.aggregate(n=Sum("retries"))["n"] > 0

        for account, _ in accounts:
            clean = sync_account(account.pk)
            assert clean.outcome == "succeeded", clean.error

    # Klaviyo and Elastic Path: every job the sandbox has, nothing more, with its status.
    for account, described in accounts[:2]:
        state = sandbox.state(described["id"])
        local = local_jobs(account)
        remote = {(j["kind"], j["id"]): j for j in state["jobs"]}
        assert set(local) == set(remote)
        for key, job in remote.items():
            assert local[key]["provider_status"] == job["status"], key
    # Fullstory: the tracked batches ended as the sandbox says.
    for job in sandbox.state(f["id"])["jobs"]:
        mine = Job.objects.get(account=org, external_id=job["id"])
        assert mine.provider_status == job["status"]
        assert mine.completed_count == job["imports"]
        assert mine.error_count == job["error_count"]
    # No duplicates, and every job's history is in order with no repeated state.
    assert not (
        Job.objects.values("account", "kind", "external_id").annotate(n=Count("id")).filter(n__gt=1)
    )
    for job in Job.objects.filter(account__in=[a for a, _ in accounts]):
        history = list(JobSnapshot.objects.filter(job=job).order_by("id"))
        times = [s.observed_at for s in history]
        assert times == sorted(times), job
        for before, after in itertools.pairwise(history):
            assert (before.digest, before.status) != (after.digest, after.status), job
