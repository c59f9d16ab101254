"""The large benchmark: Job Center at a million jobs and five million snapshots.

Seeds N jobs and about 5N snapshots (bench/seed.py: COPY on PostgreSQL, executemany in
large transactions on SQLite), then measures, each as a figure and as a ratio against a
baseline measured in the same process on the same database:

- sync: a first sync of K sandbox jobs into the full tables, in jobs/s, against a bare
  fetch of the same pages with the same client (target: sync time <= 2x fetch time);
- API list p50/p95 with the filters staff use, against the same endpoint filtered to a
  small account (1,000 jobs) (target: p95 < 150 ms);
- admin changelist render time, unfiltered and filtered, against the changelist of the
  small account (target: < 1 s);
- export rows/s of jobcenter.exports (or the API's CSV endpoint) against a bare
  `values_list` iteration into csv.writer, with the memory growth while exporting
  (targets: >= 40,000 rows/s, flat memory);
- retention: pruning the snapshots older than R days (keeping each job's first and
  last), with a concurrent reader and writer whose longest wait is compared to the
  longest batch (target: never longer than one batch);
- peak memory (max RSS) against the process's RSS after Django set-up.

Production settings (DEBUG off, whitenoise manifest storage after a collectstatic into a
temporary directory): the figures are those of a deployment, not of a dev server.

Usage: python bench/large.py [--jobs 1000000] [--database-url URL] [--sync-jobs 20000]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
WRITER_JOBS = 100  # the concurrent writer of the retention leg writes to these jobs


def rss_mb() -> float:
    """Current resident memory of this process (not the peak)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_BYTES / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ensure_postgres_database(url: str) -> None:
    """CREATE DATABASE when the bench database does not exist yet."""
    import dj_database_url
    import psycopg

    config = dj_database_url.parse(url)
    params = {
        "host": config["HOST"] or "127.0.0.1",
        "port": config["PORT"] or 5432,
        "user": config["USER"],
        "password": config["PASSWORD"] or None,
        "dbname": "postgres",
        "autocommit": True,
    }
    with psycopg.connect(**params) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]]
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{config["NAME"]}"')


def configure_django(database_url: str | None, workdir: str) -> None:
    from cryptography.fernet import Fernet

    if database_url:
        ensure_postgres_database(database_url)
    os.environ["DATABASE_URL"] = database_url or f"sqlite:///{workdir}/bench.sqlite3"
    os.environ["DEBUG"] = "0"
    os.environ["SECRET_KEY"] = Fernet.generate_key().decode() * 2
    os.environ["JOBCENTER_FERNET_KEYS"] = Fernet.generate_key().decode()
    os.environ["JOBCENTER_ALLOW_LOOPBACK_PROVIDERS"] = "1"
    os.environ["ALLOWED_HOSTS"] = "testserver"
    os.environ["STATIC_ROOT"] = f"{workdir}/static"
    os.environ["DJANGO_SETTINGS_MODULE"] = "jobcenter.settings"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    if database_url:
        call_command("flush", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)


@dataclass
class Row:
    figure: str
    value: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    ok: bool | None = None


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def timed_requests(get: Callable[[], Any], repeat: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        get()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        get()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


# --- the measurements -------------------------------------------------------------------


def measure_sync(sync_jobs: int, log: Callable[[str], None]) -> list[Row]:
    """A first sync of `sync_jobs` sandbox jobs into the big tables, against bare fetch."""
    import math

    from bench.sync import bare_fetch
    from jobcenter.accounts import build_provider, create_account
    from jobcenter.sync.engine import sync_account
    from providers.sandbox.client import start_sandbox, stop_sandbox

    process, sandbox = start_sandbox(
        args=[
            *("--jobs-per-kind", "0", "--no-rate-limits", "--no-log-bodies"),
            *("--providers", "klaviyo"),
        ]
    )
    try:
        described = sandbox.create_account(
            "klaviyo",
            seed=7,
            jobs_per_kind=math.ceil(sync_jobs / 13),
            frozen=True,
            rate_limits=False,
        )
        account = create_account(
            "bench sync", "klaviyo", described["credentials"], base_url=sandbox.base_url("klaviyo")
        )
        account.rate_limits = {"*": [[100_000, 1]]}
        account.save(update_fields=["rate_limits"])
        provider = build_provider(account)
        started = time.perf_counter()
        fetched, _ = bare_fetch(provider)
        fetch_seconds = time.perf_counter() - started
        started = time.perf_counter()
        run = sync_account(account.pk)
        sync_seconds = time.perf_counter() - started
        if run.outcome != "succeeded":
            raise RuntimeError(f"bench sync failed: {run.error}")
    finally:
        stop_sandbox(process)
    log(f"sync: {run.jobs_created:,} jobs in {sync_seconds:.1f}s, fetch {fetch_seconds:.1f}s")
    ratio = sync_seconds / fetch_seconds
    return [
        Row(
            f"sync throughput ({run.jobs_created:,} new jobs), jobs/s",
            f"{run.jobs_created / sync_seconds:,.0f}",
            f"{fetched / fetch_seconds:,.0f} (bare fetch)",
            f"{ratio:.2f}x time",
            "<= 2.0x",
            ratio <= 2.0,
        )
    ]


def staff_client(**headers: str) -> Any:
    from django.contrib.auth import get_user_model
    from django.test import Client

    user_model = get_user_model()
    user, _ = user_model.objects.get_or_create(
        username="bench", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client(headers=headers)
    client.force_login(user)
    return client


def measure_api(small_account: int, big_account: int, now: datetime, repeat: int) -> list[Row]:
    """p50/p95 of GET /api/v1/jobs/ with common filters, against the small account's list."""
    client = staff_client()

    def get(url: str) -> Callable[[], Any]:
        def call() -> Any:
            response = client.get(url, secure=True)
            if response.status_code != 200:
                raise RuntimeError(f"{url}: {response.status_code} {response.content[:300]!r}")
            return response

        return call

    first = get("/api/v1/jobs/")().json()
    second_page = first["next"].split("testserver", 1)[1]
    some_id = first["results"][len(first["results"]) // 2]["external_id"]
    month_ago = (now - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cases = [
        ("no filter (newest first)", "/api/v1/jobs/"),
        ("second page (cursor)", second_page),
        ("status=failed", "/api/v1/jobs/?status=failed"),
        ("kind=profile-bulk-import-job", "/api/v1/jobs/?kind=profile-bulk-import-job"),
        ("account=<one of 20>", f"/api/v1/jobs/?account={big_account}"),
        (
            "provider+status (elasticpath, running)",
            "/api/v1/jobs/?provider=elasticpath&status=running",
        ),
        (
            "created_after 30 days, oldest first",
            f"/api/v1/jobs/?created_after={month_ago}&ordering=created_at",
        ),
        ("changed, newest first", "/api/v1/jobs/?ordering=-last_changed_at"),
        ("search=<external id>", f"/api/v1/jobs/?search={some_id}"),
    ]
    baseline = timed_requests(get(f"/api/v1/jobs/?account={small_account}"), repeat)
    base_p95 = percentile(baseline, 0.95)
    rows = [
        Row(
            "API list baseline: small account (1,000 jobs) p50/p95 ms",
            f"{percentile(baseline, 0.5):.0f} / {base_p95:.0f}",
        )
    ]
    for label, url in cases:
        samples = timed_requests(get(url), repeat)
        p95 = percentile(samples, 0.95)
        rows.append(
            Row(
                f"API list {label} p50/p95 ms",
                f"{percentile(samples, 0.5):.0f} / {p95:.0f}",
                f"{base_p95:.0f}",
                f"{p95 / base_p95:.2f}x",
                "p95 < 150",
                p95 < 150,
            )
        )
    return rows


def measure_changelist(small_account: int, repeat: int) -> list[Row]:
    """Admin job changelist render time, against the small account's changelist."""
    client = staff_client()

    def get(query: str) -> Callable[[], Any]:
        def call() -> Any:
            response = client.get(f"/admin/jobcenter/job/{query}", secure=True)
            if response.status_code != 200:
                raise RuntimeError(f"changelist {query}: {response.status_code}")
            return response

        return call

    baseline = timed_requests(get(f"?account__id__exact={small_account}"), repeat)
    base = statistics.median(baseline)
    rows = [Row("admin changelist baseline: small account, median ms", f"{base:.0f}")]
    for label, query in [
        ("unfiltered", ""),
        ("status=failed", "?status=failed"),
        ("provider=klaviyo, kind", "?provider=klaviyo&kind=profile-bulk-import-job"),
        ("search by external id", "?q=00000abc"),
    ]:
        samples = timed_requests(get(query), repeat)
        worst = max(samples)
        rows.append(
            Row(
                f"admin changelist {label}, median / max ms",
                f"{statistics.median(samples):.0f} / {worst:.0f}",
                f"{base:.0f}",
                f"{statistics.median(samples) / base:.2f}x",
                "< 1000",
                worst < 1000,
            )
        )
    return rows


class MemorySampler:
    """Samples this process's RSS every 20 ms in a thread: growth, not just the peak."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_mb())
            time.sleep(0.02)

    def __enter__(self) -> MemorySampler:
        self.start = rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> float:
        return max(self.samples, default=self.start) - self.start


def measure_export(log: Callable[[str], None]) -> list[Row]:
    """Rows/s of the CSV export of every job, against a bare ORM-to-csv loop."""
    from jobcenter.models import Job

    columns = [f.attname for f in Job._meta.concrete_fields if f.attname != "payload"]

    class Sink(io.TextIOBase):
        def write(self, text: str) -> int:
            return len(text)

    with MemorySampler() as bare_memory:
        started = time.perf_counter()
        writer = csv.writer(Sink())
        bare_rows = 0
        for row in (
            Job.objects.order_by("-created_at", "-id")
            .values_list(*columns)
            .iterator(chunk_size=5000)
        ):
            writer.writerow(row)
            bare_rows += 1
        bare_rate = bare_rows / (time.perf_counter() - started)
    log(f"bare export loop: {bare_rows:,} rows, {bare_rate:,.0f} rows/s")
    baseline = f"{bare_rate:,.0f} (bare values_list + csv)"
    from django.urls import reverse

    url = reverse("api:export-jobs-csv")
    client = staff_client()
    with MemorySampler() as memory:
        started = time.perf_counter()
        response = client.get(url, secure=True)
        lines = 0
        for chunk in response.streaming_content:
            lines += chunk.count(b"\n")
        seconds = time.perf_counter() - started
    rate = (lines - 1) / seconds
    return [
        Row(
            f"export rows/s ({url}, {lines - 1:,} rows)",
            f"{rate:,.0f}",
            baseline,
            f"{rate / bare_rate:.2f}x",
            ">= 40,000",
            rate >= 40_000,
        ),
        Row(
            "export memory growth MB",
            f"{memory.growth:.0f}",
            f"{bare_memory.growth:.0f} (bare loop)",
            "",
            "flat",
            memory.growth < 100,
        ),
    ]


class Contender(threading.Thread):
    """Short reads (or writes) on the snapshot table in a loop, timing each."""

    def __init__(self, job_ids: int, write: bool) -> None:
        super().__init__(daemon=True)
        self.job_ids = job_ids  # jobs 1..job_ids
        self.write = write
        self.latencies: list[float] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        from django.db import connection, transaction

        from jobcenter.models import JobSnapshot

        rng = random.Random(1)
        try:
            while not self.stop.is_set():
                job_id = rng.randint(1, self.job_ids)
                started = time.perf_counter()
                if self.write:
                    with transaction.atomic():
                        JobSnapshot.objects.create(job_id=job_id, status="running", digest="bench")
                else:
                    list(JobSnapshot.objects.filter(job_id=job_id).order_by("observed_at", "id"))
                self.latencies.append(time.perf_counter() - started)
                time.sleep(0.005)
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        finally:
            connection.close()


def measure_prune(days: int, jobs: int, log: Callable[[str], None]) -> list[Row]:
    """Prune with a reader and a writer running; check first and last of each job kept,
    and no more but the snapshot an alert's episode rests on."""
    from django.db import connection

    from jobcenter.alerts.ledger import JOB_EVENT_STATES
    from jobcenter.sync.retention import prune_snapshots

    table = connection.ops.quote_name("jobcenter_jobsnapshot")
    jobs_table = connection.ops.quote_name("jobcenter_job")
    alerting = [status for states in JOB_EVENT_STATES.values() for status in states]
    # The writer adds snapshots to jobs 1..WRITER_JOBS, which moves their "last": they are
    # left out of the check. Seeded ids follow observed time within a job, so the first
    # and last snapshot of a job are its lowest and highest id.
    # (The table name comes from the model; every value is a parameter.)
    ends_sql = (
        "SELECT COUNT(*), SUM(first_id), SUM(last_id) FROM (SELECT job_id, MIN(id) AS first_id, "  # noqa: S608
        f"MAX(id) AS last_id FROM {table} WHERE job_id > %s GROUP BY job_id) AS ends"
    )
    with connection.cursor() as cursor:
        cursor.execute(ends_sql, [WRITER_JOBS])
        ends_before = cursor.fetchone()
        cursor.execute(f"SELECT COUNT(*), MAX(id) FROM {table}")  # noqa: S608
        total_before, max_id_before = cursor.fetchone()
    contenders = [Contender(jobs, write=False), Contender(WRITER_JOBS, write=True)]
    for contender in contenders:
        contender.start()
    time.sleep(0.5)
    result = prune_snapshots(days)
    for contender in contenders:
        contender.stop.set()
        contender.join()
        if contender.error:
            raise contender.error
    with connection.cursor() as cursor:
        cursor.execute(ends_sql, [WRITER_JOBS])
        kept = cursor.fetchone() == ends_before
        cursor.execute(f"SELECT COUNT(*) FROM {table} WHERE id > %s", [max_id_before])  # noqa: S608
        written = cursor.fetchone()[0]
        # Older than the cutoff, only a job's first and last may be left, and for a job
        # in an alerting state its last snapshot before it (seeded jobs end in their status).
        marks = ", ".join(["%s"] * len(alerting))
        cursor.execute(
            f"SELECT COUNT(*) FROM (SELECT s.job_id FROM {table} s JOIN {jobs_table} j "  # noqa: S608
            "ON j.id = s.job_id WHERE s.observed_at < %s AND s.job_id > %s "
            "GROUP BY s.job_id, j.status HAVING COUNT(*) > "
            f"CASE WHEN j.status IN ({marks}) THEN 3 ELSE 2 END) AS crowded",
            [result.cutoff, WRITER_JOBS, *alerting],
        )
        kept = kept and cursor.fetchone()[0] == 0
    log(
        f"prune: {result.deleted:,} of {total_before:,} deleted in {result.seconds:.1f}s, "
        f"{result.batches} batches; first/last (and episodes) kept: {kept}; "
        f"{written} snapshots written meanwhile"
    )
    reader, writer = (max(c.latencies) * 1000 for c in contenders)
    batch = result.max_batch_seconds * 1000
    return [
        Row(
            f"prune >{days} days: {result.deleted:,} of {total_before:,} snapshots, rows/s",
            f"{result.deleted / result.seconds:,.0f}",
            f"{result.seconds:.0f} s total",
            "",
            "first+last kept",
            kept,
        ),
        Row(
            f"prune: longest reader wait / longest batch ({result.batch_size:,} ids), ms",
            f"{reader:.0f}",
            f"{batch:.0f}",
            f"{reader / batch:.2f}x",
            "<= batch+50ms",
            reader <= batch + 50,
        ),
        Row(
            "prune: longest writer wait / longest batch, ms",
            f"{writer:.0f}",
            f"{batch:.0f}",
            f"{writer / batch:.2f}x",
            "(SQLite: info)" if connection.vendor == "sqlite" else "<= batch+150ms",
            None if connection.vendor == "sqlite" else writer <= batch + 150,
        ),
    ]


# --- the run ----------------------------------------------------------------------------


def machine() -> str:
    with open("/proc/meminfo") as meminfo:
        kb = int(meminfo.readline().split()[1])
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({cpu}), {kb / 2**20:.0f} GiB RAM, {platform.platform()}"


def print_table(rows: list[Row]) -> None:
    headers = ("figure", "value", "baseline", "ratio", "target", "")
    widths = [
        max(len(headers[0]), *(len(r.figure) for r in rows)),
        max(len(headers[1]), *(len(r.value) for r in rows)),
        max(len(headers[2]), *(len(r.baseline) for r in rows)),
        max(len(headers[3]), *(len(r.ratio) for r in rows)),
        max(len(headers[4]), *(len(r.target) for r in rows)),
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False))
    print(line)
    print("-" * len(line))
    for r in rows:
        mark = {True: "ok", False: "MISSED", None: ""}[r.ok]
        cells = (r.figure, r.value, r.baseline, r.ratio, r.target)
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)) + f"  {mark}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--snapshots-per-job", type=float, default=5.0)
    parser.add_argument("--sync-jobs", type=int, default=20_000)
    parser.add_argument("--retention-days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=30, help="timed requests per case")
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--skip-sync", action="store_true", help="no sandbox sync leg")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="jobcenter-large-")
    started = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {text}", flush=True)

    configure_django(args.database_url, workdir)
    from django.db import connection

    from bench.seed import seed

    base_rss = rss_mb()
    connection.ensure_connection()
    if connection.vendor == "sqlite":
        import sqlite3

        version = f"SQLite {sqlite3.sqlite_version}"
    else:
        version = f"PostgreSQL {connection.pg_version // 10000}.{connection.pg_version % 100}"
    log(f"database: {version}; machine: {machine()}")
    seeded = seed(
        args.jobs,
        max_snapshots=int(args.jobs * args.snapshots_per_job),
        log=log,
    )
    log(
        f"seeded {seeded.jobs:,} jobs and {seeded.snapshots:,} snapshots in "
        f"{seeded.seconds:.0f}s ({(seeded.jobs + seeded.snapshots) / seeded.seconds:,.0f} rows/s)"
    )
    rows = [
        Row(
            "seed rows/s (jobs + snapshots, indexes rebuilt)",
            f"{(seeded.jobs + seeded.snapshots) / seeded.seconds:,.0f}",
            f"{seeded.seconds:.0f} s total",
        )
    ]
    if not args.skip_sync:
        rows += measure_sync(args.sync_jobs, log)
    rows += measure_api(seeded.small_account, seeded.accounts[0], seeded.now, args.repeat)
    log("API measured")
    rows += measure_changelist(seeded.small_account, max(5, args.repeat // 3))
    log("changelist measured")
    rows += measure_export(log)
    log("export measured")
    rows += measure_prune(args.retention_days, seeded.jobs, log)
    peak = peak_mb()
    rows.append(
        Row(
            "peak memory (max RSS) MB",
            f"{peak:.0f}",
            f"{base_rss:.0f} after set-up",
            f"{peak / base_rss:.1f}x",
        )
    )
    print()
    print(
        f"Job Center large benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{connection.vendor}, {seeded.jobs:,} jobs / {seeded.snapshots:,} snapshots; "
        f"{machine()}"
    )
    print_table(rows)
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
