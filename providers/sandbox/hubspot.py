"""HubSpot CRM imports (v3), written from HubSpot's published documentation (the facts, with sources, are in the project's provider research).

What it reproduces, and why each matters to the sync:

- Private-app auth: `Authorization: Bearer pat-na1-...`; a missing, wrong or revoked token
  is a 401 in HubSpot's error body (`status`, `message`, `correlationId`, `category`
  `INVALID_AUTHENTICATION`), as HubSpot's client issues show it.
- `GET /crm/v3/imports`: `{results, paging: {next: {after, link}}}`, `limit` (default 10,
  at most 100: the spec documents neither, so these are the CRM's usual ones) and an
  opaque `after` cursor; `paging` is absent on the last page. Newest first (the order is
  undocumented). The cursor is keyset-like: imports created while paging never shift it.
- `GET /crm/v3/imports/{importId}` (an int64 in the path, a string in the body) and
  `GET /crm/v3/imports/{importId}/errors`: paged `PublicImportError` records, with
  `errorMessage` only when `includeErrorMessage=true` and `sourceData.rowData` filled only
  when `includeRowData=true` (what the parameter names say; **uncertain**).
- Imports move on the account clock: `STARTED`, `DEFERRED` while they wait their turn,
  `PROCESSING` with `metadata.counters` growing linearly (`TOTAL_ROWS`, `CREATED_OBJECTS`,
  `UPDATED_OBJECTS`, `UNIQUE_OBJECTS_WRITTEN`, `PROPERTY_VALUES_EMITTED`: the keys of
  HubSpot's example; no error counter, its name is unknown), then `DONE` (row errors
  only under `/errors`: a partial failure is DONE), `FAILED` (a file-wide error, line 0),
  `CANCELED`, or `REVERTED` some time after DONE. Row errors appear as rows are processed.
- Retention is undocumented: an import ended more than `retention_days` ago (default 30)
  is gone from the list and answers 404 by id; `list_active_only` models the claim that
  the list shows only imports still running (**uncertain**).
- Rate limits per account: 190 requests per 10 s and 650,000 a day (a Professional
  private app), on real time; a 429 carries HubSpot's documented body (`errorType`
  `RATE_LIMIT`, `policyName` `TEN_SECONDLY_ROLLING` or `DAILY`, `requestId`) plus the
  `category` the spec's `Error` requires, and `X-HubSpot-RateLimit-*` headers on every
  answer; no `Retry-After` unless the `retry_after` option is on (it is unconfirmed).

Account options beside the shared ones (`rate_limits`, `frozen`, `start`, `faults`):
`seed`, `jobs_per_kind` (seeded imports), `retention_days`, `list_active_only`,
`requests_per_ten_seconds`, `daily_limit`, `retry_after`, `new_jobs_per_minute` with
`new_job_seconds` ([shortest, longest] processing, default 30 to 600). Controls:
`create_jobs` {kind, count, size (rows), failed (rows), duration (processing seconds),
outcome (done|failed|canceled|reverted), deferred_seconds} -> {"kind", "ids"}; `expire`
{ids} -> {"expired", "unknown"}; `revoke`; `rotate_token` -> {"credentials"};
`set_rate_limit` {requests_per_ten_seconds, daily_limit}.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from itertools import islice
from typing import Any
from urllib.parse import urlencode

from providers.sandbox.core import (
    ProviderSandbox,
    SandboxAccount,
    SandboxRequest,
    SandboxResponse,
    iso,
    retry_after_header,
    status_changes,
)

KIND = "crm-import"  # the one job kind: every import, whatever objects it writes
STARTED, DEFERRED, PROCESSING = "STARTED", "DEFERRED", "PROCESSING"
DONE, FAILED, CANCELED, REVERTED = "DONE", "FAILED", "CANCELED", "REVERTED"
TERMINAL = frozenset({DONE, FAILED, CANCELED, REVERTED})
OUTCOMES = ("done", "failed", "canceled", "reverted")
DAY = 86400.0
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100
DEFAULT_RETENTION_DAYS = 30
TEN_SECONDS = 10.0
DEFAULT_TEN_SECOND_LIMIT = 190  # private app, Professional (changelog "increasing our API limits")
DEFAULT_DAILY_LIMIT = 650_000
PICKUP_SECONDS = 2.0  # how long an import stays STARTED before it processes or is deferred
COLUMNS = 6  # property values a written row emits
JSON = "application/json;charset=utf-8"
AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and "
    "you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)
OBJECT_TYPES = (("CONTACT", "0-1", "contacts"), ("COMPANY", "0-2", "companies"))
# (errorType, message, column, invalid value); {row} is the row's line number.
ROW_ERRORS = (
    ("INVALID_EMAIL", "Email address {value} is invalid", 0, "customer-{row}@example"),
    ("COULD_NOT_PARSE_DATE", "Could not parse date {value}", 3, "31/02/2024"),
    ("INVALID_ENUMERATION_OPTION", "{value} is not a valid lifecycle stage", 4, "prospectt"),
    ("COULD_NOT_PARSE_NUMBER", "Could not parse number {value}", 5, "12,5 k"),
    ("MISSING_REQUIRED_PROPERTY", "Row {row} has no value for a required property", 1, ""),
    ("DUPLICATE_UNIQUE_PROPERTY_VALUE", "{value} is already used by another record", 0,
     "shared-{row}@example.com"),
)  # fmt: skip
FILE_ERROR = ("INVALID_SPREADSHEET", "The file could not be read as a spreadsheet", 0, "")


def hs_time(ts: float) -> str:
    """ISO 8601 with milliseconds and `Z`, as HubSpot writes its timestamps."""
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{dt.microsecond // 1000:03d}Z"


def hs_error(
    status: int, category: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> SandboxResponse:
    """HubSpot's error body: the spec's `Error` (category, correlationId, message) + status."""
    correlation = str(uuid.uuid4())
    body = {"status": "error", "message": message, "correlationId": correlation}
    body |= extra
    body["category"] = category
    headers = {"X-HubSpot-Correlation-Id": correlation, **(headers or {})}
    return SandboxResponse.json(status, body, JSON, headers)


def encode_cursor(value: int) -> str:
    return base64.urlsafe_b64encode(str(value).encode()).decode()


def decode_cursor(text: str) -> int:
    try:
        return int(base64.urlsafe_b64decode(text.encode()).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError(text) from None


class Import:
    """One import; its state, counters and errors at any moment follow from the clock."""

    __slots__ = (
        "cancel_at", "created", "duration", "end", "failed", "file_id", "hidden", "id",
        "name", "object_type", "outcome", "pickup", "revert_at", "seed", "size", "source",
        "start",
    )  # fmt: skip

    def __init__(self, import_id: int, created: float, rng: random.Random, **plan: Any) -> None:
        """`plan`: size and failed (rows), duration and deferred (seconds), outcome."""
        self.id = import_id
        self.created = created
        self.pickup = created + PICKUP_SECONDS
        self.start = self.pickup + max(0.0, float(plan["deferred"]))
        self.duration = max(0.001, float(plan["duration"]))
        self.end = self.start + self.duration
        self.size, self.failed, outcome = int(plan["size"]), int(plan["failed"]), plan["outcome"]
        self.outcome = outcome
        self.cancel_at = self.start + self.duration / 2 if outcome == "canceled" else None
        self.revert_at = self.end + 60 + rng.uniform(0, 3600) if outcome == "reverted" else None
        self.object_type = OBJECT_TYPES[rng.randrange(len(OBJECT_TYPES))]
        self.file_id = rng.randint(10**10, 10**11)
        self.source = rng.choice(("API", "API", "CRM_UI"))
        self.name = f"{self.object_type[2]}-{datetime.fromtimestamp(created, UTC):%Y%m%d-%H%M}"
        self.seed = rng.randrange(1 << 30)
        self.hidden = False

    @property
    def ok_rows(self) -> int:
        """Rows written by the end (a FAILED import writes none)."""
        return 0 if self.outcome == "failed" else self.size - self.failed

    @property
    def stop(self) -> float:
        return self.cancel_at if self.cancel_at is not None else self.end

    @property
    def ended(self) -> float:
        return self.revert_at if self.revert_at is not None else self.stop

    def state(self, t: float) -> str:
        if self.cancel_at is not None and t >= self.cancel_at:
            return CANCELED
        if t < self.pickup:
            return STARTED
        if t < self.start:
            return DEFERRED
        if t < self.end:
            return PROCESSING
        if self.outcome == "failed":
            return FAILED
        return REVERTED if self.revert_at is not None and t >= self.revert_at else DONE

    def fraction(self, t: float) -> float:
        # (end - start), not duration: the timeline's own expression, to the last bit.
        return min(1.0, max(0.0, (min(t, self.stop) - self.start) / (self.end - self.start)))

    def written(self, t: float) -> int:
        """UNIQUE_OBJECTS_WRITTEN at `t`: linear in the clock while processing."""
        return int(self.ok_rows * self.fraction(t))

    def counters(self, t: float) -> dict[str, int]:
        if min(t, self.stop) < self.start:
            return {}  # the file is not read yet
        written = self.written(t)
        created = written * (self.seed % 100) // 100
        return {
            "TOTAL_ROWS": self.size,
            "CREATED_OBJECTS": created,
            "UPDATED_OBJECTS": written - created,
            "UNIQUE_OBJECTS_WRITTEN": written,
            "PROPERTY_VALUES_EMITTED": written * COLUMNS,
        }

    def error_count(self, t: float) -> int:
        """Error records listed at `t`: row errors as rows are read, the file error at the end."""
        rows = int(self.failed * self.fraction(t))
        return rows + (1 if self.outcome == "failed" and self.state(t) == FAILED else 0)

    def updated(self, t: float) -> float:
        moments = [self.created, self.pickup, self.start, self.stop, self.revert_at]
        last = max(m for m in moments if m is not None and m <= t)
        written = self.written(t)
        if self.state(t) == PROCESSING and written:
            last = max(last, self.start + self.duration * written / self.ok_rows)
        return last

    def view(self, t: float) -> dict[str, Any]:
        """The `PublicImportResponse` at `t`."""
        type_name, type_id, _ = self.object_type
        lists = [{"listId": str(self.seed % 90_000 + 10_000), "objectType": type_name}]
        return {
            "id": str(self.id),
            "state": self.state(t),
            "createdAt": hs_time(self.created),
            "updatedAt": hs_time(self.updated(t)),
            "importName": self.name,
            "importSource": self.source,
            "optOutImport": False,
            "mappedObjectTypeIds": [type_id],
            "importTemplate": {"templateId": self.file_id, "templateType": "user_file"},
            "metadata": {
                "counters": self.counters(t),
                "fileIds": [str(self.file_id)],
                "objectLists": lists if type_name == "CONTACT" else [],
            },
        }

    def error_record(self, n: int, *, message: bool, row_data: bool) -> dict[str, Any]:
        """The `n`th error record (0-based), always the same."""
        type_name, type_id, _ = self.object_type
        if n < self.failed:
            kind, text, column, value = ROW_ERRORS[(self.seed + n) % len(ROW_ERRORS)]
            line = 2 + n * max(1, self.size // max(1, self.failed)) + self.seed % 2
            at = self.start + self.duration * (n + 1) / self.failed
        else:
            kind, text, column, value = FILE_ERROR
            line, at = 0, self.end
        value = value.format(row=line)
        record: dict[str, Any] = {
            "id": f"{self.id}-{n + 1}",
            "createdAt": int(at * 1000),
            "errorType": kind,
            "objectType": type_name,
            "objectTypeId": type_id,
            "sourceData": {
                "lineNumber": line,
                "rowData": row_values(line, column, value) if row_data and line else [],
                "additionalRowData": [],
                "containsEncryptedProperties": False,
                "fileId": self.file_id,
            },
        }
        if line:
            record |= {"knownColumnNumber": column, "invalidValue": value}
            record["invalidValueToDisplay"] = value
        if message:
            record["errorMessage"] = text.format(row=line, value=value)
        return record

    def schedule(self) -> dict[str, Any]:
        """Its `/_sandbox/timeline` entry: state changes and UNIQUE_OBJECTS_WRITTEN's growth."""
        progress = None
        if self.ok_rows and self.stop > self.start:
            progress = {
                "field": "UNIQUE_OBJECTS_WRITTEN",
                "start": self.start,
                "end": self.end,
                "final": self.ok_rows,
                "until": self.stop,
            }
        moments = (self.pickup, self.start, self.end, self.cancel_at, self.revert_at)
        return {
            "kind": KIND,
            "id": str(self.id),
            "created": self.created,
            "statuses": status_changes(self.state, self.created, moments),
            "progress": progress,
        }


