"""`manage.py demo` runs the whole system, keeps every account syncing, and stops all of it.

Issue 16's "Must show": the demo is up, every sandbox account gets a further successful
sync from the schedule (django-q2's cluster, not the demo's own first sync), and SIGTERM
to the demo's process group leaves no process behind.

The demo always gets its own temporary SQLite file (it is made for SQLite and its
ORM broker), whatever database the suite runs on, and never the developer's.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from providers import REGISTRY
from providers.sandbox.client import free_port
from tests.processes import ROOT, process_env, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)"),
]

# Generous: the scheduler first looks ~30 s after the cluster starts; syncs on a loaded
# 2-core machine take a while.
UP_SECONDS = 120
SCHEDULED_SYNC_SECONDS = 200


def session_processes(session_id: int) -> dict[int, str]:
    """pid -> command of every live process in a session, read from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid pgrp session ...; comm may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[3]) == session_id:
            found[int(entry.name)] = command.strip()
    return found


def kill_session(session_id: int) -> None:
    for pid in session_processes(session_id):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def scheduled_successes(database: Path) -> dict[int, int]:
    """Per account, its sync runs with trigger `schedule` that succeeded."""
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
            rows = db.execute(
                "SELECT a.id, (SELECT count(*) FROM jobcenter_syncrun r WHERE r.account_id = a.id"
                " AND r.trigger = 'schedule' AND r.outcome = 'succeeded')"
                " FROM jobcenter_provideraccount a"
            ).fetchall()
    except sqlite3.OperationalError:  # not migrated yet, or busy for a moment
        return {}
    return dict(rows)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path, int]]:
    """The demo in its own session on free ports, with its own SQLite file."""
    database = tmp_path / "demo.sqlite3"
    log = tmp_path / "demo.log"
    web_port, sandbox_port = free_port(), free_port()
    env = process_env(
        DATABASE_URL=f"sqlite:///{database}",
        DEBUG="1",
        JOBCENTER_ALLOW_LOOPBACK_PROVIDERS="1",
        LOG_LEVEL="WARNING",
    )
    env.pop("REDIS_URL", None)  # its cluster must not share a broker with anything else
    env.pop("JOBCENTER_SITE_URL", None)
    ports = ["--port", str(web_port), "--sandbox-port", str(sandbox_port)]
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "demo", *ports, "--jobs-per-kind", "5"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process, database, log, web_port
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        kill_session(process.pid)


def test_the_demo_keeps_syncing_on_schedule_and_stops_every_process(
    demo: tuple[subprocess.Popen[bytes], Path, Path, int],
) -> None:
    process, database, log, web_port = demo
    started = time.monotonic()

    def output() -> str:
        return log.read_text(errors="replace")

    def alive() -> bool:
        assert process.poll() is None, f"the demo exited ({process.returncode}):\n{output()}"
        return True

    wait_for(lambda: alive() and "password:" in output(), UP_SECONDS, "the demo to be up")
    up = time.monotonic() - started
    password = re.search(r"password: (\S+)", output())
    assert password is not None

    # The printed password opens the admin on the demo's own web server.
    session = requests.Session()
    login = f"http://127.0.0.1:{web_port}/admin/login/"
    session.get(login, timeout=30).raise_for_status()
    answer = session.post(
        login,
        data={
            "username": "admin",
            "password": password.group(1),
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "next": "/admin/",
        },
        timeout=30,
    )
    assert answer.status_code == 200 and answer.url.endswith("/admin/"), answer.url
    assert "Log out" in answer.text

    # The demo's own first sync of each account is one; the cluster's is the second.
    # One account per registered provider, the declared ones (providers/definitions/) too.
    accounts = scheduled_successes(database)
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
        providers = {row[0] for row in db.execute("SELECT provider FROM jobcenter_provideraccount")}
    assert providers == set(REGISTRY), providers
    assert len(accounts) == len(REGISTRY), accounts

    def every_account_synced_twice() -> bool:
        alive()
        counts = scheduled_successes(database)
        return len(counts) == len(accounts) and min(counts.values()) >= 2

    wait_for(
        every_account_synced_twice,
        SCHEDULED_SYNC_SECONDS,
        "a second successful scheduled sync of every account",
        interval=1,
    )
    synced = time.monotonic() - started
    assert session_processes(process.pid).keys() > {process.pid}  # its children run

    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(timeout=90) == 0, output()[-3000:]
    deadline = time.monotonic() + 30  # orphans, if any, would still be exiting
    while session_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert session_processes(process.pid) == {}
    print(f"demo up after {up:.0f}s; every account synced by the schedule after {synced:.0f}s")
