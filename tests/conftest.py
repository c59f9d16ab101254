"""Shared fixtures: one real sandbox process on loopback for the whole test session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from providers.sandbox.client import SandboxClient, start_sandbox, stop_sandbox


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
