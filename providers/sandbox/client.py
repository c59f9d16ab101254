"""Start a sandbox process and drive its `/_sandbox/` controls: used by tests, demo, bench."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SandboxClient:
    """The `/_sandbox/` control API of a running sandbox at `root` (http://host:port)."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        self.session = requests.Session()

    def base_url(self, provider: str) -> str:
        return f"{self.root}/{provider}"

    def credentials(self, described: dict[str, Any]) -> dict[str, str]:
        """A sandbox account's credentials as Job Center's account form takes them: those
        the sandbox issued, plus each credential field a base-URL template names that it
        does not issue (Salesforce's instance URL: this server's base URL for it)."""
        from providers import get_provider
        from providers.declarative.fields import template_names

        slug = described["provider"]
        provider = get_provider(slug)
        credentials = dict(described["credentials"])
        named = {name for url in provider.base_urls.values() for name in template_names(url)}
        for field in provider.credential_fields:
            if field.name in named and field.name not in credentials:
                credentials[field.name] = self.base_url(slug)
        return credentials

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.session.request(
            method, f"{self.root}/_sandbox/{path}", timeout=30, **kwargs
        )
        response.raise_for_status()
        return response.json()

    def healthy(self) -> bool:
        try:
            return bool(self._call("GET", "health").get("ok"))
        except requests.RequestException:
            return False

    def create_account(self, provider: str, **options: Any) -> dict[str, Any]:
        """A new sandbox account; the answer holds its id and credentials."""
        return self._call("POST", "accounts", json={"provider": provider, **options})

    def accounts(self) -> list[dict[str, Any]]:
        return self._call("GET", "accounts")["accounts"]

    def state(self, account_id: str) -> dict[str, Any]:
        return self._call("GET", "state", params={"account": account_id})

    def timeline(self, account_id: str) -> dict[str, Any]:
        """Every job's schedule on the account's clock (`ProviderSandbox.timeline`)."""
        return self._call("GET", "timeline", params={"account": account_id})

    def requests(self, account_id: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"since": since}
        if account_id:
            params["account"] = account_id
        return self._call("GET", "requests", params=params)["entries"]

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "stats")

    def clock(
        self, account_id: str, *, freeze: bool | None = None, advance: float | None = None
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {}
        if freeze is not None:
            payload["freeze"] = freeze
        if advance is not None:
            payload["advance"] = advance
        return self._call("POST", f"accounts/{account_id}/clock", json=payload)

    def control(self, account_id: str, action: str, **payload: Any) -> dict[str, Any]:
        return self._call("POST", f"accounts/{account_id}/{action}", json=payload)


def sandbox_command(port: int, args: Sequence[str] = ()) -> list[str]:
    """The command line of a sandbox on loopback `port`, in this interpreter."""
    return [sys.executable, "-m", "providers.sandbox", "--port", str(port), *args]


def wait_until_healthy(
    process: subprocess.Popen[bytes], port: int, timeout: float = 20.0
) -> SandboxClient:
    """The client of a sandbox just started, once it answers; RuntimeError if it never does."""
    client = SandboxClient(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"sandbox exited with {process.returncode}: {error[-2000:]}")
        if client.healthy():
            return client
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"sandbox did not answer on port {port} within {timeout}s")


def start_sandbox(
    port: int | None = None, args: Sequence[str] = (), *, timeout: float = 20.0
) -> tuple[subprocess.Popen[bytes], SandboxClient]:
    """Start `python -m providers.sandbox` on loopback and wait until it answers."""
    port = port or free_port()
    process = subprocess.Popen(
        sandbox_command(port, args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    return process, wait_until_healthy(process, port, timeout)


def stop_sandbox(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
