"""gunicorn's configuration hooks for /metrics in multiprocess mode:
`gunicorn -c python:jobcenter.observability.gunicorn jobcenter.wsgi ...`.

Loaded by gunicorn's master before Django is set up: nothing here imports Django.
"""

from __future__ import annotations

from typing import Any

from jobcenter.observability import files


def on_starting(server: Any) -> None:
    """Make the metrics directory before the first worker (a fresh start empties it)."""
    path = files.directory()
    if path is not None:
        files.prepare(path)


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited: its live gauges go (its counts stay, folded at the next scrape)."""
    path = files.directory()
    if path is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, str(path))
