"""Freshness benchmark: how long after a provider-side change the API shows it.

`python bench/freshness.py --accounts N --minutes M [--workers K]` runs three designs one
after the other, each on a fresh database, a fresh sandbox process and a real cluster:

- this design: the cluster's settings as they are (JOBCENTER_DISPATCH_SECONDS=5, a
  dispatcher loop, and JOBCENTER_HOT_SECONDS=15, a hot lane refreshing unfinished jobs);
- the old one: JOBCENTER_DISPATCH_SECONDS=0 JOBCENTER_HOT_SECONDS=0 (the Schedule
  dispatches due sweeps once a minute, for accounts whose minute has passed);
- the old one sweeping faster, to reach the freshness target without a hot lane: the
  same settings, and the bench queues a sweep (the Schedule's task) of every account
  every --old-sweep-seconds (28 by default), the accounts spread over that period. Its
  requests per account-minute are what the target costs the old design.

Each run: `python -m providers.sandbox` (rate limits on, faults off), `migrate`, N
accounts in turn over Klaviyo, Elastic Path and Fullstory (the sandboxes whose jobs keep
moving: freshness_support.WORKLOAD), created through jobcenter.accounts with
`sync_interval_minutes=1`, `setup_schedules`, `qcluster` with K workers, gunicorn serving
the API, and an API token. Sandbox jobs move on the sandbox clock: Klaviyo and Elastic
Path accounts get a new job every 45 to 75 s (each account its own pace), Klaviyo's
counts grow while jobs run, and the bench creates a Fullstory batch per account as often
and tracks it through the API, as a client would. Once every account has synced once,
the window of M minutes starts; the bench polls /api/v1/jobs/ every --poll-seconds with
`changed_after` (the previous poll's start less a margin) and `ordering=last_changed_at`,
and after the window keeps polling (up to --drain-seconds) until every change of the
window has shown. bench/freshness_truth.py defines the changes and the delays.

Printed side by side (this design first): p95 / p50 / max delay of running-job changes and of new jobs (the
first number after "p95" on each of those two lines is this design's), of changes from
before their job showed, provider requests per account-minute and 429s (the sandbox's
per-account counts; faults are off, so every 429 is our own pacing's), worker CPU
seconds (utime + stime of the qcluster process tree, children included, from /proc)
over the window; then sync runs, each provider's figures, the mean gap between two
sweeps of an account, the sandbox's and the API server's CPU over the window, and a
check of the poller against a full listing. Each run's raw data (timelines and polled
states) is left in its temporary directory as raw.json, and the window's provider
requests (method, path, query, status) as requests.json.

Usage: python bench/freshness.py [--accounts 20] [--minutes 3] [--workers 2]
       [--old-sweep-seconds 28]
       [--database-url postgres://.../name] [--redis redis://127.0.0.1:6379/N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.export import free_port  # noqa: E402
from bench.freshness_support import (  # noqa: E402
    DESIGNS,
    WORKLOAD,
    design_environment,
    print_report,
    stop,
    tree_cpu_seconds,
)
from bench.freshness_truth import Seen, measure  # noqa: E402

MARGIN_SECONDS = 30.0  # a poll asks for changes since the previous poll's start less this


def log(design: str, message: str) -> None:
    print(f"[{DESIGNS[design]}] {message}", file=sys.stderr, flush=True)


class Poller(threading.Thread):
    """Polls the API's job list for changes and notes when each job's state first showed."""

    def __init__(self, base: str, token: str, accounts: dict[int, str], every: float) -> None:
        super().__init__(daemon=True)
        self.url = f"{base}/api/v1/jobs/"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Token {token}"
        self.accounts = accounts  # Job Center account id -> sandbox account id
        self.every = every
        self.seen: dict[tuple[str, str], Seen] = {}
        self.since = time.time() - 300
        self.failures = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.time()
            self.poll()
            self.stopping.wait(max(0.0, self.every - (time.time() - started)))

    def poll(self) -> None:
        started = time.time()
        changed_after = datetime.fromtimestamp(self.since, tz=UTC).isoformat()
        params: dict[str, Any] | None = {
            "changed_after": changed_after,
            "ordering": "last_changed_at",
            "page_size": 500,
        }
        url: str | None = self.url
        try:
            while url:
                answer = self.http.get(url, params=params, timeout=60)
                arrived = time.time()
                answer.raise_for_status()
                body = answer.json()
                for job in body["results"]:
                    self.note(job, arrived)
                url, params = body["next"], None
        except (requests.RequestException, ValueError, KeyError):
            self.failures += 1
            return
        self.since = started - MARGIN_SECONDS

    def note(self, job: dict[str, Any], arrived: float) -> None:
        account = self.accounts.get(job["account"])
        if account is not None:
            key = (account, job["external_id"])
            self.seen.setdefault(key, Seen()).add(
                arrived, job["provider_status"], job["completed_count"]
            )

    def missed(self) -> tuple[int, int]:
        """(jobs whose full listing now differs from the last state polled, jobs listed)."""
        differ = listed = 0
        url: str | None = self.url
        params: dict[str, Any] | None = {"page_size": 500, "ordering": "id"}
        while url:
            body = self.http.get(url, params=params, timeout=60).json()
            for job in body["results"]:
                account = self.accounts.get(job["account"])
                seen = self.seen.get((account or "", job["external_id"]))
                listed += 1
                last = seen.states[-1][1:] if seen else None
                differ += last != (job["provider_status"], job["completed_count"])
            url, params = body["next"], None
        return differ, listed


class Batches(threading.Thread):
    """Creates a batch of a tracked kind per account every 45-75 s and tracks it through
    the API, as the client that made it would (Fullstory's batches have no listing)."""

    def __init__(self, sandbox: Any, base: str, token: str, accounts: list[Any]) -> None:
        super().__init__(daemon=True)
        self.sandbox, self.accounts = sandbox, accounts  # [(account, sandbox id, kind)]
        self.url = f"{base}/api/v1/jobs/track/"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Token {token}"
        self.rng = random.Random(7)
        self.failures = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        now = time.time()
        due = {i: now + self.rng.uniform(0, 30) for i in range(len(self.accounts))}
        while not self.stopping.wait(0.5):
            for i, at in due.items():
                if at <= time.time():
                    self.create(*self.accounts[i])
                    due[i] = time.time() + self.rng.uniform(45, 75)

    def create(self, account: Any, sandbox_id: str, kind: str) -> None:
        size = self.rng.randint(5, 50)
        made = self.sandbox.control(
            sandbox_id,
            "create_jobs",
            kind=kind,
            count=1,
            size=size,
            failed=self.rng.choice([0, 0, 0, 1, size // 3]),
            processing_seconds=self.rng.uniform(20, 120),
        )
        for external_id in made["ids"]:
            body = {"account": str(account.pk), "kind": kind, "external_id": external_id}
            if self.http.post(self.url, json=body, timeout=30).status_code not in (200, 201):
                self.failures += 1


class Sweeper(threading.Thread):
    """The old design at a faster pace: a sweep (the task the Schedule queues) of every
    account every `every` seconds, the accounts spread evenly over the period."""

    def __init__(self, account_ids: list[int], every: float) -> None:
        super().__init__(daemon=True)
        self.account_ids, self.every = account_ids, every
        self.stopping = threading.Event()

    def run(self) -> None:
        from django.db import connection

        from jobcenter.models import SyncTrigger
        from jobcenter.tasks import enqueue_sync

        step = self.every / max(1, len(self.account_ids))
        due = time.monotonic()
        try:
            while not self.stopping.is_set():
                for account_id in self.account_ids:
                    self.stopping.wait(max(0.0, due - time.monotonic()))
                    if self.stopping.is_set():
                        return
                    enqueue_sync(account_id, SyncTrigger.SCHEDULE)
                    due += step
        finally:
            connection.close()


def run_design(design: str, args: argparse.Namespace, result_path: str) -> None:
    """One design, start to end, in this (child) process: its own Django and database."""
    workdir = tempfile.mkdtemp(prefix=f"jobcenter-bench-freshness-{design}-")
    env = design_environment(design, args, workdir)
    os.environ.clear()
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    from providers.sandbox.client import start_sandbox, stop_sandbox

    call_command("migrate", interactive=False, verbosity=0)
    sandbox_process, sandbox = start_sandbox(
        args=["--jobs-per-kind", "0", "--no-log-bodies", "--seed", str(args.seed)]
    )
    run = DesignRun(design, args, workdir, sandbox, sandbox_process.pid)
    try:
        run.make_accounts()
        run.start(env)
        result = run.measure()
        Path(result_path).write_text(json.dumps(result))
    finally:
        for process in reversed(run.processes):
            stop(process)
        stop_sandbox(sandbox_process)


class DesignRun:
    """The accounts, processes and measurements of one design's run."""

    def __init__(
        self, design: str, args: argparse.Namespace, workdir: str, sandbox: Any, sandbox_pid: int
    ) -> None:
        self.design, self.args, self.workdir = design, args, workdir
        self.sandbox, self.sandbox_pid = sandbox, sandbox_pid
        self.slugs = list(WORKLOAD)  # the providers whose sandboxes keep jobs moving
        self.sandbox_of: dict[int, str] = {}  # Job Center account id -> sandbox account id
        self.provider_of: dict[str, str] = {}  # sandbox account id -> provider slug
        self.tracked: list[tuple[Any, str, str]] = []  # (account, sandbox id, tracked kind)
        self.processes: list[subprocess.Popen[bytes]] = []

    def make_accounts(self) -> None:
        """N accounts round-robin over the providers, the Schedule due now, a token."""
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.utils import timezone
        from django_q.models import Schedule

        from jobcenter.accounts import create_account
        from jobcenter.tasks import SCHEDULE_NAME
        from jobcenter.tokens import create_token
        from providers import get_provider

        rng = random.Random(self.args.seed)
        for i in range(self.args.accounts):
            slug = self.slugs[i % len(self.slugs)]
            options = dict(WORKLOAD[slug])
            if "new_jobs_per_minute" in options:
                options["new_jobs_per_minute"] = 60 / rng.uniform(45, 75)
            described = self.sandbox.create_account(slug, seed=self.args.seed * 1000 + i, **options)
            account = create_account(
                f"bench {slug} {i}",
                slug,
                described["credentials"],
                base_url=self.sandbox.base_url(slug),
                sync_interval_minutes=1,
            )
            self.sandbox_of[account.pk] = described["id"]
            self.provider_of[described["id"]] = slug
            self.tracked += [
                (account, described["id"], k.name) for k in get_provider(slug).tracked_kinds()
            ]
        call_command("setup_schedules", verbosity=0, stdout=open(os.devnull, "w"))  # noqa: SIM115
        Schedule.objects.filter(name=SCHEDULE_NAME).update(next_run=timezone.now())
        user = get_user_model().objects.create_user("bench", is_staff=True, is_superuser=True)
        self.token = create_token(user, "freshness bench", 1)[1]

    def start(self, env: dict[str, str]) -> None:
        """gunicorn (one worker) serving the API, then the cluster."""
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        for name, command in (
            ("api", [gunicorn, "jobcenter.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1"]),
            ("cluster", [sys.executable, "manage.py", "qcluster"]),
        ):
            output = open(Path(self.workdir) / f"{name}.log", "wb")  # noqa: SIM115
            self.processes.append(
                subprocess.Popen(
                    command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )  # fmt: skip
        self.api, self.cluster = self.processes
        deadline = time.time() + 60
        while not self.answers():
            if time.time() > deadline:
                raise RuntimeError(f"the API did not answer; see {self.workdir}/api.log")
            time.sleep(0.2)

    def answers(self) -> bool:
        try:
            return requests.get(f"{self.base}/healthz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def warm_up(self) -> None:
        """Wait until every account has synced once (its first sweep loads its history)."""
        from jobcenter.models import SyncRun

        started = time.time()
        deadline = started + 120 + 3 * self.args.accounts
        synced = 0
        while synced < self.args.accounts:
            if time.time() > deadline or self.cluster.poll() is not None:
                raise RuntimeError(
                    f"{synced} of {self.args.accounts} accounts synced: {self.workdir}"
                )
            time.sleep(1)
            synced = (
                SyncRun.objects.filter(outcome="succeeded").values("account").distinct().count()
            )
        log(self.design, f"warm-up: every account synced once after {time.time() - started:.0f} s")

    def sample(self) -> dict[str, Any]:
        stats = self.sandbox.stats()["accounts"]
        mine = {s: stats[s] for s in self.sandbox_of.values()}
        return {
            "time": time.time(),
            "requests": {s: a["requests"] for s, a in mine.items()},
            "throttled": sum(a["throttled"] for a in mine.values()),
            "cpu": tree_cpu_seconds(self.cluster.pid),
            "sandbox_cpu": tree_cpu_seconds(self.sandbox_pid),
            "api_cpu": tree_cpu_seconds(self.api.pid),
        }

    def save_request_log(self, window: tuple[float, float]) -> None:
        """The window's provider requests (no headers), for a look at where they go."""
        keep = ("time", "provider", "account", "method", "path", "query_string", "status")
        entries = [
            {k: e.get(k) for k in keep}
            for e in self.sandbox.requests()
            if window[0] <= e["time"] < window[1] and e.get("account") in self.provider_of
        ]
        Path(self.workdir, "requests.json").write_text(json.dumps(entries))

    def measure(self) -> dict[str, Any]:
        """Warm up, measure the window, drain; the figures of this design."""
        from providers import get_provider
        from providers.sandbox.client import SandboxClient

        poller = Poller(self.base, self.token, self.sandbox_of, self.args.poll_seconds)
        batches = Batches(SandboxClient(self.sandbox.root), self.base, self.token, self.tracked)
        poller.start()
        batches.start()
        self.warm_up()
        sweeper = Sweeper(list(self.sandbox_of), self.args.old_sweep_seconds)
        if self.design == "fast":
            sweeper.start()
        first = self.sample()
        window = (first["time"], first["time"] + 60 * self.args.minutes)
        time.sleep(max(0.0, window[1] - time.time()))
        last = self.sample()
        batches.stopping.set()
        self.save_request_log(window)
        log(self.design, "window over; draining")
        tracked_kinds = {k.name for s in self.slugs for k in get_provider(s).tracked_kinds()}

        def timelines() -> list[tuple[str, list[dict[str, Any]]]]:
            return [(s, self.sandbox.timeline(s)["jobs"]) for s in self.sandbox_of.values()]

        def delays(lines: list[Any], ended: float, slug: str | None = None) -> tuple[Any, ...]:
            chosen = [(s, jobs) for s, jobs in lines if slug in (None, self.provider_of[s])]
            return measure(chosen, dict(poller.seen), tracked_kinds, window, ended)

        drain_end = window[1] + self.args.drain_seconds
        while any(d.unseen for d in delays(timelines(), time.time())):
            if time.time() >= drain_end:
                break
            time.sleep(5)
        poller.stopping.set()
        sweeper.stopping.set()
        poller.join()
        ended = time.time()
        # Nothing changes once the cluster has stopped: a last poll then must leave every
        # job as a full listing shows it, or the poller missed a change (Poller.missed).
        stop(self.cluster)
        poller.poll()
        lines = timelines()
        raw = {
            "window": window,
            "ended": ended,
            "provider_of": self.provider_of,
            "timelines": lines,
            "seen": {"|".join(key): seen.states for key, seen in poller.seen.items()},
        }
        Path(self.workdir, "raw.json").write_text(json.dumps(raw))
        requests_made = {s: last["requests"][s] - first["requests"][s] for s in first["requests"]}
        by_provider = {}
        for slug in set(self.provider_of.values()):
            mine = [s for s, of in self.provider_of.items() if of == slug]
            by_provider[slug] = {
                "delays": [d.figures() for d in delays(lines, ended, slug)],
                "requests": sum(requests_made[s] for s in mine),
                "accounts": len(mine),
            }
        running, new, earlier = delays(lines, ended)
        differ, listed = poller.missed()
        return {
            "design": self.design,
            "running": running.figures(),
            "new": new.figures(),
            "earlier": earlier.figures(),
            "requests": sum(requests_made.values()),
            "throttled": last["throttled"],
            **{k: last[k] - first[k] for k in ("cpu", "sandbox_cpu", "api_cpu")},
            **sync_runs(window),
            "by_provider": by_provider,
            "poll_failures": poller.failures,
            "track_failures": batches.failures,
            "differ": differ,
            "listed": listed,
            "workdir": self.workdir,
        }


def sync_runs(window: tuple[float, float]) -> dict[str, Any]:
    """The window's sync runs by trigger and outcome, and the mean gap between two
    sweeps of an account over the whole run."""
    from django.db.models import Count

    from jobcenter.models import SyncRun

    runs = (
        SyncRun.objects.filter(
            started_at__gte=datetime.fromtimestamp(window[0], tz=UTC),
            started_at__lt=datetime.fromtimestamp(window[1], tz=UTC),
        )
        .values("trigger", "outcome")
        .annotate(n=Count("id"))
    )
    sweeps: dict[int, list[datetime]] = {}
    for account_id, at in (
        SyncRun.objects.filter(trigger="schedule")
        .order_by("started_at")
        .values_list("account_id", "started_at")
    ):
        sweeps.setdefault(account_id, []).append(at)
    gaps = [
        (later - earlier).total_seconds()
        for times in sweeps.values()
        for earlier, later in pairwise(times)
    ]
    return {
        "runs": {f"{row['trigger']} {row['outcome']}": row["n"] for row in runs},
        "sweep_gap": sum(gaps) / len(gaps) if gaps else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=3)
    parser.add_argument("--workers", type=int, default=2, help="qcluster workers")
    parser.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL URL; each design gets a fresh database named after it with "
        "_this or _old (default: a fresh SQLite file per design)",
    )
    parser.add_argument(
        "--redis",
        default=None,
        help="broker and rate-limit buckets; this Redis database is EMPTIED",
    )
    parser.add_argument(
        "--old-sweep-seconds",
        type=float,
        default=28.0,
        help="the third run: the old design with a sweep of every account this often, "
        "queued by the bench (0: no third run)",
    )
    parser.add_argument("--poll-seconds", type=float, default=2.0)
    parser.add_argument("--drain-seconds", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", choices=list(DESIGNS), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_design(args.child, args, args.result)
        return 0
    results = []
    for design in [d for d in DESIGNS if d != "fast" or args.old_sweep_seconds > 0]:
        with tempfile.NamedTemporaryFile(suffix=".json") as result:
            child = [sys.executable, __file__, *sys.argv[1:], "--child", design, "--result"]
            done = subprocess.run([*child, result.name], cwd=ROOT, check=False)
            if done.returncode:
                print(f"the {DESIGNS[design]} run failed ({done.returncode})", file=sys.stderr)
                return 1
            results.append(json.loads(Path(result.name).read_text()))
    print_report(args, results)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
