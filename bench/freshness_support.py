"""What bench/freshness.py runs each design with, how it stops and measures its
processes, and how it prints the two designs side by side."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from bench.large import machine

ROOT = Path(__file__).resolve().parent.parent
# The designs, in the order they run: the cluster's settings as they are, the old one,
# then the old one sweeping every --old-sweep-seconds (the bench queues the sweeps), the
# cost of reaching the freshness target without a hot lane.
DESIGNS = {"this": "this design", "old": "old design", "fast": "old design, faster sweeps"}
OLD_DESIGNS = ("old", "fast")
FRESHNESS_SETTINGS = (
    "JOBCENTER_DISPATCH_SECONDS",
    "JOBCENTER_HOT_SECONDS",
    "JOBCENTER_HOT_HEADROOM",
)
# The providers the bench spreads its accounts over, in turn, and their sandbox account
# options (new_jobs_per_minute is drawn per account).
# A short history (Elastic Path's one job per type leaves its queue free), jobs that
# start within a minute and run seconds to minutes, so changes happen all the time.
WORKLOAD: dict[str, dict[str, Any]] = {
    "klaviyo": {
        "jobs_per_kind": 1,
        "new_jobs_per_minute": 1,
        "new_job_queued_seconds": [5, 60],
        "new_job_processing_seconds": [30, 240],
    },
    "elasticpath": {"jobs_per_kind": 1, "new_jobs_per_minute": 1, "new_job_seconds": [10, 50]},
    "fullstory": {"jobs_per_kind": 0},  # batches come from the bench (freshness.Batches)
}
TICKS = os.sysconf("SC_CLK_TCK")


def fresh_postgres_url(url: str, design: str) -> str:
    """The URL of a database named after `url`'s and the design, dropped and created anew."""
    import dj_database_url
    import psycopg

    config = dj_database_url.parse(url)
    name = f"{config['NAME']}_{design}"
    with psycopg.connect(
        host=config["HOST"] or "127.0.0.1",
        port=config["PORT"] or 5432,
        user=config["USER"],
        password=config["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + f"/{name}"


def design_environment(design: str, args: argparse.Namespace, workdir: str) -> dict[str, str]:
    """The environment of one design's processes: production settings on loopback, a
    fresh database (and an emptied Redis database with --redis), the design's settings."""
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if k not in {*FRESHNESS_SETTINGS, "REDIS_URL"}}
    if args.database_url:
        database_url = fresh_postgres_url(args.database_url, design)
    else:
        database_url = f"sqlite:///{workdir}/bench.sqlite3"
    env.update(
        {
            "DATABASE_URL": database_url,
            "DJANGO_SETTINGS_MODULE": "jobcenter.settings",
            "DEBUG": "0",
            "SECRET_KEY": Fernet.generate_key().decode() * 2,
            "JOBCENTER_FERNET_KEYS": Fernet.generate_key().decode(),
            "JOBCENTER_ALLOW_LOOPBACK_PROVIDERS": "1",
            "ALLOWED_HOSTS": "127.0.0.1",
            "JOBCENTER_BEHIND_TLS_PROXY": "0",  # plain HTTP on loopback
            "SECURE_SSL_REDIRECT": "0",
            "STATIC_ROOT": f"{workdir}/static",
            "LOG_LEVEL": "WARNING",
            "JOBCENTER_Q_WORKERS": str(args.workers),
            "JOBCENTER_API_TRACK_RATE": "100000/min",  # the bench tracks every batch
        }
    )
    if args.redis:
        import redis

        redis.Redis.from_url(args.redis).flushdb()
        env["REDIS_URL"] = args.redis
    if design in OLD_DESIGNS:
        env["JOBCENTER_DISPATCH_SECONDS"] = "0"
        env["JOBCENTER_HOT_SECONDS"] = "0"
    return env


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM to the leader (qcluster stops its workers on it), then kill its group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds (user + system) of `root` and every live descendant, each with what
    its reaped children used (cutime + cstime), from /proc."""
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # from field 3, the state
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        used[pid] = sum(int(value) for value in fields[11:15]) / TICKS
    tree, grown = {root}, True
    while grown:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grown = bool(more)
    return sum(used.get(pid, 0.0) for pid in tree)


def hot_lane_present() -> bool:
    """Whether the code reads JOBCENTER_HOT_SECONDS anywhere the cluster runs."""
    files = [ROOT / "jobcenter" / "tasks.py", *(ROOT / "jobcenter" / "sync").glob("*.py")]
    return any("HOT_SECONDS" in path.read_text() for path in files)


def delay_cell(figures: dict[str, Any], p95: str = "p95") -> str:
    """p95 first: a script reads the first number after "p95" on the line."""
    if not figures["n"]:
        return "no changes"
    cell = f"{p95} {figures['p95']:.1f}  p50 {figures['p50']:.1f}  max {figures['max']:.1f}"
    cell += f"  (n {figures['n']}"
    return cell + (f", {figures['unseen']} unseen)" if figures["unseen"] else ")")


def provider_cell(figures: dict[str, Any], minutes: float) -> str:
    """One provider's 95th percentiles (running changes | new jobs) and requests per
    account-minute."""
    running, new = (f"{f['p95']:.1f}" if f["n"] else "-" for f in figures["delays"][:2])
    rate = figures["requests"] / (figures["accounts"] * minutes)
    return f"{running} | {new}; {rate:.1f} per account-minute"


def print_report(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    slugs = list(WORKLOAD)
    mix = ", ".join(
        f"{sum(1 for i in range(args.accounts) if slugs[i % len(slugs)] == s)} {s}" for s in slugs
    )
    account_minutes = args.accounts * args.minutes
    if args.database_url:
        database = "PostgreSQL, a fresh database per design"
    else:
        database = "SQLite, a fresh file per design (the default: no server to share)"
    broker = "Redis (emptied per design)" if args.redis else "django-q2's ORM broker"
    print(f"freshness: {args.accounts} accounts ({mix}), a {args.minutes:g}-minute window")
    print(f"  {args.workers} workers; database: {database}; broker: {broker}")
    print(f"  the API polled every {args.poll_seconds:g} s (adds up to that to each delay)")
    print(f"  machine: {machine()}")
    if not hot_lane_present():
        print("  note: no hot lane in the code yet: both designs run the same (old) code")
    titles = {
        "this": DESIGNS["this"],
        "old": "old design (the Schedule, once a minute)",
        "fast": f"old design, a sweep every {args.old_sweep_seconds:g} s",
    }
    rows: list[tuple[str, ...]] = [
        ("", *(titles[r["design"]] for r in results), "target"),
        ("running-job changes, delay s", *(delay_cell(r["running"]) for r in results), "p95 <= 30"),
        ("new jobs, delay s", *(delay_cell(r["new"]) for r in results), "p95 <= 90"),
        ("changes before their job showed, delay s", *(delay_cell(r["earlier"], "95%") for r in results), ""),
    ]  # fmt: skip

    def row(figure: str, value: Any, target: str = "") -> None:
        rows.append((figure, *(value(r) for r in results), target))

    row(
        "provider requests per account-minute",
        lambda r: f"{r['requests'] / account_minutes:.1f}",
        "<= old design's at the target",
    )
    row("429s received (whole run)", lambda r: f"{r['throttled']}", "0")
    row(f"worker CPU seconds ({args.minutes:g}-minute window)", lambda r: f"{r['cpu']:.1f}")
    row(
        "sync runs per account-minute",
        lambda r: (
            f"{sum(r['runs'].values()) / account_minutes:.2f}  "
            + " ".join(f"{k} {v}" for k, v in sorted(r["runs"].items()))
        ),
    )
    for slug in slugs:
        if all(slug in r["by_provider"] for r in results):
            row(
                f"{slug}: 95% s, running changes | new jobs; requests",
                lambda r, slug=slug: provider_cell(r["by_provider"][slug], args.minutes),
            )
    row(
        "seconds between two sweeps of an account (mean)",
        lambda r: f"{r['sweep_gap']:.0f}" if r["sweep_gap"] else "-",
        "60 (old design)",
    )
    row("sandbox CPU seconds (window)", lambda r: f"{r['sandbox_cpu']:.1f}")
    row("API server CPU seconds (window, polls included)", lambda r: f"{r['api_cpu']:.1f}")
    row(
        "poller check (cluster stopped): jobs unlike a full listing",
        lambda r: (
            f"{r['differ']} of {r['listed']}; failed polls {r['poll_failures']}, "
            f"tracks {r['track_failures']}"
        ),
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print()
    for line in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
