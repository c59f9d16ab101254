"""The browser the browser tests share: Debian's Chromium driven by Playwright, one per session.

`browser` is registered for every test module through tests/conftest.py: Playwright's
sync API runs one event loop per thread, so a second session-wide browser (a test module
importing the fixture for itself) could not start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The staff member's browser is in New York: times must follow it, UTC on hover.
STAFF_ZONE = "America/New_York"
PASSWORD = "a-long-browser-test-password"


def ensure_chromium() -> Path:
    """Debian's Chromium, installed with apt-get when missing (as `make test` does)."""
    if not CHROMIUM.exists() and shutil.which("apt-get") and os.geteuid() == 0:
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "chromium"],
        ):
            subprocess.run(command, capture_output=True, timeout=600, check=False)
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing and apt-get could not install it (run `make test`)")
    return CHROMIUM


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]'")
    executable = ensure_chromium()
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls
    # are plain synchronous code all the same.
    # It is unset again afterwards, so that no later test's subprocess inherits it.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_api.sync_playwright() as playwright:
            launched = playwright.chromium.launch(
                executable_path=str(executable), args=CHROMIUM_ARGS
            )
            yield launched
            launched.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous
