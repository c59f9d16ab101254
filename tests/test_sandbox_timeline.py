"""The sandbox's clock moves jobs continuously, and `/_sandbox/timeline` says exactly how.

The freshness bench (bench/freshness.py) takes its ground truth from the timeline, so
it must agree with what each provider's API answers at every moment; new jobs keep
appearing on the clock (Klaviyo, Elastic Path) or are made with a chosen run time
(Fullstory); the stats count each account's requests and 429s.
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any

import pytest
import requests

from providers.sandbox.client import SandboxClient
from providers.sandbox.elasticpath import JOB_TYPES


def status_at(entry: dict[str, Any], moment: float) -> str:
    """The timeline's status of a job at `moment`: the last change at or before it."""
    return [status for at, status in entry["statuses"] if at <= moment][-1]


def count_at(progress: dict[str, Any], moment: float) -> int:
    """The count a timeline's progress gives at `moment` (start <= moment < until)."""
    elapsed, length = moment - progress["start"], progress["end"] - progress["start"]
    return int(progress["final"] * elapsed / length)


def timeline(sandbox: SandboxClient, account_id: str) -> tuple[float, dict[str, Any]]:
    answer = sandbox.timeline(account_id)
    return answer["now"], {job["id"]: job for job in answer["jobs"]}


def test_klaviyo_timeline_is_what_the_api_answers_as_the_clock_moves(
    sandbox: SandboxClient,
) -> None:
    described = sandbox.create_account(
        "klaviyo",
        seed=5,
        jobs_per_kind=2,
        frozen=True,
        rate_limits=False,
        new_jobs_per_minute=13,
        new_job_queued_seconds=[10, 30],
        new_job_processing_seconds=[40, 120],
    )
    account_id = described["id"]
    origin, _ = timeline(sandbox, account_id)
    processing_seen = 0
    for _ in range(14):
        sandbox.clock(account_id, advance=17)
        now, entries = timeline(sandbox, account_id)
        jobs = sandbox.state(account_id)["jobs"]
        assert {job["id"] for job in jobs} == set(entries)
        for job in jobs:
            entry = entries[job["id"]]
            assert job["status"] == status_at(entry, now), entry
            progress = entry["progress"]
            if job["status"] == "processing":
                processing_seen += 1
                assert progress["start"] <= now < progress["until"]
                assert job["completed_count"] == count_at(progress, now)
            elif job["status"] == "complete":
                assert job["completed_count"] == progress["final"]
    assert processing_seen > 20

    _, entries = timeline(sandbox, account_id)
    new = [e for e in entries.values() if e["created"] > origin]
    assert len(new) == math.floor(14 * 17 / 60 * 13)
    for entry in new:
        (created, first), *later = entry["statuses"]
        assert first == "queued"
        if later and later[0][1] == "processing":
            assert 10 <= later[0][0] - created <= 30
            if len(later) > 1 and later[1][1] == "complete":
                assert 40 <= later[1][0] - later[0][0] <= 120


def test_a_klaviyo_job_made_by_control_has_the_schedule_it_was_given(
    sandbox: SandboxClient,
) -> None:
    described = sandbox.create_account("klaviyo", jobs_per_kind=0, frozen=True)
    account_id = described["id"]
    (job_id,) = sandbox.control(
        account_id,
        "create_jobs",
        kind="catalog-item-bulk-create-job",
        queued_seconds=10,
        processing_seconds=100,
        total_count=50,
    )["ids"]
    now, entries = timeline(sandbox, account_id)
    entry = entries[job_id]
    created = entry["created"]
    assert created == pytest.approx(now)
    assert entry["statuses"] == [
        [created, "queued"],
        [pytest.approx(created + 10), "processing"],
        [pytest.approx(created + 110), "complete"],
    ]
    progress = entry["progress"]
    assert progress["field"] == "completed_count" and progress["final"] == 50
    assert progress["until"] == pytest.approx(progress["end"])
    sandbox.clock(account_id, advance=60)
    (job,) = sandbox.state(account_id)["jobs"]
    assert job["status"] == "processing" and job["completed_count"] == 25


def test_klaviyo_refuses_a_range_of_seconds_upside_down(sandbox: SandboxClient) -> None:
    with pytest.raises(requests.HTTPError) as refused:
        sandbox.create_account("klaviyo", new_job_processing_seconds=[60, 30])
    assert refused.value.response.status_code == 400


