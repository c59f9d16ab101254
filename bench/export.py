"""Export benchmark: stream /api/v1/exports/jobs.csv of N jobs from a real gunicorn.

Seeds N jobs (default 1,000,000) with bench/seed.py into a fresh database, starts gunicorn
(one sync worker, production settings) on it, and streams the CSV export over HTTP:

- time to first byte (targets: under 1 s), rows per second, bytes;
- the peak memory (RSS) of the worker process that served the export, polled from
  /proc while it streamed, against its RSS before (target: under 150 MB);
- the same for an export of the small account (1,000 jobs), to show that the peak does
  not grow with the number of rows.

Not part of `make test`. Usage:
  python bench/export.py [--jobs 1000000] [--database-url URL] [--format csv|ndjson]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TTFB_TARGET = 1.0
RSS_TARGET_MB = 150.0


def configure_django(database_url: str | None) -> dict[str, str]:
    """Settings for this process and the server's environment (same database, same keys)."""
    from cryptography.fernet import Fernet

    workdir = tempfile.mkdtemp(prefix="jobcenter-bench-export-")
    env = {
        "DATABASE_URL": database_url or f"sqlite:///{workdir}/bench.sqlite3",
        "SECRET_KEY": "bench-only-secret-key",
        "JOBCENTER_FERNET_KEYS": Fernet.generate_key().decode(),
        "DJANGO_SETTINGS_MODULE": "jobcenter.settings",
        "LOG_LEVEL": "WARNING",
        "ALLOWED_HOSTS": "127.0.0.1",
        # Plain HTTP on loopback: no TLS proxy in front of this server.
        "JOBCENTER_BEHIND_TLS_PROXY": "0",
        "SECURE_SSL_REDIRECT": "0",
        "JOBCENTER_EXPORT_RATE": "1000/hour",
    }
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    if database_url:
        call_command("flush", interactive=False, verbosity=0)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RssPoller(threading.Thread):
    """The highest RSS of one process while it runs, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.02)

    def stop(self) -> float:
        self.done.set()
        self.join()
        return max(self.peak, rss_mb(self.pid))


@dataclass
class Result:
    name: str
    rows: int
    size: int
    ttfb: float
    seconds: float
    rss_before: float
    rss_peak: float


def stream(url: str, token: str, worker: int, name: str) -> Result:
    before = rss_mb(worker)
    poller = RssPoller(worker)
    poller.start()
    started = time.perf_counter()
    ttfb = None
    newlines = size = 0
    with requests.get(
        url, headers={"Authorization": f"Token {token}"}, stream=True, timeout=600
    ) as response:
        response.raise_for_status()
        for chunk in response.iter_content(chunk_size=1 << 16):
            if ttfb is None:
                ttfb = time.perf_counter() - started
            newlines += chunk.count(b"\n")
            size += len(chunk)
    seconds = time.perf_counter() - started
    peak = poller.stop()
    rows = newlines - (1 if url.split("?")[0].endswith(".csv") else 0)
    return Result(name, rows, size, ttfb or seconds, seconds, before, peak)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--format", choices=["csv", "ndjson"], default="csv", dest="fmt")
    args = parser.parse_args()
    env = configure_django(args.database_url)

    from django.contrib.auth.models import User

    from bench.seed import seed
    from jobcenter.tokens import create_token

    print(f"seeding {args.jobs:,} jobs ...", flush=True)
    seeded = seed(args.jobs, max_snapshots=0, log=lambda line: print(line, flush=True))
    print(f"seeded in {seeded.seconds:.0f}s", flush=True)
    user = User.objects.create_superuser("bench-exporter")
    token = create_token(user, "bench export", 1)[1]

    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "jobcenter.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--timeout",
            "900",
        ],
        cwd=ROOT,
        env={**os.environ, **env},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{base}/healthz", timeout=10)
                break
            except requests.RequestException:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("gunicorn did not start") from None
                time.sleep(0.2)
        (worker,) = children(server.pid)
        url = f"{base}/api/v1/exports/jobs.{args.fmt}"
        # Warm the worker (imports, first connection) so both runs start alike.
        stream(f"{url}?account={seeded.small_account}", token, worker, "warm-up")
        results = [
            stream(f"{url}?account={seeded.small_account}", token, worker, "small account"),
            stream(url, token, worker, "all jobs"),
        ]
        hwm = rss_mb(worker, "VmHWM")
    finally:
        server.terminate()
        server.wait(timeout=30)

    vendor = "PostgreSQL" if args.database_url else "SQLite"
    print(f"\nexport of jobs as {args.fmt.upper()} from gunicorn (1 sync worker), {vendor}")
    print(
        f"{'export':<14} {'rows':>10} {'MB':>8} {'TTFB s':>7} {'total s':>8} {'rows/s':>9} "
        f"{'RSS before MB':>14} {'RSS peak MB':>12}"
    )
    for r in results:
        print(
            f"{r.name:<14} {r.rows:>10,} {r.size / 1e6:>8.1f} {r.ttfb:>7.3f} {r.seconds:>8.1f} "
            f"{r.rows / r.seconds:>9,.0f} {r.rss_before:>14.1f} {r.rss_peak:>12.1f}"
        )
    small, large = results
    print(f"worker VmHWM (peak RSS since start): {hwm:.1f} MB")
    print(
        f"peak RSS growth from {small.rows:,} to {large.rows:,} rows: "
        f"{large.rss_peak - small.rss_peak:+.1f} MB"
    )
    ok = (
        large.rows == args.jobs
        and large.ttfb < TTFB_TARGET
        and hwm < RSS_TARGET_MB
        and large.rss_peak - small.rss_peak < 20
    )
    print(
        f"targets: every row {'yes' if large.rows == args.jobs else 'NO'}, "
        f"first byte < {TTFB_TARGET:.0f} s {'met' if large.ttfb < TTFB_TARGET else 'MISSED'}, "
        f"peak RSS < {RSS_TARGET_MB:.0f} MB {'met' if hwm < RSS_TARGET_MB else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
