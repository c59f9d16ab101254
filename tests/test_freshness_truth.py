"""The freshness bench's definitions (bench/freshness_truth.py): which changes a job goes
through, and when the API is taken to have shown each."""

from __future__ import annotations

from typing import Any

from bench.freshness_truth import Seen, changes_of, measure

LISTED = {
    "kind": "catalog-item-bulk-create-job",
    "id": "job-1",
    "created": 100.0,
    "statuses": [[100.0, "queued"], [110.0, "processing"], [210.0, "complete"]],
    "progress": {
        "field": "completed_count",
        "start": 110.0,
        "end": 210.0,
        "final": 8,
        "until": 210.0,
    },
}
TRACKED = {
    "kind": "events-batch-import",
    "id": "batch-1",
    "created": 100.0,
    "statuses": [[100.0, "PROCESSING"], [160.0, "COMPLETED"]],
    "progress": None,
}


def seen(*states: tuple[float, str, int | None]) -> Seen:
    result = Seen()
    for state in states:
        result.add(*state)
    return result


def figures(
    entries: list[dict[str, Any]], polled: dict[tuple[str, str], Seen], window=(0.0, 1e9)
) -> tuple[dict[str, Any], dict[str, Any]]:
    running, new, earlier = measure(
        [("acct", entries)], polled, {"events-batch-import"}, window, 1000.0
    )
    assert earlier.figures()["n"] == 0
    return running.figures(), new.figures()


def test_changes_are_creation_status_changes_and_count_milestones() -> None:
    changes = changes_of("acct", LISTED, listed=True)
    assert [(c.what, c.at, c.rank, c.count) for c in changes] == [
        ("new", 100.0, 0, 0),
        ("status", 110.0, 1, 0),
        ("status", 210.0, 2, 0),
        ("count", 135.0, 1, 2),
        ("count", 160.0, 1, 4),
        ("count", 185.0, 1, 6),
    ]
    assert [c.what for c in changes_of("acct", TRACKED, listed=False)] == ["status"]


def test_milestones_skip_zero_values_and_what_a_cancellation_cut_short() -> None:
    small = dict(LISTED, progress=dict(LISTED["progress"], final=2))  # 0, 1, 1 at the quarters
    assert [c.count for c in changes_of("a", small, True) if c.what == "count"] == [1, 1]
    cancelled = dict(LISTED, progress=dict(LISTED["progress"], until=150.0))
    assert [c.at for c in changes_of("a", cancelled, True) if c.what == "count"] == [135.0]


def test_a_change_shows_at_the_first_answer_with_that_state_or_a_later_one() -> None:
    polled = {
        ("acct", "job-1"): seen(
            (103.0, "queued", 0),
            (140.0, "processing", 2),  # shows processing (30 s late) and the first quarter
            (170.0, "processing", 5),  # the half (at 160): 10 s
            (230.0, "complete", 8),  # three quarters (at 185) only now: 45 s; complete 20 s
        )
    }
    running, new = figures([LISTED], polled)
    assert new == {"n": 1, "unseen": 0, "p50": 3.0, "p95": 3.0, "max": 3.0}
    assert running["n"] == 5 and running["unseen"] == 0
    assert running["max"] == 45.0 and running["p50"] == 20.0


def test_tracked_jobs_count_their_status_changes_only_and_a_status_unknown_yet_is_ignored() -> None:
    polled = {("acct", "batch-1"): seen((100.5, "", None), (163.0, "COMPLETED", 30))}
    running, new = figures([TRACKED], polled)
    assert new == {"n": 0, "unseen": 0}
    assert running == {"n": 1, "unseen": 0, "p50": 3.0, "p95": 3.0, "max": 3.0}


def test_changes_from_before_the_job_first_showed_are_reported_apart() -> None:
    # Found at 150, already processing with 3 done: its start (110) and first quarter
    # (135) happened before the API showed the job at all.
    polled = {("acct", "job-1"): seen((150.0, "processing", 3), (212.0, "complete", 8))}
    running, new, earlier = measure([("acct", [LISTED])], polled, set(), (0.0, 1e9), 1000.0)
    assert new.figures()["p95"] == 50.0
    assert sorted(earlier.values) == [15.0, 40.0]
    assert sorted(running.values) == [2.0, 27.0, 52.0]  # complete; the half; 3/4


def test_only_changes_in_the_window_count_and_unseen_ones_count_to_the_end() -> None:
    running, new, earlier = measure([("acct", [LISTED])], {}, set(), (150.0, 200.0), 1000.0)
    assert new.figures() == running.figures() == {"n": 0, "unseen": 0}
    # The half (160) and three quarters (185) fall in the window; never shown by 1000.
    assert earlier.figures() == {"n": 2, "unseen": 2, "p50": 815.0, "p95": 840.0, "max": 840.0}
