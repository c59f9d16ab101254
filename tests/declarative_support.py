"""A small job API on 127.0.0.1 for the declarative engine's tests: every pagination style,
every auth style, JSON and CSV error records, and a Salesforce-like 403 "slow down".

It is no provider's sandbox (the Elastic Path twin test runs against that one): it speaks
just enough of each pattern a definition can declare, over real HTTP, and records the
requests it received so tests can see what was sent.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_KEY = "key-0123456789abcdef-us6"
CLIENT_ID = "client-abcdef123456"
CLIENT_SECRET = "secret-fedcba654321"
JOBS = [
    {
        "id": f"j{n}",
        "state": ["queued", "running", "finished", "finished", "aborted"][n % 5],
        "counts": {
            "total": 10,
            "done": 10 if n % 5 in (2, 3) else n % 10,
            "failed": (n % 5 == 3 and 4) or 0,
        },
        "created": f"2026-01-01T00:{n:02d}:00Z",
        "attributes": {"kind": "import" if n % 2 else "export"},
    }
    for n in range(1, 24)
]


@dataclass
class ToyState:
    auth: str = "bearer"  # bearer | basic | oauth
    tokens: set[str] = field(default_factory=set)
    token_requests: int = 0
    secret_revoked: bool = False
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # method, path?query, auth

    def authorized(self, header: str) -> bool:
        if self.auth == "bearer":
            return header == f"Bearer {API_KEY}"
        if self.auth == "basic":
            return header == "Basic " + base64.b64encode(f"anystring:{API_KEY}".encode()).decode()
        return header.startswith("Bearer ") and header[7:] in self.tokens


def page_of(items: list[dict[str, Any]], start: int, size: int) -> list[dict[str, Any]]:
    return items[start : start + size]


class Handler(BaseHTTPRequestHandler):
    state: ToyState

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def answer(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        self.state.seen.append(("POST", self.path, self.headers.get("Authorization", "")))
        if self.path != "/token":
            return self.answer(404, {"error": "no such endpoint"})
        self.state.token_requests += 1
        client_id = (form.get("client_id") or [""])[0]
        secret = (form.get("client_secret") or [""])[0]
        if client_id != CLIENT_ID or secret != CLIENT_SECRET or self.state.secret_revoked:
            return self.answer(400, {"error": "invalid_client", "echo": secret})
        token = f"tok-{self.state.token_requests:04d}-0123456789"
        self.state.tokens.add(token)
        return self.answer(200, {"access_token": token, "expires_in": 3600})

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        header = self.headers.get("Authorization", "")
        self.state.seen.append(("GET", self.path, header))
        if not self.state.authorized(header):
            return self.answer(401, {"message": f"bad credentials {header}"})
        path = parts.path
        size = int(query.get("limit") or 5)
        if path == "/offset":
            start = int(query.get("offset") or 0)
            return self.answer(200, {"items": page_of(JOBS, start, size), "total": len(JOBS)})
        if path == "/linked":
            start = int(query.get("from") or 0)
            following = (
                f"/linked?from={start + size}&limit={size}" if start + size < len(JOBS) else None
            )
            return self.answer(
                200, {"data": page_of(JOBS, start, size), "links": {"next": following}}
            )
        if path == "/cursor":
            start = int((query.get("after") or "c0")[1:])
            following = {"after": f"c{start + size}"} if start + size < len(JOBS) else None
            return self.answer(
                200, {"results": page_of(JOBS, start, size), "paging": {"next": following}}
            )
        if path == "/locator":
            start = int(query.get("queryLocator") or 0)
            done = start + 5 >= len(JOBS)
            body = {"done": done, "records": page_of(JOBS, start, 5)}
            body["nextRecordsUrl"] = None if done else f"/locator?queryLocator={start + 5}"
            return self.answer(200, body)
        if path == "/elsewhere":
            return self.answer(200, {"data": JOBS[:1], "links": {"next": "https://evil.example/x"}})
        if path == "/limited":
            return self.answer(403, [{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "Limit"}])
        if path == "/garbled":
            return self.answer(200, {"items": f"not a list {header}"})
        if path.startswith("/jobs/"):
            return self.job(path.split("/")[2:], query)
        return self.answer(404, {"message": "no such endpoint"})

    def job(self, segments: list[str], query: dict[str, str]) -> None:
        job = next((j for j in JOBS if j["id"] == segments[0]), None)
        if job is None:
            return self.answer(404, {"message": "no such job"})
        if len(segments) == 1:
            return self.answer(200, {"job": job})
        if segments[1] == "errors":
            errors = [{"id": f"e{n}", "error": {"text": f"row {n}: bad"}} for n in range(7)]
            start = int(query.get("offset") or 0)
            return self.answer(200, {"errors": page_of(errors, start, 3), "total": len(errors)})
        rows = "sf__Id,sf__Error,Name,Email\r\n"
        rows += "a1,REQUIRED_FIELD_MISSING:Required fields are missing: [Name],,x@example.com\r\n"
        rows += '"a2","DUPLICATE_VALUE:duplicate value found: Email","Ann, B","ann@example.com"\r\n'
        return self.answer(200, rows, "text/csv; charset=UTF-8")


@contextmanager
def toy_api(auth: str = "bearer") -> Iterator[tuple[str, ToyState]]:
    """The API on a free loopback port: its base URL and its state."""
    state = ToyState(auth=auth)
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


def shout_status(record: Any, raw: dict[str, Any]) -> Any:
    """A job hook for the tests: the provider's status word in capitals."""
    record.provider_status = str(raw["state"]).upper()
    return record
