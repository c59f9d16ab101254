"""Mailchimp Marketing API batch operations, as the real service behaves.

Written from the provider research of issue 19 (Mailchimp batch operations) and checked
against Mailchimp's own OpenAPI 3.1 document by tests/test_mailchimp_sandbox.py, never
generated from a definition. What it reproduces, and why each matters to the sync:

- Auth with an API key whose suffix names the data centre (`<32 hex>-us21`): HTTP Basic
  with any username and the key as password, or the key as a Bearer token. A missing or
  wrong (revoked, rotated) key is a 401 in Mailchimp's RFC 9457 problem+json body.
- `GET /3.0/batches`: `{batches, total_items, _links}`, paged by `count` (default 10,
  at most 1000) and `offset`; no filter, no sort (submission order here: the real order
  is undocumented; `order: "newest_first"` flips it). `fields` / `exclude_fields` take
  dot-notation lists as Mailchimp's do. `GET /3.0/batches/{batch_id}` answers one `Batch`.
- Batches run one at a time per account (the API's own DELETE description says so):
  `pending` until the previous one ends, then `preprocessing`, `started` (while
  `finished_operations` and `errored_operations` grow with the clock), `finalizing`,
  and `finished`, the only terminal state: partial failure is `finished` with
  `errored_operations > 0`. `completed_at` and `response_body_url` are `""` until then;
  the archive is linked, never served.
- A finished batch stays listed `retention_days` (default 7: Mailchimp documents no
  figure) after it completed, then vanishes from the list and answers 404 by id.
- 10 simultaneous connections per key: every answer is held `response_seconds` (real
  time, default 0) and a request arriving while `max_connections` are open is a 429
  without Retry-After (none is documented). At most `max_pending` (500) unfinished
  batches: `create_jobs` beyond that is refused, as Mailchimp refuses the POST.

Account options beside the shared ones (`frozen`, `start`, `rate_limits`, `faults`):
`seed`, `jobs_per_kind` (seeded batches: history plus a recent queue), `dc`,
`retention_days`, `order`, `max_connections`, `response_seconds`, `max_pending`,
`new_jobs_per_minute` with `new_job_seconds` ([shortest, longest] run time; default 30 to
300). Controls: `create_jobs` {count, size (operations), failed (errored ones), duration
(seconds of run time)} -> {"kind", "ids"}; `expire` {ids} -> {"expired", "unknown"};
`revoke`; `rotate_key` -> {"credentials"}; `set_rate_limit` {max_connections,
response_seconds}.
"""

from __future__ import annotations

import base64
import binascii
import random
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from providers.sandbox.core import (
    ProviderSandbox,
    SandboxAccount,
    SandboxRequest,
    SandboxResponse,
    iso,
    status_changes,
)

KIND = "batch"  # the one job kind: a batch operation
STATUSES = ("pending", "preprocessing", "started", "finalizing", "finished")
PROBLEM = "application/problem+json; charset=utf-8"
ERROR_DOCS = "https://mailchimp.com/developer/marketing/docs/errors/"
SCHEMA_BASE = "https://api.mailchimp.com/schema/3.0"
ARCHIVE_HOST = "https://mailchimp-api-batch.sandbox.invalid"
DEFAULT_COUNT = 10
MAX_COUNT = 1000
DEFAULT_DC = "us21"
DEFAULT_RETENTION_DAYS = 7.0
DEFAULT_MAX_CONNECTIONS = 10
DEFAULT_MAX_PENDING = 500
DEFAULT_NEW_JOB_SECONDS = (30.0, 300.0)
DAY = 86400.0
# Shares of a batch's run time spent preprocessing and finalizing (the rest: started).
PREPROCESS_SHARE = 0.1
FINALIZE_SHARE = 0.1


def mc_time(ts: float) -> str:
    """A time as Mailchimp writes it: ISO 8601 to the second with `+00:00`."""
    return datetime.fromtimestamp(int(ts), tz=UTC).isoformat()


