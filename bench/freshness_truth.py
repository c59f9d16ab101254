"""The ground truth of bench/freshness.py: each change a sandbox job goes through, and
when the API first showed it.

Definitions (docs/performance.md, "Freshness", says the same):

- A job's changes come from the sandbox's timeline (`/_sandbox/timeline`, schedules on
  the account's clock): its creation; each status change (queued -> processing ->
  complete, pending -> started -> success, PROCESSING -> FAILED, ...); and, for a count
  that grows while the job runs (Klaviyo's completed_count), three milestones: the
  moments a quarter, half and three quarters of its run have passed, each with the value
  the count reads then (skipped when that value is 0 or the job is cancelled first).
- Running-job changes are the status changes and the milestones of jobs the API
  already showed when the change happened. A change from before the API first showed
  its job (a job that started before it was found) shows with the job, its delay
  bounded by the new job's: it is reported apart, as an earlier change.
- New jobs are the creations of jobs a listing finds; jobs of kinds no listing shows
  (Fullstory's batches) are registered by their client through the API's track call, so
  the API shows them at once: their status changes count, their creations do not.
- The API shows a change at the first poll answer in which the job has that status or a
  later one of its timeline (for a milestone: that status with at least that count, or
  a later status); a job's creation, at the first answer that holds the job at all.
- The delay is the arrival time of that answer minus the time of the change on the
  sandbox clock, which is the real clock (the bench never moves accounts' clocks). Only
  changes inside the measured window count. One never shown by the end counts with the
  delay it had reached by then (so the figures are lower bounds) and as unseen.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bench.large import percentile

MILESTONES = (0.25, 0.5, 0.75)
JobKey = tuple[str, str]  # (sandbox account id, job id)


@dataclass(frozen=True)
class Change:
    what: str  # "new", "status" or "count"
    job: JobKey
    at: float  # epoch seconds
    rank: int  # the index in the job's statuses the API must reach (or pass)
    count: int = 0  # a milestone's value, at that rank

    @property
    def running(self) -> bool:
        return self.what != "new"


@dataclass
class Seen:
    """What the poller saw of one job: (answer time, provider status, count) per change."""

    states: list[tuple[float, str, int | None]] = field(default_factory=list)

    def add(self, at: float, status: str, count: int | None) -> None:
        if not self.states or self.states[-1][1:] != (status, count):
            self.states.append((at, status, count))


def changes_of(account: str, entry: dict[str, Any], listed: bool) -> list[Change]:
    """Every change of one timeline entry (its creation only if a listing finds it)."""
    job = (account, entry["id"])
    statuses = entry["statuses"]
    found = [Change("new", job, entry["created"], 0)] if listed else []
    found += [Change("status", job, at, rank) for rank, (at, _) in enumerate(statuses) if rank]
    progress = entry["progress"]
    if progress:
        start, end = progress["start"], progress["end"]
        rank = max(i for i, (at, _) in enumerate(statuses) if at <= start)
        for share in MILESTONES:
            at = start + share * (end - start)
            # The sandbox's own expression (klaviyo.Job.completed_at), so the same value.
            value = int(progress["final"] * (at - start) / (end - start))
            if at < progress["until"] and value >= 1:
                found.append(Change("count", job, at, rank, value))
    return found


def shown_at(change: Change, statuses: list[str], seen: Seen | None) -> float | None:
    """When the API first showed `change`, or None if it never did."""
    if seen is None or not seen.states:
        return None
    if change.what == "new":
        return seen.states[0][0]
    for at, status, count in seen.states:
        if status not in statuses:
            continue  # a tracked job before its first sync has no status yet
        rank = statuses.index(status)
        if rank > change.rank or (
            rank == change.rank and (change.what == "status" or (count or 0) >= change.count)
        ):
            return at
    return None


@dataclass
class Delays:
    """The delays of one kind of change in one run, in seconds."""

    values: list[float] = field(default_factory=list)
    unseen: int = 0

    def figures(self) -> dict[str, float | int]:
        if not self.values:
            return {"n": 0, "unseen": self.unseen}
        return {
            "n": len(self.values),
            "unseen": self.unseen,
            "p50": percentile(self.values, 0.50),
            "p95": percentile(self.values, 0.95),
            "max": max(self.values),
        }


def measure(
    timelines: Iterable[tuple[str, list[dict[str, Any]]]],
    seen: dict[JobKey, Seen],
    tracked_kinds: set[str],
    window: tuple[float, float],
    end: float,
) -> tuple[Delays, Delays, Delays]:
    """(running-job changes, new jobs, earlier changes) inside `window`; `end` is when
    polling stopped, for the changes never shown.

    A status change or milestone is a running-job change when the API already showed
    its job as it happened; one from before (the job was not found yet) shows with the
    job, so its delay is bounded by the new job's: it goes in the third figure.
    """
    running, new, earlier = Delays(), Delays(), Delays()
    for account, entries in timelines:
        for entry in entries:
            statuses = [status for _, status in entry["statuses"]]
            job_seen = seen.get((account, entry["id"]))
            first = job_seen.states[0][0] if job_seen and job_seen.states else None
            for change in changes_of(account, entry, entry["kind"] not in tracked_kinds):
                if not window[0] <= change.at <= window[1]:
                    continue
                if not change.running:
                    delays = new
                elif first is not None and first <= change.at:
                    delays = running
                else:
                    delays = earlier
                shown = shown_at(change, statuses, job_seen)
                if shown is None:
                    delays.unseen += 1
                    shown = end
                delays.values.append(max(0.0, shown - change.at))
    return running, new, earlier
