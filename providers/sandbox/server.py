"""One local HTTP server that speaks every provider's job API, plus `/_sandbox/` controls.

Routes: `/<provider prefix>/...` goes to that provider's sandbox; `/_sandbox/...` are
the test controls:

- `GET  /_sandbox/health`                      providers served
- `POST /_sandbox/accounts`                    {"provider", "seed", "jobs_per_kind", ...}
- `GET  /_sandbox/accounts`                    every account with its credentials
- `GET  /_sandbox/state?account=ID`            the account's true state
- `GET  /_sandbox/timeline?account=ID`         every job's schedule on the account clock
- `GET  /_sandbox/requests?account=ID&since=N` the request log (bodies included)
- `GET  /_sandbox/stats`                       request, 429 and rate-limit violation counts
- `POST /_sandbox/accounts/ID/clock`           {"freeze": bool, "advance": seconds}
- `POST /_sandbox/accounts/ID/<action>`        provider-specific controls
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode, urlsplit

from providers import SANDBOX_CLASSES, get_sandbox
from providers.sandbox.core import (
    FaultPlan,
    FixedWindowLimiter,
    ProviderSandbox,
    RequestLog,
    SandboxAccount,
    SandboxRequest,
    SandboxResponse,
)

logger = logging.getLogger("providers.sandbox")

MASKED_HEADERS = {"authorization", "cookie"}


class SandboxApp:
    """Everything the server holds: provider sandboxes, their accounts, the request log."""

    def __init__(
        self,
        providers: Iterable[str] = tuple(SANDBOX_CLASSES),
        *,
        log_size: int = 20_000,
        log_bodies: bool = True,
    ) -> None:
        self.limiter = FixedWindowLimiter()
        self.sandboxes: dict[str, ProviderSandbox] = {
            prefix: get_sandbox(prefix)(self.limiter) for prefix in providers
        }
        self.log = RequestLog(log_size)
        self.log_bodies = log_bodies
        self.requests_served = 0
        # Per account: API requests answered and how many of them were 429s (any cause).
        self.account_requests: dict[str, int] = {}
        self.account_throttled: dict[str, int] = {}
        self._lock = threading.Lock()

    def account(self, account_id: str) -> tuple[ProviderSandbox, SandboxAccount]:
        for sandbox in self.sandboxes.values():
            if account_id in sandbox.accounts:
                return sandbox, sandbox.accounts[account_id]
        raise KeyError(account_id)

    def create_account(self, options: Mapping[str, Any]) -> SandboxAccount:
        provider = options.get("provider")
        if provider not in self.sandboxes:
            raise ValueError(f"unknown provider {provider!r}; served: {sorted(self.sandboxes)}")
        return self.sandboxes[provider].create_account(options)

    def dispatch(self, request: SandboxRequest, prefix: str) -> SandboxResponse:
        with self._lock:
            self.requests_served += 1
        if prefix == "_sandbox":
            return self.control(request)
        sandbox = self.sandboxes.get(prefix)
        if sandbox is None:
            return SandboxResponse.json(404, {"error": f"no sandbox provider at /{prefix}"})
        response, account = self._handle(sandbox, request)
        if account is not None and account.faults is not None:
            fault = account.faults.choose()
            if fault is not None:
                response = self.inject(sandbox, account, request, response, fault)
        self._record(prefix, request, response, account)
        return response

    def _handle(
        self, sandbox: ProviderSandbox, request: SandboxRequest
    ) -> tuple[SandboxResponse, SandboxAccount | None]:
        try:
            return sandbox.handle(request)
        except Exception as exc:  # a sandbox bug must show as a 500, not kill the server
            logger.exception(
                "sandbox %s failed on %s %s", sandbox.prefix, request.method, request.path
            )
            return SandboxResponse.json(500, {"error": repr(exc)}), None

    def inject(
        self,
        sandbox: ProviderSandbox,
        account: SandboxAccount,
        request: SandboxRequest,
        response: SandboxResponse,
        fault: str,
    ) -> SandboxResponse:
        """Replace or break a real answer the way real APIs and networks fail."""
        plan = account.faults
        assert plan is not None
        if fault == "expired_cursor":
            param = sandbox.cursor_parameter
            if not param or param not in request.query:
                return response  # nothing to expire on this request
            query = dict(request.query, **{param: "expired-cursor"})
            stale = replace(request, query_string=urlencode(query))
            response = self._handle(sandbox, stale)[0]
        elif fault == "429":
            response = sandbox.error_response(
                429, "Request was throttled (injected fault).", retry_after=plan.retry_after
            )
        elif fault in ("500", "503"):
            response = sandbox.error_response(int(fault), "Internal error (injected fault).")
        elif fault == "502":
            response = SandboxResponse(
                502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"
            )
        elif fault == "content_type":
            response = SandboxResponse(
                200, b"<html><body>Down for maintenance</body></html>", "text/html"
            )
        elif fault == "timeout":
            response = replace(response, delay=plan.timeout_seconds)
        elif fault == "reset":
            response = replace(response, cut="reset")
        elif fault == "truncated":
            response = replace(response, cut="truncate")
        plan.count(fault)
        response.headers = {**response.headers, "X-Sandbox-Fault": fault}
        return response

    def _record(
        self,
        prefix: str,
        request: SandboxRequest,
        response: SandboxResponse,
        account: SandboxAccount | None,
    ) -> None:
        entry: dict[str, Any] = {
            "time": time.time(),
            "provider": prefix,
            "account": account.id if account else None,
            "method": request.method,
            "path": request.path,
            "query_string": request.query_string,
            "headers": {
                k: (v.split(" ", 1)[0] + " [redacted]" if k.lower() in MASKED_HEADERS else v)
                for k, v in request.headers.items()
            },
            "status": response.status,
            "content_type": response.content_type,
            "response_headers": dict(response.headers),
        }
        if account is not None:
            with self._lock:
                self.account_requests[account.id] = self.account_requests.get(account.id, 0) + 1
                if response.status == 429:
                    self.account_throttled[account.id] = (
                        self.account_throttled.get(account.id, 0) + 1
                    )
        if self.log_bodies:
            entry["body"] = request.body.decode("utf-8", "replace")
            entry["response_body"] = response.body.decode("utf-8", "replace")
            sandbox = self.sandboxes.get(prefix)
            if sandbox is not None:
                sandbox.redact_log_entry(entry)
        self.log.add(entry)

    # -- /_sandbox controls -----------------------------------------------------------
    def control(self, request: SandboxRequest) -> SandboxResponse:
        parts = [p for p in request.path.split("/") if p]
        query = request.query
        try:
            if parts == ["health"]:
                return SandboxResponse.json(200, {"ok": True, "providers": sorted(self.sandboxes)})
            if parts == ["accounts"] and request.method == "POST":
                options = request.json() or {}
                return SandboxResponse.json(201, self.create_account(options).describe())
            if parts == ["accounts"]:
                return SandboxResponse.json(
                    200,
                    {
                        "accounts": [
                            a.describe()
                            for s in self.sandboxes.values()
                            for a in s.accounts.values()
                        ]
                    },
                )
            if parts == ["state"]:
                sandbox, account = self.account(query["account"])
                with account.lock:
                    return SandboxResponse.json(200, sandbox.state(account))
            if parts == ["timeline"]:
                sandbox, account = self.account(query["account"])
                with account.lock:
                    jobs = sandbox.timeline(account)
                    now = account.clock.now()
                return SandboxResponse.json(
                    200,
                    {"account": account.id, "provider": sandbox.prefix, "now": now, "jobs": jobs},
                )
            if parts == ["requests"]:
                entries = self.log.entries(query.get("account"), int(query.get("since", 0)))
                return SandboxResponse.json(200, {"entries": entries})
            if parts == ["stats"]:
                accounts = {
                    account.id: {
                        "rate_limit_violations": self.limiter.violations_by_account.get(
                            account.id, 0
                        ),
                        "requests": self.account_requests.get(account.id, 0),
                        "throttled": self.account_throttled.get(account.id, 0),
                        "faults": account.faults.describe() if account.faults else None,
                    }
                    for sandbox in self.sandboxes.values()
                    for account in sandbox.accounts.values()
                }
                return SandboxResponse.json(
                    200,
                    {
                        "requests_served": self.requests_served,
                        "rate_limit_violations": self.limiter.violations,
                        "accounts": accounts,
                    },
                )
            if len(parts) == 3 and parts[0] == "accounts" and request.method == "POST":
                sandbox, account = self.account(parts[1])
                payload = request.json() or {}
                if parts[2] == "faults":
                    account.faults = FaultPlan.from_options(payload)
                    return SandboxResponse.json(
                        200, account.faults.describe() if account.faults else {"rate": 0}
                    )
                if parts[2] == "clock":
                    if payload.get("freeze") is True:
                        account.clock.freeze()
                    if payload.get("freeze") is False:
                        account.clock.unfreeze()
                    if payload.get("advance"):
                        account.clock.advance(float(payload["advance"]))
                    return SandboxResponse.json(200, account.clock.describe())
                with account.lock:
                    return SandboxResponse.json(200, sandbox.control(account, parts[2], payload))
        except KeyError as exc:
            return SandboxResponse.json(404, {"error": f"not found: {exc}"})
        except (ValueError, TypeError) as exc:
            return SandboxResponse.json(400, {"error": str(exc)})
        return SandboxResponse.json(404, {"error": f"no control at {request.path}"})


class SandboxHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK hold every keep-alive answer back by ~40 ms.
    disable_nagle_algorithm = True
    server: SandboxHTTPServer

    def _handle(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        segments = split.path.split("/", 2)  # ["", prefix, rest]
        prefix = segments[1] if len(segments) > 1 else ""
        rest = "/" + (segments[2] if len(segments) > 2 else "")
        host = (
            self.headers.get("Host")
            or f"{self.server.server_address[0]}:{self.server.server_address[1]}"
        )
        request = SandboxRequest(
            method=self.command,
            path=rest,
            query_string=split.query,
            headers=dict(self.headers.items()),
            body=body,
            base_url=f"http://{host}/{prefix}",
        )
        response = self.server.app.dispatch(request, prefix)
        if response.delay:
            time.sleep(response.delay)
        if response.cut == "reset":
            # Close with SO_LINGER 0: the client gets a TCP reset instead of an answer.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        self.send_response(response.status)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if response.cut == "truncate":
            # Promise the whole body, send half, hang up: a half-written answer.
            self.wfile.write(response.body[: len(response.body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_HEAD = _handle

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: SandboxApp) -> None:
        super().__init__(address, SandboxHandler)
        self.app = app


def make_server(
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    providers: Iterable[str] = tuple(SANDBOX_CLASSES),
    seed: int = 1,
    jobs_per_kind: int = 20,
    rate_limits: bool = True,
    log_bodies: bool = True,
    faults: dict[str, Any] | None = None,
) -> SandboxHTTPServer:
    """A server with one default account per provider, seeded from `seed`."""
    app = SandboxApp(providers, log_bodies=log_bodies)
    for prefix in app.sandboxes:
        app.create_account(
            {
                "provider": prefix,
                "seed": seed,
                "jobs_per_kind": jobs_per_kind,
                "rate_limits": rate_limits,
                "faults": faults,
                "default": True,
            }
        )
    return SandboxHTTPServer((host, port), app)