class HubSpotAccount(SandboxAccount):
    """A HubSpot portal: its private-app token, its imports (by id) and its limits."""

    def __init__(self, credentials: dict[str, str], options: Mapping[str, Any]) -> None:
        super().__init__("hubspot", credentials, options)
        seed = int(options.get("seed", 1))
        self.rng = random.Random(f"hubspot:{seed}")
        self.control_rng = random.Random(f"hubspot:{seed}:control")
        self.new_rng = random.Random(f"hubspot:{seed}:new")
        self.portal_id = self.rng.randint(10**7, 10**8)
        self.retention = float(options.get("retention_days", DEFAULT_RETENTION_DAYS)) * DAY
        self.list_active_only = bool(options.get("list_active_only", False))
        self.send_retry_after = bool(options.get("retry_after", False))
        self.ten_second_limit = int(
            options.get("requests_per_ten_seconds") or DEFAULT_TEN_SECOND_LIMIT
        )
        self.daily_limit = int(options.get("daily_limit") or DEFAULT_DAILY_LIMIT)
        self.new_per_minute = float(options.get("new_jobs_per_minute") or 0)
        low, high = options.get("new_job_seconds") or (30.0, 600.0)
        if not 0 < float(low) <= float(high):
            raise ValueError("new_job_seconds is [shortest, longest] with 0 < shortest")
        self.new_seconds = (float(low), float(high))
        self.imports: list[Import] = []  # by id, which grows with creation time
        self.ids: list[int] = []
        self.by_id: dict[int, Import] = {}
        self.next_id = self.rng.randint(10**7, 9 * 10**7)
        self.origin = self.clock.now()
        self.new_made = 0
        self.usage: dict[float, tuple[int, int]] = {}  # window seconds -> (index, used)
        self.usage_lock = threading.Lock()

    def add(self, created: float, rng: random.Random, **spec: Any) -> Import:
        self.next_id += rng.randint(1, 40)
        job = Import(self.next_id, created, rng, **spec)
        self.imports.append(job)
        self.ids.append(job.id)
        self.by_id[job.id] = job
        return job

    def visible(self, job: Import, now: float) -> bool:
        ended = job.ended if job.state(now) in TERMINAL else math.inf
        return not job.hidden and job.created <= now < ended + self.retention

    def listed(self, job: Import, now: float) -> bool:
        if not self.visible(job, now):
            return False
        return not (self.list_active_only and job.state(now) in TERMINAL)

    def newest_first(self, below: int | None, now: float) -> Iterator[Import]:
        """Listed imports with an id below `below` (all when None), newest first."""
        index = len(self.ids) if below is None else bisect.bisect_left(self.ids, below)
        for job in reversed(self.imports[:index]):
            if self.listed(job, now):
                yield job

    def materialize(self, now: float) -> None:
        """Create the imports `new_jobs_per_minute` says appeared up to `now`, in order."""
        if self.new_per_minute <= 0:
            return
        interval = 60.0 / self.new_per_minute
        while self.origin + (self.new_made + 1) * interval <= now:
            rng, size = self.new_rng, self.new_rng.randint(1, 2000)
            plan = {"size": size, "outcome": "failed" if rng.random() < 0.05 else "done"}
            plan["failed"] = rng.randint(1, max(1, size // 5)) if rng.random() < 0.2 else 0
            plan |= {"duration": rng.uniform(*self.new_seconds), "deferred": 0.0}
            self.new_made += 1
            self.add(self.origin + self.new_made * interval, rng, **plan)

    def daily_exhausted(self, now: float) -> bool:
        window, used = self.usage.get(DAY, (-1, 0))
        return window == int(now // DAY) and used >= self.daily_limit

    def count_use(self, now: float) -> dict[str, str]:
        """Count one answered request; the `X-HubSpot-RateLimit-*` headers after it."""
        remaining = {}
        with self.usage_lock:
            for seconds, limit in ((TEN_SECONDS, self.ten_second_limit), (DAY, self.daily_limit)):
                index = int(now // seconds)
                window, used = self.usage.get(seconds, (index, 0))
                used = (used if window == index else 0) + 1
                self.usage[seconds] = (index, used)
                remaining[seconds] = max(0, limit - used)
        return {
            "X-HubSpot-RateLimit-Daily": str(self.daily_limit),
            "X-HubSpot-RateLimit-Daily-Remaining": str(remaining[DAY]),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(TEN_SECONDS * 1000)),
            "X-HubSpot-RateLimit-Max": str(self.ten_second_limit),
            "X-HubSpot-RateLimit-Remaining": str(remaining[TEN_SECONDS]),
        }


def seed_world(account: HubSpotAccount, count: int) -> None:
    """`count` imports over the past four days: most ended, some deferred or processing."""
    rng = account.rng
    now = account.origin
    specs = []
    for _ in range(count):
        r = rng.random()
        size = rng.randint(10, 50_000) if rng.random() < 0.05 else rng.randint(1, 3000)
        outcome = "done"
        failed = 0
        if r < 0.04:  # waiting its turn
            age, deferred, duration = rng.uniform(0, 600), rng.uniform(900, 7200), 600.0
        elif r < 0.12:  # processing now
            age = rng.uniform(60, 3600)
            deferred, duration = 0.0, age + rng.uniform(300, 3600)
        else:
            age, deferred, duration = rng.uniform(3600, 4 * DAY), 0.0, rng.uniform(5, 1800)
            pick = rng.random()
            outcome = (
                "failed" if pick < 0.07 else "canceled" if pick < 0.12
                else "reverted" if pick < 0.15 else "done"
            )  # fmt: skip
        if outcome in ("done", "reverted") and size > 1 and rng.random() < 0.25:
            failed = rng.randint(1, min(size - 1, 350))
        elif outcome == "failed":
            failed = rng.randint(0, min(size, 20))
        plan = {"size": size, "failed": failed, "outcome": outcome}
        specs.append((now - age, plan | {"duration": duration, "deferred": deferred}))
    for created, spec in sorted(specs, key=lambda s: s[0]):
        account.add(created, rng, **spec)


class HubSpotSandbox(ProviderSandbox):
    """`/crm/v3/imports` and its by-id and errors endpoints, one portal per account."""

    prefix = "hubspot"
    cursor_parameter = "after"

    def __init__(self, limiter: Any, wall_clock: Callable[[], float] = time.time) -> None:
        super().__init__(limiter)
        self.by_token: dict[str, HubSpotAccount] = {}
        self.wall_clock = wall_clock  # real time, as the limiter's (rate limits run on it)

    def error_response(
        self, status: int, message: str, retry_after: float | None = None
    ) -> SandboxResponse:
        """HubSpot's bodies for injected faults (no Retry-After: HubSpot's is unconfirmed)."""
        if status == 429:
            return throttled("TEN_SECONDLY_ROLLING", {"X-HubSpot-RateLimit-Remaining": "0"})
        return hs_error(status, "INTERNAL_ERROR", message)

    # -- accounts ---------------------------------------------------------------------
    def create_account(self, options: Mapping[str, Any]) -> SandboxAccount:
        account = HubSpotAccount({"access_token": new_token()}, options)
        seed_world(account, int(options.get("jobs_per_kind", 20)))
        with self.lock:
            self.by_token[account.credentials["access_token"]] = account
        return self.register(account)

    def state(self, account: SandboxAccount) -> dict[str, Any]:
        assert isinstance(account, HubSpotAccount)
        now = account.clock.now()
        account.materialize(now)
        jobs = []
        for job in reversed(account.imports):
            if not account.visible(job, now):
                continue
            counters = job.counters(now)
            jobs.append(
                {
                    "kind": KIND,
                    "id": str(job.id),
                    "status": job.state(now),
                    "listed": account.listed(job, now),
                    "created_at": hs_time(job.created),
                    "updated_at": hs_time(job.updated(now)),
                    "total_count": counters.get("TOTAL_ROWS"),
                    "completed_count": counters.get("UNIQUE_OBJECTS_WRITTEN"),
                    "counters": counters,
                    "error_count": job.error_count(now),
                }
            )
        return {
            "provider": "hubspot",
            "account": account.id,
            "portal_id": account.portal_id,
            "now": iso(now),
            "revoked": account.revoked,
            "jobs": jobs,
        }

    def timeline(self, account: SandboxAccount) -> list[dict[str, Any]]:
        assert isinstance(account, HubSpotAccount)
        now = account.clock.now()
        account.materialize(now)
        return [job.schedule() for job in account.imports if account.visible(job, now)]

    def control(
        self, account: SandboxAccount, action: str, payload: Mapping[str, Any]
    ) -> dict[str, Any]:
        assert isinstance(account, HubSpotAccount)
        now = account.clock.now()
        account.materialize(now)
        if action == "create_jobs":
            return {"kind": KIND, "ids": create_jobs(account, payload, now)}
        if action == "expire":
            ids = [str(i) for i in payload.get("ids") or []]
            known = [i for i in ids if i.isdigit() and int(i) in account.by_id]
            for job_id in known:
                account.by_id[int(job_id)].hidden = True
            return {"expired": known, "unknown": [i for i in ids if i not in known]}
        if action == "revoke":
            account.revoked = True
            return {"revoked": True}
        if action == "rotate_token":
            token = new_token()
            with self.lock:
                self.by_token.pop(account.credentials["access_token"], None)
                self.by_token[token] = account
            account.credentials["access_token"] = token
            account.revoked = False
            return {"credentials": account.credentials}
        if action == "set_rate_limit":
            if payload.get("requests_per_ten_seconds"):
                account.ten_second_limit = max(1, int(payload["requests_per_ten_seconds"]))
            if payload.get("daily_limit"):
                account.daily_limit = max(1, int(payload["daily_limit"]))
            return {
                "requests_per_ten_seconds": account.ten_second_limit,
                "daily_limit": account.daily_limit,
            }
        raise KeyError(action)

    # -- requests ---------------------------------------------------------------------
    def handle(self, request: SandboxRequest) -> tuple[SandboxResponse, SandboxAccount | None]:
        scheme, _, token = (request.header("Authorization") or "").strip().partition(" ")
        with self.lock:
            account = self.by_token.get(token.strip()) if scheme.lower() == "bearer" else None
        if account is None or account.revoked:
            return hs_error(401, "INVALID_AUTHENTICATION", AUTH_MESSAGE), account
        with account.lock:
            windows = ((account.ten_second_limit, TEN_SECONDS), (account.daily_limit, DAY))
            wait = self.rate_limit(account, "api", windows)
            if wait is not None:
                daily = account.daily_exhausted(self.wall_clock())
                headers = {"X-HubSpot-RateLimit-Remaining": "0"}
                if daily:
                    headers["X-HubSpot-RateLimit-Daily-Remaining"] = "0"
                if account.send_retry_after:
                    headers |= retry_after_header(wait)
                return throttled("DAILY" if daily else "TEN_SECONDLY_ROLLING", headers), account
            response = self.route(account, request)
            response.headers = {**account.count_use(self.wall_clock()), **response.headers}
            return response, account

    def route(self, account: HubSpotAccount, request: SandboxRequest) -> SandboxResponse:
        parts = [p for p in request.path.split("/") if p]
        if parts[:3] != ["crm", "v3", "imports"] or len(parts) > 5 or request.method != "GET":
            return hs_error(
                404, "OBJECT_NOT_FOUND", f"No route for {request.method} {request.path}"
            )
        if len(parts) == 5 and parts[4] != "errors":
            return hs_error(404, "OBJECT_NOT_FOUND", f"No route for {request.path}")
        query = request.query
        try:
            limit = page_size(query.get("limit"))
            after = decode_cursor(query["after"]) if "after" in query else None
            flags = {
                name: flag(query.get(name)) for name in ("includeErrorMessage", "includeRowData")
            }
        except ValueError as exc:
            return hs_error(400, "VALIDATION_ERROR", f"Invalid input: {exc}")
        now = account.clock.now()
        account.materialize(now)
        if len(parts) == 3:
            page = list(islice(account.newest_first(after, now), limit + 1))
            results = [job.view(now) for job in page[:limit]]
            more = page[limit - 1].id if len(page) > limit else None
            return SandboxResponse.json(200, paged(request, results, more), JSON)
        if not parts[3].isdigit():
            return hs_error(400, "VALIDATION_ERROR", f"importId must be an integer: {parts[3]}")
        job = account.by_id.get(int(parts[3]))
        if job is None or not account.visible(job, now):
            return hs_error(404, "OBJECT_NOT_FOUND", f"Import {parts[3]} not found")
        if len(parts) == 4:
            return SandboxResponse.json(200, job.view(now), JSON)
        start = after or 0
        total = job.error_count(now)
        results = [
            job.error_record(
                n, message=flags["includeErrorMessage"], row_data=flags["includeRowData"]
            )
            for n in range(start, min(total, start + limit))
        ]
        more = start + limit if start + limit < total else None
        return SandboxResponse.json(200, paged(request, results, more), JSON)


def create_jobs(account: HubSpotAccount, payload: Mapping[str, Any], now: float) -> list[str]:
    kind = payload.get("kind") or KIND
    if kind != KIND:
        raise ValueError(f"unknown kind {kind!r}; HubSpot imports are {KIND!r}")
    outcome = str(payload.get("outcome") or "done")
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}")
    size, failed = int(payload.get("size", 100)), int(payload.get("failed", 0))
    if size < 1 or not 0 <= failed <= size:
        raise ValueError("need 1 <= size and 0 <= failed <= size")
    duration = float(payload.get("duration", payload.get("processing_seconds", 60)))
    deferred = float(payload.get("deferred_seconds", 0))
    if duration <= 0 or deferred < 0:
        raise ValueError("duration must be > 0 and deferred_seconds >= 0")
    spec = {"size": size, "failed": failed, "duration": duration, "outcome": outcome}
    return [
        str(account.add(now, account.control_rng, deferred=deferred, **spec).id)
        for _ in range(int(payload.get("count", 1)))
    ]


def throttled(policy: str, headers: dict[str, str]) -> SandboxResponse:
    """A 429 as HubSpot's usage guidelines show it, with the category the spec requires."""
    return hs_error(
        429,
        "RATE_LIMITS",
        f"You have reached your {policy.lower()} limit.",
        headers,
        errorType="RATE_LIMIT",
        policyName=policy,
        requestId=str(uuid.uuid4()),
    )


def paged(request: SandboxRequest, results: list[Any], more: int | None) -> dict[str, Any]:
    """`{results, paging.next{after, link}}`; the link keeps the request's other parameters."""
    body: dict[str, Any] = {"results": results}
    if more is not None:
        after = encode_cursor(more)
        query = urlencode({**request.query, "after": after})
        link = f"{request.base_url}{request.path.rstrip('/')}?{query}"
        body["paging"] = {"next": {"after": after, "link": link}}
    return body


def page_size(value: str | None) -> int:
    if value is None:
        return DEFAULT_PAGE_SIZE
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    return int(value)


def flag(value: str | None) -> bool:
    if value is None or value.lower() in ("false", ""):
        return False
    if value.lower() == "true":
        return True
    raise ValueError(f"expected true or false, not {value!r}")


def row_values(line: int, column: int, value: str) -> list[str]:
    """The cells of the file's row `line`, the invalid value in its column."""
    row = [f"customer-{line}@example.com", "Sam", "Lee", "2024-02-03", "lead", "12"]
    row[column] = value
    return row


def new_token() -> str:
    """A private-app access token as HubSpot prints them: `pat-<region>-<uuid>`."""
    return f"pat-na1-{uuid.uuid4()}"
