"""Shared fixtures: one real sandbox process on loopback for the whole test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from providers.sandbox.client import SandboxClient, start_sandbox, stop_sandbox
from tests.browser_support import browser  # noqa: F401 (the browser tests' fixture)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxClient]:
    """A sandbox serving every provider; tests create their own accounts in it."""
    providers = os.environ.get("JOBCENTER_SANDBOX_PROVIDERS")  # narrow it while developing
    args = ["--jobs-per-kind", "0"] + (["--providers", providers] if providers else [])
    process, client = start_sandbox(args=args)
    try:
        yield client
    finally:
        stop_sandbox(process)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None) -> None:
    """The fresh test database gets fresh rate-limit buckets (SQLite keeps them beside it).

    A bucket a previous run left nearly empty would otherwise slow this run's first
    requests.
    """
    from jobcenter.sync.ratelimit import sqlite_bucket_file

    bucket_file = sqlite_bucket_file()
    if bucket_file:
        for suffix in ("", "-wal", "-shm"):
            Path(bucket_file + suffix).unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def fresh_oauth_tokens() -> None:
    """Each test asks for its own client-credentials tokens: the process's token cache
    (providers.declarative.auth) would otherwise carry one test's token into the next."""
    from providers.declarative.auth import forget_tokens

    forget_tokens()