def test_elasticpath_new_jobs_appear_and_run_one_at_a_time_on_the_clock(
    sandbox: SandboxClient,
) -> None:
    options = {
        "seed": 3,
        "jobs_per_kind": 0,
        "frozen": True,
        "rate_limits": False,
        "new_jobs_per_minute": 6,  # one every 10 s, each running 15 to 25 s: a queue
        "new_job_seconds": [15, 25],
    }
    account_id = sandbox.create_account("elasticpath", **options)["id"]
    assert sandbox.state(account_id)["jobs"] == []
    sandbox.clock(account_id, advance=61)
    jobs = sandbox.state(account_id)["jobs"]  # newest first
    assert [job["kind"] for job in reversed(jobs)] == [JOB_TYPES[i % 5] for i in range(6)]
    statuses_seen = set()
    for _ in range(12):
        now, entries = timeline(sandbox, account_id)
        for job in sandbox.state(account_id)["jobs"]:
            assert job["status"] == status_at(entries[job["id"]], now)
            statuses_seen.add(job["status"])
        sandbox.clock(account_id, advance=4)
    assert {"pending", "started", "success"} <= statuses_seen

    _, entries = timeline(sandbox, account_id)
    runs = sorted((entry["statuses"][1][0], entry["statuses"][2][0]) for entry in entries.values())
    for entry in entries.values():
        assert entry["progress"] is None
        assert [status for _, status in entry["statuses"]][:2] == ["pending", "started"]
        assert entry["statuses"][2][1] in ("success", "failed")
    for (_, ended), (started, _) in pairwise(runs):
        assert started >= ended  # one job at a time per store
    for started, ended in runs:
        assert 15 <= ended - started <= 25

    twin = sandbox.create_account("elasticpath", **options)["id"]
    sandbox.clock(twin, advance=61)
    assert [j["id"] for j in sandbox.state(twin)["jobs"]] == [j["id"] for j in jobs]


def test_elasticpath_refuses_new_job_seconds_upside_down(sandbox: SandboxClient) -> None:
    with pytest.raises(requests.HTTPError) as refused:
        sandbox.create_account("elasticpath", new_jobs_per_minute=1, new_job_seconds=[9, 3])
    assert refused.value.response.status_code == 400


def test_fullstory_batches_made_by_control_run_for_the_seconds_asked(
    sandbox: SandboxClient,
) -> None:
    account_id = sandbox.create_account("fullstory", frozen=True, rate_limits=False)["id"]
    made = sandbox.control(
        account_id, "create_jobs", kind="events", count=2, size=5, failed=1, processing_seconds=40
    )
    now, entries = timeline(sandbox, account_id)
    for job_id in made["ids"]:
        entry = entries[job_id]
        assert entry["kind"] == "events-batch-import" and entry["progress"] is None
        assert entry["statuses"] == [
            [pytest.approx(now, abs=0.001), "PROCESSING"],
            [pytest.approx(now + 40, abs=0.001), "FAILED"],
        ]
    sandbox.clock(account_id, advance=39)
    assert {job["status"] for job in sandbox.state(account_id)["jobs"]} == {"PROCESSING"}
    sandbox.clock(account_id, advance=1)
    assert {job["status"] for job in sandbox.state(account_id)["jobs"]} == {"FAILED"}
    with pytest.raises(requests.HTTPError):
        sandbox.control(account_id, "create_jobs", kind="users", processing_seconds=-1)


def test_stats_count_each_accounts_requests_and_429s(sandbox: SandboxClient) -> None:
    described = sandbox.create_account(
        "fullstory", rate_limits=True, requests_per_second=1, burst=[100, 10]
    )
    key = described["credentials"]["api_key"]
    url = f"{sandbox.base_url('fullstory')}/v2/events/batch/nosuchbatch"
    codes = [
        requests.get(url, headers={"Authorization": f"Basic {key}"}, timeout=10).status_code
        for _ in range(3)
    ]
    assert set(codes) <= {404, 429} and 429 in codes
    counted = sandbox.stats()["accounts"][described["id"]]
    assert counted["requests"] == 3
    assert counted["throttled"] == codes.count(429)
    assert counted["rate_limit_violations"] == codes.count(429)


def test_timeline_of_an_unknown_account_is_404(sandbox: SandboxClient) -> None:
    with pytest.raises(requests.HTTPError) as missing:
        sandbox.timeline("klaviyo-nosuch")
    assert missing.value.response.status_code == 404