@dataclass
class Batch:
    """One batch; its status and counts at any moment follow from its schedule."""

    id: str
    submitted: float
    total: int
    errored: int
    duration: float  # preprocessing + started + finalizing
    pickup: float  # how long an idle queue takes to notice it
    start: float = 0.0  # set by the account's queue
    hidden: bool = False  # expired on demand ("expire" control)

    @property
    def running(self) -> float:
        return self.start + self.duration * PREPROCESS_SHARE

    @property
    def finalizing(self) -> float:
        return self.start + self.duration * (1 - FINALIZE_SHARE)

    @property
    def done(self) -> float:
        return self.start + self.duration

    def status(self, now: float) -> str:
        moments = (self.start, self.running, self.finalizing, self.done)
        return STATUSES[sum(1 for m in moments if now >= m)]

    def finished_at(self, now: float) -> int:
        """Operations finished by `now`: linear in the clock while `started`."""
        if now <= self.running:
            return 0
        if now >= self.finalizing:
            return self.total
        return int(self.total * (now - self.running) / (self.finalizing - self.running))

    def visible(self, now: float, retention: float) -> bool:
        return not self.hidden and self.submitted <= now and now < self.done + retention

    def view(self, now: float, base_url: str) -> dict[str, Any]:
        """The `Batch` object the API answers at `now`."""
        finished = self.finished_at(now)
        done = now >= self.done
        errored = (
            self.errored
            if finished >= self.total
            else self.errored * finished // max(1, self.total)
        )
        own = f"{base_url}/3.0/batches/{self.id}"
        return {
            "id": self.id,
            "status": self.status(now),
            "total_operations": self.total,
            "finished_operations": finished,
            "errored_operations": errored,
            "submitted_at": mc_time(self.submitted),
            "completed_at": mc_time(self.done) if done else "",
            "response_body_url": f"{ARCHIVE_HOST}/{self.id}-response.tar.gz" if done else "",
            "_links": [
                link("parent", f"{base_url}/3.0/batches", "GET", "Batches/CollectionResponse"),
                link("self", own, "GET", "Batches/Response"),
                link("delete", own, "DELETE"),
            ],
        }

    def schedule(self) -> dict[str, Any]:
        """Its `/_sandbox/timeline` entry: status changes and finished_operations' growth."""
        moments = (self.start, self.running, self.finalizing, self.done)
        return {
            "kind": KIND,
            "id": self.id,
            "created": self.submitted,
            "statuses": status_changes(self.status, self.submitted, moments),
            "progress": {
                "field": "finished_operations",
                "start": self.running,
                "end": self.finalizing,
                "final": self.total,
                "until": self.finalizing,
            },
        }


def link(rel: str, href: str, method: str, schema: str | None = None) -> dict[str, str]:
    """One entry of `_links`: a GET names its answer's schema, a POST its body's."""
    entry = {"rel": rel, "href": href, "method": method}
    if schema:
        entry["targetSchema" if method == "GET" else "schema"] = (
            f"{SCHEMA_BASE}/Definitions/{schema}.json"
        )
    return entry


