"""Multiprocess mode: the counters of every process of a node, in one directory.

With `PROMETHEUS_MULTIPROC_DIR` set in their environment, gunicorn's workers and
qcluster's workers each write their counters to files of their own there
(prometheus_client's multiprocess mode), and a scrape of any web worker sums them all.
prometheus_client leaves two chores to its user, done here:

- **A fresh start.** Files left by a node's previous run must go, or its counters start
  where the last run stopped. `prepare` removes them when none of the processes that
  wrote them is alive: the first process of a node to record or scrape after a restart
  finds only dead writers, the next ones find it alive. The order in which gunicorn and
  qcluster start does not matter, and a web restart beside a running cluster keeps the
  cluster's counts.
- **Growth.** A file per process and type: django-q2 recycles its workers every few
  hundred tasks and gunicorn replaces the ones that die, so dead processes' files pile up
  and every scrape reads them all. `compact` folds them into one archive file per type
  (their counts are kept: a counter must not go down), under an exclusive lock that
  scrapes take shared, so no scrape reads a count twice or not at all.

Gauges are not kept in processes here (the database ones are read at scrape time,
`jobcenter.observability.collector`); `mark_process_dead` from the gunicorn hook would
clean any live gauge a later change adds.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger("jobcenter.observability")

ENVIRONMENT_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
LOCK_NAME = ".lock"
ARCHIVE = "archive"
# The types whose files hold counts that outlive their process.
KEPT_TYPES = ("counter", "histogram")


def directory() -> Path | None:
    """The node's metrics directory, or None: one process, counters in memory."""
    value = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    return Path(value) if value else None


def pid_of(path: Path) -> int | None:
    """The writer of `counter_1234.db` (None for an archive)."""
    tail = path.stem.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


@contextlib.contextmanager
def locked(path: Path, exclusive: bool, wait: bool = True) -> Iterator[bool]:
    """The directory's lock (shared for scrapes, exclusive for removals); yields whether
    it was taken (always, when `wait`)."""
    with open(path / LOCK_NAME, "a") as handle:
        flags = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(handle, flags)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare(path: Path) -> None:
    """Create the directory; on a fresh start (no writer alive) empty it."""
    path.mkdir(parents=True, exist_ok=True)
    me = os.getpid()
    files = list(path.glob("*.db"))
    pids = {pid for pid in map(pid_of, files) if pid is not None and pid != me}
    if any(alive(pid) for pid in pids):
        return
    with locked(path, exclusive=True):
        for file in files:
            if pid_of(file) != me:
                with contextlib.suppress(FileNotFoundError):
                    file.unlink()
    if files:
        logger.info("metrics: a fresh start, %d files of stopped processes removed", len(files))


def compact(path: Path) -> int:
    """Fold the counter and histogram files of dead processes into one archive file per
    type; returns how many files went. Skipped when another process is compacting."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key
    from prometheus_client.multiprocess import MultiProcessCollector

    dead: dict[str, list[Path]] = {}
    for file in path.glob("*.db"):
        kind, pid = file.name.split("_", 1)[0], pid_of(file)
        if kind in KEPT_TYPES and pid is not None and not alive(pid):
            dead.setdefault(kind, []).append(file)
    if not dead:
        return 0
    removed = 0
    with locked(path, exclusive=True, wait=False) as taken:
        if not taken:
            return 0
        for kind, files in dead.items():
            files = [file for file in files if file.exists()]  # another compaction's leftovers
            archive = path / f"{kind}_{ARCHIVE}.db"
            sources = [*files, archive] if archive.exists() else files
            merged = MultiProcessCollector.merge([str(f) for f in sources], accumulate=False)
            staging = path / f"{kind}_{ARCHIVE}.staging"  # not *.db: no scrape reads it
            staging.unlink(missing_ok=True)
            store = MmapedDict(str(staging))
            try:
                for metric in merged:
                    for sample in metric.samples:
                        key = mmap_key(
                            metric.name,
                            sample.name,
                            list(sample.labels),
                            list(sample.labels.values()),
                            metric.documentation,
                        )
                        store.write_value(key, sample.value, 0.0)
            finally:
                store.close()
            staging.replace(archive)
            for file in files:
                file.unlink()
            removed += len(files)
    return removed