class MailchimpAccount(SandboxAccount):
    """A Mailchimp account: its API key, its one batch queue and its connection limit."""

    def __init__(self, credentials: dict[str, str], options: Mapping[str, Any]) -> None:
        super().__init__("mailchimp", credentials, options)
        seed = options.get("seed", 1)
        self.rng = random.Random(f"mailchimp:{seed}")
        self.new_rng = random.Random(f"mailchimp:{seed}:new")
        self.control_rng = random.Random(f"mailchimp:{seed}:control")
        self.retention = float(options.get("retention_days", DEFAULT_RETENTION_DAYS)) * DAY
        self.newest_first = options.get("order", "oldest_first") == "newest_first"
        self.max_connections = int(options.get("max_connections", DEFAULT_MAX_CONNECTIONS))
        self.response_seconds = float(options.get("response_seconds", 0.0))
        self.max_pending = int(options.get("max_pending", DEFAULT_MAX_PENDING))
        self.new_per_minute = float(options.get("new_jobs_per_minute") or 0)
        low, high = options.get("new_job_seconds") or DEFAULT_NEW_JOB_SECONDS
        if not 0 < float(low) <= float(high):
            raise ValueError("new_job_seconds is [shortest, longest] with 0 < shortest")
        self.new_seconds = (float(low), float(high))
        self.batches: list[Batch] = []  # in submission order
        self.by_id: dict[str, Batch] = {}
        self.free_at = 0.0  # when the queue's last batch ends
        self.origin = self.clock.now()
        self.new_made = 0
        self.open_until: list[float] = []  # real-time ends of the connections held open
        self.connections_lock = threading.Lock()

    def add(
        self,
        submitted: float,
        total: int,
        errored: int,
        duration: float,
        rng: random.Random,
        pickup: float | None = None,
    ) -> Batch:
        """Queue a batch submitted at `submitted` (never before the last one)."""
        batch = Batch(
            id=f"{rng.getrandbits(40):010x}",
            submitted=submitted,
            total=max(1, total),
            errored=max(0, min(errored, total)),
            duration=max(0.001, duration),
            pickup=rng.uniform(0.2, 2.0) if pickup is None else pickup,
        )
        while batch.id in self.by_id:
            batch.id = f"{rng.getrandbits(40):010x}"
        batch.start = max(submitted + batch.pickup, self.free_at)
        self.free_at = batch.done
        self.batches.append(batch)
        self.by_id[batch.id] = batch
        return batch

    def materialize(self, now: float) -> None:
        """Submit the batches `new_jobs_per_minute` says arrived up to `now`, in order."""
        if self.new_per_minute <= 0:
            return
        interval = 60.0 / self.new_per_minute
        while self.origin + (self.new_made + 1) * interval <= now:
            rng = self.new_rng
            total = random_size(rng)
            self.add(
                self.origin + (self.new_made + 1) * interval,
                total,
                random_errored(rng, total),
                rng.uniform(*self.new_seconds),
                rng,
            )
            self.new_made += 1

    def visible(self, now: float) -> list[Batch]:
        shown = [b for b in self.batches if b.visible(now, self.retention)]
        return shown[::-1] if self.newest_first else shown

    def open_connection(self) -> bool:
        """Hold one connection for `response_seconds`; False when all are taken."""
        now = time.time()
        with self.connections_lock:
            self.open_until = [t for t in self.open_until if t > now]
            if len(self.open_until) >= self.max_connections:
                return False
            self.open_until.append(now + self.response_seconds)
            return True

    def seed(self, count: int) -> None:
        """Finished history within the retention period, then a recent queue: one batch
        running and the rest pending behind it (with two or more batches)."""
        if count <= 0:
            return
        rng = self.rng
        now = self.clock.now()
        queued = 0 if count < 2 else min(max(1, count // 10), 50)  # within max_pending
        gaps = [rng.uniform(120, 3600) for _ in range(count - queued)]
        # However many there are, all of them are still listed now.
        scale = min(1.0, max(1.0, 0.8 * self.retention - 1800) / max(1.0, sum(gaps)))
        gaps = [gap * scale for gap in gaps]
        t = now - 1800 - sum(gaps)
        for gap in gaps:
            total = random_size(rng)
            run, pickup = min(gap, 900) * rng.uniform(0.1, 0.8), gap * rng.uniform(0, 0.1)
            self.add(t, total, random_errored(rng, total), run, rng, pickup)
            t += gap
        for i in range(queued):
            total = random_size(rng)
            submitted = now - 600 if i == 0 else now - 90 + i * 80 / queued
            duration = rng.uniform(1800, 3600) if i == 0 else rng.uniform(120, 900)
            self.add(submitted, total, random_errored(rng, total), duration, rng)


def random_size(rng: random.Random) -> int:
    return rng.randint(1, 20_000) if rng.random() < 0.05 else rng.randint(1, 2000)


def random_errored(rng: random.Random, total: int) -> int:
    """Most batches have no errored operation; some a few; some every one."""
    r = rng.random()
    if r < 0.65:
        return 0
    if r < 0.92:
        return rng.randint(1, max(1, total // 4))
    return total


def problem(status: int, title: str, detail: str) -> SandboxResponse:
    """Mailchimp's RFC 9457 error document; `instance` is also the X-Request-Id."""
    instance = str(uuid.uuid4())
    return SandboxResponse.json(
        status,
        {
            "type": ERROR_DOCS,
            "title": title,
            "status": status,
            "detail": detail,
            "instance": instance,
        },
        content_type=PROBLEM,
        headers={"X-Request-Id": instance},
    )


def not_found() -> SandboxResponse:
    return problem(404, "Resource Not Found", "The requested resource could not be found.")


def project(value: Any, fields: list[list[str]] | None, exclude: list[list[str]]) -> Any:
    """Apply `fields` / `exclude_fields` (dot paths; lists are looked through)."""
    if isinstance(value, list):
        return [project(item, fields, exclude) for item in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        if [key] in exclude:
            continue
        if fields is not None and [key] not in fields:
            deeper = [f[1:] for f in fields if f[0] == key and len(f) > 1]
            if not deeper:
                continue
            out[key] = project(item, deeper, [e[1:] for e in exclude if e[0] == key])
            continue
        out[key] = project(item, None, [e[1:] for e in exclude if e[0] == key and len(e) > 1])
    return out


def dot_paths(text: str | None) -> list[list[str]]:
    return [part.strip().split(".") for part in (text or "").split(",") if part.strip()]


class MailchimpSandbox(ProviderSandbox):
    prefix = "mailchimp"
    cursor_parameter = None  # offsets do not expire

    def __init__(self, limiter: Any) -> None:
        super().__init__(limiter)
        self.keys: dict[str, MailchimpAccount] = {}  # every key ever issued, dead ones too

    def error_response(
        self, status: int, message: str, retry_after: float | None = None
    ) -> SandboxResponse:
        """Injected faults in Mailchimp's envelope; no Retry-After (none is documented)."""
        titles = {429: "Too Many Requests", 503: "Service Unavailable"}
        return problem(status, titles.get(status, "Internal Server Error"), message)

    # -- accounts -----------------------------------------------------------------------
    def create_account(self, options: Mapping[str, Any]) -> SandboxAccount:
        dc = str(options.get("dc") or DEFAULT_DC)
        account = MailchimpAccount({"api_key": f"{secrets.token_hex(16)}-{dc}"}, options)
        account.seed(int(options.get("jobs_per_kind", 20)))
        with self.lock:
            self.keys[account.credentials["api_key"]] = account
        return self.register(account)

    def state(self, account: SandboxAccount) -> dict[str, Any]:
        assert isinstance(account, MailchimpAccount)
        now = account.clock.now()
        account.materialize(now)
        fields = ("status", "total_operations", "finished_operations", "errored_operations")
        fields += ("submitted_at", "completed_at", "response_body_url")
        jobs = []
        for batch in account.visible(now):
            view = batch.view(now, "")
            jobs.append({"kind": KIND, "id": batch.id, **{f: view[f] for f in fields}})
        return {
            "provider": "mailchimp",
            "account": account.id,
            "now": iso(now),
            "revoked": account.revoked,
            "pending": sum(1 for b in account.batches if b.status(now) != "finished"),
            "jobs": jobs,
        }

    def timeline(self, account: SandboxAccount) -> list[dict[str, Any]]:
        assert isinstance(account, MailchimpAccount)
        now = account.clock.now()
        account.materialize(now)
        return [batch.schedule() for batch in account.visible(now)]

    def control(
        self, account: SandboxAccount, action: str, payload: Mapping[str, Any]
    ) -> dict[str, Any]:
        assert isinstance(account, MailchimpAccount)
        now = account.clock.now()
        account.materialize(now)
        if action == "create_jobs":
            return {"kind": KIND, "ids": self.create_jobs(account, payload, now)}
        if action == "expire":
            ids = [str(i) for i in payload.get("ids") or []]
            known = [i for i in ids if i in account.by_id]
            for batch_id in known:
                account.by_id[batch_id].hidden = True
            return {"expired": known, "unknown": [i for i in ids if i not in account.by_id]}
        if action == "revoke":
            account.revoked = True
            return {"revoked": True}
        if action == "rotate_key":
            dc = account.credentials["api_key"].rsplit("-", 1)[1]
            account.credentials = {"api_key": f"{secrets.token_hex(16)}-{dc}"}
            account.revoked = False
            with self.lock:
                self.keys[account.credentials["api_key"]] = account
            return {"credentials": account.credentials}
        if action == "set_rate_limit":
            if "max_connections" in payload:
                account.max_connections = max(1, int(payload["max_connections"]))
            if "response_seconds" in payload:
                account.response_seconds = max(0.0, float(payload["response_seconds"]))
            return {
                "max_connections": account.max_connections,
                "response_seconds": account.response_seconds,
            }
        raise KeyError(action)

    def create_jobs(
        self, account: MailchimpAccount, payload: Mapping[str, Any], now: float
    ) -> list[str]:
        if payload.get("kind") not in (None, KIND):
            raise ValueError(f"Mailchimp has one kind of job: {KIND!r}")
        count = int(payload.get("count", 1))
        size = int(payload.get("size", 10))
        failed = int(payload.get("failed", 0))
        if count < 0 or size < 1 or not 0 <= failed <= size:
            raise ValueError("need count >= 0, size >= 1 and 0 <= failed <= size")
        duration = payload.get("duration")
        if duration is not None and float(duration) <= 0:
            raise ValueError("duration must be > 0 seconds")
        pending = sum(1 for b in account.batches if b.status(now) != "finished")
        if account.enforce_rate_limits and pending + count > account.max_pending:
            raise ValueError(
                f"{pending} batches are unfinished; Mailchimp refuses more than "
                f"{account.max_pending} pending batches with a 429"
            )
        rng = account.control_rng
        seconds = [
            float(duration) if duration is not None else rng.uniform(*account.new_seconds)
            for _ in range(count)
        ]
        return [account.add(now, size, failed, s, rng).id for s in seconds]

    # -- requests -------------------------------------------------------------------------
    def handle(self, request: SandboxRequest) -> tuple[SandboxResponse, SandboxAccount | None]:
        if not (request.header("Authorization") or "").strip():
            return problem(401, "API Key Missing", "Your request did not include an API key."), None
        key = api_key(request)
        with self.lock:
            account = self.keys.get(key) if key else None
        if account is None or account.revoked or account.credentials["api_key"] != key:
            detail = (
                "Your API key may be invalid, or you've attempted to access the wrong datacenter."
            )
            return problem(401, "API Key Invalid", detail), account
        if account.enforce_rate_limits and not account.open_connection():
            detail = f"You have exceeded the limit of {account.max_connections} simultaneous connections."
            return problem(429, "Too Many Requests", detail), account
        with account.lock:
            response = self.route(account, request)
        if account.enforce_rate_limits and account.response_seconds:
            response.delay = account.response_seconds  # the connection stays open that long
        return response, account

    def route(self, account: MailchimpAccount, request: SandboxRequest) -> SandboxResponse:
        parts = [p for p in request.path.split("/") if p]
        if parts[:2] != ["3.0", "batches"] or len(parts) > 3:
            return not_found()
        if request.method not in ("GET", "HEAD"):
            detail = "The requested method and resource are not compatible."
            return problem(405, "Method Not Allowed", detail)
        now = account.clock.now()
        account.materialize(now)
        query = request.query
        fields = dot_paths(query.get("fields")) or None
        exclude = dot_paths(query.get("exclude_fields"))
        if len(parts) == 3:
            batch = account.by_id.get(parts[2])
            if batch is None or not batch.visible(now, account.retention):
                return not_found()
            return SandboxResponse.json(
                200, project(batch.view(now, request.base_url), fields, exclude)
            )
        try:
            count = int(query.get("count", DEFAULT_COUNT))
            offset = int(query.get("offset", 0))
        except ValueError:
            return problem(400, "Invalid Resource", "count and offset must be integers.")
        if not 1 <= count <= MAX_COUNT or offset < 0:
            return problem(
                400, "Invalid Resource", f"count must be 1 to {MAX_COUNT} and offset at least 0."
            )
        shown = account.visible(now)
        collection = f"{request.base_url}/3.0/batches"
        body = {
            "batches": [b.view(now, request.base_url) for b in shown[offset : offset + count]],
            "total_items": len(shown),
            "_links": [
                link("self", collection, "GET", "Batches/CollectionResponse"),
                link("create", collection, "POST", "Batches/POST"),
            ],
        }
        return SandboxResponse.json(200, project(body, fields, exclude))


def api_key(request: SandboxRequest) -> str:
    """The key from HTTP Basic (any username, the key as password) or a Bearer token."""
    scheme, _, value = (request.header("Authorization") or "").strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[2]
    return ""
