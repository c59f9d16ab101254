"""Fullstory Server API v2 batch imports, as the real service behaves (spec in tests/specs/).

What it reproduces, and why each matters to the sync:

- `POST /v2/{events|users}/batch` creates a batch from `{requests: [...]}` and answers
  200 `{job: {id, status, created}}`; the job id is the only handle there will ever be
  (there is no list endpoint). `Idempotency-Key` returns the first job again.
- A batch stays `PROCESSING` for `processing_seconds` on the account's clock, and only
  `max_running` batches run at once (more wait their turn, as Fullstory's 100-batch rule
  says), then ends `COMPLETED` (nothing failed) or `FAILED` (some or all objects failed).
  Which objects fail is decided when the batch is created and never changes: objects that
  break Fullstory's documented rules (property names, value sizes, an event context next
  to a shared one), objects whose properties say `"jobcenter_fail": true`, and a
  deterministic `error_share` of the rest.
- `GET /v2/{events|users}/batch/{id}` answers `{imports, errors, job}`; `errors` is left
  out when it is zero, as the field's description says (`omit_zero_errors`, default on;
  the schema marks it required, so turn it off for strictly spec-shaped answers).
- `/errors` and `/imports` answer 202 with an empty body while the batch is processing,
  then pages of `page_size` results with `next_page_token` (absent on the last page)
  and `total_records` as a string, as the int64 encoding of the API has it.
- Errors in Fullstory's envelope `{message, code}`: 400 `required_field` /
  `invalid_argument`, 401 `unauthorized` (key missing, wrong, base64-encoded or revoked),
  403 `forbidden` (a Standard key reading `/errors` or `/imports`), 404
  `resource_not_found`, 429 `too_many_requests` with `Retry-After` in seconds (a
  per-second and a burst window on real time, and the 200-batch / 500,000-object
  in-progress ceiling), 500 `server_error` on demand (`fail_next`).

Batches appear only when a client creates them: by the POST above, or by the
`create_jobs` control {kind, count, size, failed, processing_seconds} the demo and the
freshness bench use, which then track their ids as a client records them.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
import math
import random
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from providers.sandbox.core import (
    ProviderSandbox,
    SandboxAccount,
    SandboxRequest,
    SandboxResponse,
    iso,
    retry_after_header,
    status_changes,
)

KIND_NAMES = {"events": "events-batch-import", "users": "users-batch-import"}
DEFAULT_PROCESSING_SECONDS = 30.0
DEFAULT_PAGE_SIZE = 50
DEFAULT_REQUESTS_PER_SECOND = 10
DEFAULT_BURST = (50, 10.0)  # at most 50 requests in any fixed 10 s window
MAX_REQUESTS_PER_BATCH = 50_000
MAX_RUNNING = 100  # batches processed at once; later ones wait to start
MAX_IN_PROGRESS = 200  # batches in progress before creates get 429
MAX_IN_PROGRESS_OBJECTS = 500_000
MAX_PROPERTY_BYTES = 8192
MAX_PROPERTIES = 500
FAIL_MARKER = "jobcenter_fail"
PROPERTY_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

# Failures of objects picked by `error_share`: plausible reasons Fullstory gives.
RANDOM_FAILURES: dict[str, tuple[tuple[str, str], ...]] = {
    "events": (
        ("user_not_found", "no user found for the event's user identifier"),
        ("invalid_argument", "timestamp is outside of the allowed import window"),
        ("session_not_found", "no session found for the given session id"),
    ),
    "users": (
        ("invalid_argument", "email is not a valid email address"),
        ("user_not_found", "no user found with the given id"),
        ("type_conflict", "property type conflicts with the type already stored"),
    ),
}

EVENT_NAMES = ("Order Completed", "Support Ticket", "Plan Upgraded", "Cart Abandoned")
PLANS = ("free", "paid", "enterprise")


def fs_time(ms: int | None) -> str | None:
    """A time as Fullstory's protobuf JSON writes it: RFC 3339 in UTC, `Z`, 0 or 3 digits."""
    if ms is None:
        return None
    dt = datetime.fromtimestamp(ms // 1000, tz=UTC)
    fraction = ms % 1000
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction:03d}" if fraction else "") + "Z"


def fs_error(status: int, code: str, message: str, **headers: str) -> SandboxResponse:
    return SandboxResponse.json(status, {"message": message, "code": code}, headers=headers)


NOT_FOUND_MESSAGE = "Requested resource does not exist"


@dataclass
class BatchJob:
    """One batch import; its status at any moment follows from the clock."""

    kind: str  # "events" | "users"
    id: str
    seq: int
    created_ms: int
    start_ms: int
    finish_ms: int
    requests: list[dict[str, Any]]
    shared: dict[str, Any] | None
    failures: dict[int, tuple[str, str]]  # request index -> (code, message)
    user_ids: list[str] = field(default_factory=list)  # Fullstory ids of imported users

    def done(self, now_ms: int) -> bool:
        return now_ms >= self.finish_ms

    def status(self, now_ms: int) -> str:
        if not self.done(now_ms):
            return "PROCESSING"
        return "FAILED" if self.failures else "COMPLETED"

    def counts(self, now_ms: int) -> tuple[int, int]:
        """(imports, errors) as the status endpoint reports them: zero until the end."""
        if not self.done(now_ms):
            return 0, 0
        return len(self.requests) - len(self.failures), len(self.failures)

    def schedule(self) -> dict[str, Any]:
        """Its `/_sandbox/timeline` entry (seconds): the counts show only at the end."""
        changes = status_changes(lambda ms: self.status(int(ms)), self.created_ms, [self.finish_ms])
        return {
            "kind": KIND_NAMES[self.kind],
            "id": self.id,
            "created": self.created_ms / 1000,
            "statuses": [[ms / 1000, status] for ms, status in changes],
            "progress": None,
        }

    def metadata(self, now_ms: int) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "id": self.id,
            "status": self.status(now_ms),
            "created": fs_time(self.created_ms),
        }
        if self.done(now_ms):
            meta["finished"] = fs_time(self.finish_ms)
        return meta

    def error_results(self) -> list[dict[str, Any]]:
        results = []
        for index in sorted(self.failures):
            code, message = self.failures[index]
            result: dict[str, Any] = {"message": message, "code": code}
            if self.kind == "events":
                result["event"] = self.requests[index]
                if self.shared is not None:
                    result["shared"] = self.shared
            else:
                result["user"] = self.requests[index]
            results.append(result)
        return results

    def import_results(self, include_schema: bool) -> list[dict[str, Any]]:
        results = []
        for index, obj in enumerate(self.requests):
            if index in self.failures:
                continue
            if self.kind == "events":
                result = imported_event(obj, self.shared, self.user_ids[index], self.created_ms)
            else:
                result = {"id": self.user_ids[index]}
                for name in ("uid", "display_name", "email", "properties"):
                    if name in obj:
                        result[name] = obj[name]
            if include_schema:
                result["schema"] = {"properties": property_types(obj.get("properties") or {})}
            results.append(result)
        return results


def imported_event(
    obj: dict[str, Any], shared: dict[str, Any] | None, user_id: str, created_ms: int
) -> dict[str, Any]:
    """An imported event as `/imports` shows it: the Fullstory user id filled in."""
    result: dict[str, Any] = {"name": obj["name"]}
    user = obj.get("user") or {}
    session = obj.get("session") or {}
    if user or session.get("use_most_recent"):
        result["user"] = {
            "id": user.get("id") or user_id,
            **({"uid": user["uid"]} if "uid" in user else {}),
        }
    if session.get("id"):
        result["session"] = {"id": session["id"]}
    context = obj.get("context") or (shared or {}).get("context")
    if context:
        result["context"] = context
    result["timestamp"] = obj.get("timestamp") or fs_time(created_ms)
    if "properties" in obj:
        result["properties"] = obj["properties"]
    return result


def property_types(properties: Mapping[str, Any]) -> dict[str, Any]:
    """Fullstory's type names for a property map (str, bool, int, real, nested objects)."""
    types: dict[str, Any] = {}
    for name, value in properties.items():
        if isinstance(value, bool):
            types[name] = "bool"
        elif isinstance(value, int):
            types[name] = "int"
        elif isinstance(value, float):
            types[name] = "real"
        elif isinstance(value, dict):
            types[name] = property_types(value)
        elif isinstance(value, list):
            types[name] = "strs" if all(isinstance(v, str) for v in value) else "list"
        else:
            types[name] = "str"
    return types


def rule_failure(kind: str, obj: Mapping[str, Any], shared: Any) -> tuple[str, str] | None:
    """Why Fullstory would refuse this one object, by its documented rules; None if fine."""
    properties = obj.get("properties")
    if properties is not None and not isinstance(properties, dict):
        return "invalid_argument", "properties must be an object"
    properties = properties or {}
    if properties.get(FAIL_MARKER) is True:
        return "invalid_argument", f"rejected on request: properties.{FAIL_MARKER} is true"
    if len(properties) > MAX_PROPERTIES:
        return "invalid_argument", f"at most {MAX_PROPERTIES} properties are allowed"
    for name, value in properties.items():
        if not PROPERTY_NAME.match(name) or len(name) > 512:
            return (
                "invalid_property_name",
                f"property name {name!r} must start with a letter and hold only "
                "letters, digits and underscores",
            )
        size = len(json.dumps(value).encode())
        if size > MAX_PROPERTY_BYTES:
            return (
                "property_too_large",
                f"property {name!r} is {size} bytes; the limit is {MAX_PROPERTY_BYTES}",
            )
    if kind == "events" and shared and shared.get("context") and obj.get("context"):
        return (
            "invalid_argument",
            "an event may not carry a context when the batch has a shared context",
        )
    return None


def create_error(kind: str, body: Any) -> tuple[str, str] | None:
    """Why the create request as a whole is refused with 400; None when it is accepted."""
    if not isinstance(body, dict):
        return "invalid_argument", "the request body must be a JSON object"
    requests = body.get("requests")
    if requests is None:
        return "required_field", "requests is required"
    if not isinstance(requests, list):
        return "invalid_argument", "requests must be an array"
    if not requests:
        return "required_field", "requests must hold at least one item"
    if len(requests) > MAX_REQUESTS_PER_BATCH:
        return "invalid_argument", f"a batch holds at most {MAX_REQUESTS_PER_BATCH} requests"
    shared = body.get("shared")
    if kind == "events" and shared is not None and not isinstance(shared, dict):
        return "invalid_argument", "shared must be an object"
    for index, obj in enumerate(requests):
        if not isinstance(obj, dict):
            return "invalid_argument", f"requests[{index}] must be an object"
        if kind == "events" and not (isinstance(obj.get("name"), str) and obj["name"]):
            return "required_field", f"requests[{index}].name is required"
        if kind == "users" and not (obj.get("uid") or obj.get("id")):
            return "required_field", f"requests[{index}].uid is required"
    return None


class FullstoryAccount(SandboxAccount):
    """One Fullstory org: its API key, its batches and the batch queue."""

    def __init__(self, credentials: dict[str, str], options: Mapping[str, Any]) -> None:
        super().__init__("fullstory", credentials, options)
        self.seed_value = options.get("seed", 1)
        self.rng = random.Random(f"fullstory:{self.seed_value}")
        self.processing_ms = int(
            float(options.get("processing_seconds", DEFAULT_PROCESSING_SECONDS)) * 1000
        )
        self.error_share = float(options.get("error_share", 0.0))
        if not 0.0 <= self.error_share <= 1.0:
            raise ValueError("error_share must be between 0 and 1")
        self.page_size = max(1, int(options.get("page_size", DEFAULT_PAGE_SIZE)))
        self.omit_zero_errors = bool(options.get("omit_zero_errors", True))
        self.permission = str(options.get("permission", "admin"))
        if self.permission not in ("admin", "architect", "standard"):
            raise ValueError("permission must be admin, architect or standard")
        burst = options.get("burst") or DEFAULT_BURST
        self.windows: tuple[tuple[int, float], ...] = (
            (int(options.get("requests_per_second", DEFAULT_REQUESTS_PER_SECOND)), 1.0),
            (int(burst[0]), float(burst[1])),
        )
        self.max_running = int(options.get("max_running", MAX_RUNNING))
        self.max_in_progress = int(options.get("max_in_progress", MAX_IN_PROGRESS))
        self.max_in_progress_objects = int(
            options.get("max_in_progress_objects", MAX_IN_PROGRESS_OBJECTS)
        )
        self.dead_keys: set[str] = set()
        self.fail_next = 0
        self.jobs: list[BatchJob] = []
        self.by_id: dict[tuple[str, str], BatchJob] = {}
        self.idempotency: dict[tuple[str, str], tuple[str, str]] = {}
        self._slots: list[int] = []  # finish times of the batches holding a run slot
        self._seq = 0

    def now_ms(self) -> int:
        return int(self.clock.now() * 1000)

    def new_id(self) -> str:
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
        return "".join(self.rng.choice(alphabet) for _ in range(20))

    def in_progress(self, now_ms: int) -> list[BatchJob]:
        return [job for job in self.jobs if not job.done(now_ms)]

    def add_job(
        self,
        kind: str,
        requests: list[dict[str, Any]],
        shared: dict[str, Any] | None,
        created_ms: int,
        *,
        fail_indexes: set[int] | None = None,
        processing_ms: int | None = None,
    ) -> BatchJob:
        """Create a batch; jobs must be added in creation order (the queue is FIFO)."""
        self._seq += 1
        job_id = self.new_id()
        # Each batch has its own random stream, so which objects fail does not depend on
        # how many other batches were created before it.
        rng = random.Random(f"fullstory:{self.seed_value}:{kind}:{job_id}")
        failures: dict[int, tuple[str, str]] = {}
        for index, obj in enumerate(requests):
            reason = rule_failure(kind, obj, shared)
            if reason is None and (
                (fail_indexes is not None and index in fail_indexes)
                or (fail_indexes is None and rng.random() < self.error_share)
            ):
                reason = rng.choice(RANDOM_FAILURES[kind])
            if reason is not None:
                failures[index] = reason
        # A fixed pool of run slots, first come first served.
        if len(self._slots) < self.max_running:
            start_ms = created_ms
        else:
            start_ms = max(created_ms, heapq.heappop(self._slots))
        finish_ms = start_ms + (self.processing_ms if processing_ms is None else processing_ms)
        heapq.heappush(self._slots, finish_ms)
        job = BatchJob(
            kind=kind,
            id=job_id,
            seq=self._seq,
            created_ms=created_ms,
            start_ms=start_ms,
            finish_ms=finish_ms,
            requests=requests,
            shared=shared,
            failures=failures,
            user_ids=[str(rng.randrange(10**9, 10**10)) for _ in requests],
        )
        self.jobs.append(job)
        self.by_id[(kind, job.id)] = job
        return job

    def seed(self, jobs_per_kind: int) -> None:
        """History for both kinds: finished batches of every outcome, then a few running.

        Outcomes cycle through succeeded, partly failed, wholly failed; the newest tenth
        (at least one when there are three or more) is still processing.
        """
        if jobs_per_kind <= 0:
            return
        rng = self.rng
        now = self.now_ms()
        planned: list[tuple[int, str, str]] = []
        cycle = ("COMPLETED", "PARTIAL", "COMPLETED", "FAILED")
        for kind in KIND_NAMES:
            running = max(1, jobs_per_kind // 10) if jobs_per_kind >= 3 else 0
            for i in range(jobs_per_kind):
                if i < jobs_per_kind - running:
                    created = now - rng.randint(self.processing_ms + 60_000, 86_400_000)
                else:
                    created = now - rng.randint(0, max(0, self.processing_ms // 2))
                planned.append((created, kind, cycle[i % len(cycle)]))
        planned.sort()
        for created, kind, outcome in planned:
            size = rng.randint(3, 120)
            requests = [sample_object(kind, rng, created) for _ in range(size)]
            if outcome == "COMPLETED":
                fails: set[int] = set()
            elif outcome == "FAILED":
                fails = set(range(size))
            else:
                fails = set(rng.sample(range(size), rng.randint(1, max(1, size // 3))))
            self.add_job(kind, requests, None, created, fail_indexes=fails)


def sample_object(kind: str, rng: random.Random, created_ms: int) -> dict[str, Any]:
    """A plausible event or user a client would send in a batch."""
    uid = f"user-{rng.randint(1, 99_999)}"
    if kind == "events":
        return {
            "user": {"uid": uid},
            "name": rng.choice(EVENT_NAMES),
            "timestamp": fs_time(created_ms - rng.randint(0, 86_400_000)),
            "properties": {"order_id": rng.randint(1000, 99_999), "total": rng.randint(1, 500)},
        }
    return {
        "uid": uid,
        "display_name": f"Customer {uid[5:]}",
        "email": f"{uid}@example.com",
        "properties": {"pricing_plan": rng.choice(PLANS), "total_spent": rng.randint(0, 900)},
    }


def page_token(job: BatchJob, what: str, offset: int) -> str:
    raw = json.dumps([job.id, what, offset], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode()


def read_page_token(job: BatchJob, what: str, token: str) -> int | None:
    """The offset a token stands for, or None when it is not one of this listing's."""
    try:
        job_id, token_what, offset = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError):
        return None
    if job_id != job.id or token_what != what or not isinstance(offset, int) or offset < 0:
        return None
    return offset


def body_digest(body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = body.decode("utf-8", "replace")
    return hashlib.sha256(canonical.encode()).hexdigest()


ROUTE = re.compile(
    r"^/(?P<version>v2|v2beta)/(?P<kind>events|users)/batch"
    r"(?:/(?P<job_id>[^/]+)(?:/(?P<what>errors|imports))?)?/?$"
)


class FullstorySandbox(ProviderSandbox):
    prefix = "fullstory"
    cursor_parameter = "page_token"

    def error_response(
        self, status: int, message: str, retry_after: float | None = None
    ) -> SandboxResponse:
        code = {429: "too_many_requests"}.get(status, "server_error")
        headers = retry_after_header(retry_after) if retry_after is not None else {}
        return fs_error(status, code, message, **headers)

    def __init__(self, limiter: Any) -> None:
        super().__init__(limiter)
        self.keys: dict[str, FullstoryAccount] = {}

    # -- accounts -----------------------------------------------------------------------
    def create_account(self, options: Mapping[str, Any]) -> SandboxAccount:
        region = str(options.get("region", "na1"))
        credentials = {"api_key": f"{region}.{secrets.token_urlsafe(32)}"}
        account = FullstoryAccount(credentials, options)
        account.seed(int(options.get("jobs_per_kind", 0)))
        with self.lock:
            self.keys[credentials["api_key"]] = account
        return self.register(account)

    def state(self, account: SandboxAccount) -> dict[str, Any]:
        assert isinstance(account, FullstoryAccount)
        now = account.now_ms()
        jobs = []
        for job in account.jobs:
            imports, errors = job.counts(now)
            jobs.append(
                {
                    "kind": KIND_NAMES[job.kind],
                    "id": job.id,
                    "status": job.status(now),
                    "imports": imports,
                    "errors": errors,
                    "created": fs_time(job.created_ms),
                    "started": fs_time(job.start_ms) if now >= job.start_ms else None,
                    "finished": fs_time(job.finish_ms) if job.done(now) else None,
                    "requests": len(job.requests),
                    "error_count": len(job.failures),
                }
            )
        return {
            "provider": "fullstory",
            "account": account.id,
            "now": iso(account.clock.now()),
            "revoked": account.revoked,
            "jobs": jobs,
        }

    def timeline(self, account: SandboxAccount) -> list[dict[str, Any]]:
        assert isinstance(account, FullstoryAccount)
        return [job.schedule() for job in account.jobs]

    def control(
        self, account: SandboxAccount, action: str, payload: Mapping[str, Any]
    ) -> dict[str, Any]:
        assert isinstance(account, FullstoryAccount)
        if action == "revoke":
            account.revoked = True
            return {"revoked": True}
        if action == "rotate":
            old = account.credentials["api_key"]
            account.dead_keys.add(old)
            region = old.split(".", 1)[0]
            new = f"{region}.{secrets.token_urlsafe(32)}"
            account.credentials["api_key"] = new
            account.revoked = False
            with self.lock:
                self.keys[new] = account
            return {"credentials": account.credentials}
        if action == "create_jobs":
            kind = str(payload.get("kind") or "events")
            kind = {v: k for k, v in KIND_NAMES.items()}.get(kind, kind)
            if kind not in KIND_NAMES:
                raise ValueError(f"kind must be one of {sorted(KIND_NAMES)}")
            count = int(payload.get("count", 1))
            size = int(payload.get("size", 10))
            failed = int(payload.get("failed", 0))
            if not 0 <= failed <= size or size < 1:
                raise ValueError("need 1 <= size and 0 <= failed <= size")
            seconds = payload.get("processing_seconds")
            if seconds is not None and float(seconds) < 0:
                raise ValueError("processing_seconds must be >= 0")
            now = account.now_ms()
            ids = []
            for _ in range(count):
                requests = [sample_object(kind, account.rng, now) for _ in range(size)]
                job = account.add_job(
                    kind,
                    requests,
                    None,
                    now,
                    fail_indexes=set(range(size - failed, size)),
                    processing_ms=None if seconds is None else int(float(seconds) * 1000),
                )
                ids.append(job.id)
            return {"kind": KIND_NAMES[kind], "ids": ids}
        if action == "fail_next":
            account.fail_next = max(0, int(payload.get("count", 1)))
            return {"fail_next": account.fail_next}
        raise KeyError(action)

    # -- requests -------------------------------------------------------------------------
    def handle(self, request: SandboxRequest) -> tuple[SandboxResponse, SandboxAccount | None]:
        account = self.authenticate(request)
        if not isinstance(account, FullstoryAccount):
            return fs_error(401, "unauthorized", "access is unauthorized"), account
        with account.lock:
            if account.revoked or account.credentials["api_key"] != self.key_of(request):
                return fs_error(401, "unauthorized", "access is unauthorized"), account
            wait = self.rate_limit(account, "api", account.windows)
            if wait is not None:
                return too_many(wait), account
            if account.fail_next > 0:
                account.fail_next -= 1
                return fs_error(500, "server_error", "Server error was encountered"), account
            return self.route(account, request), account

    @staticmethod
    def key_of(request: SandboxRequest) -> str:
        """The key from `Authorization: Basic <key>`; the key goes in as is, not base64."""
        scheme, _, key = (request.header("Authorization") or "").strip().partition(" ")
        return key.strip() if scheme == "Basic" else ""

    def authenticate(self, request: SandboxRequest) -> FullstoryAccount | None:
        """The account the key belongs to (revoked or rotated keys included), else None."""
        with self.lock:
            return self.keys.get(self.key_of(request))

    def route(self, account: FullstoryAccount, request: SandboxRequest) -> SandboxResponse:
        match = ROUTE.match(request.path)
        if match is None:
            return fs_error(404, "resource_not_found", NOT_FOUND_MESSAGE)
        kind, job_id, what = match["kind"], match["job_id"], match["what"]
        if job_id is None:
            if request.method != "POST":
                return fs_error(405, "method_not_allowed", "Method Not Allowed")
            return self.create(account, kind, request)
        if request.method != "GET":
            return fs_error(405, "method_not_allowed", "Method Not Allowed")
        if what is not None and account.permission == "standard":
            return fs_error(
                403,
                "forbidden",
                "insufficient permissions: reading batch results needs an Admin or "
                "Architect API key",
            )
        job = account.by_id.get((kind, job_id))
        if job is None:
            return fs_error(404, "resource_not_found", NOT_FOUND_MESSAGE)
        now = account.now_ms()
        if what is None:
            return SandboxResponse.json(200, self.status_body(account, job, now))
        if not job.done(now):
            # The spec's 202: "called while the job is still processing", with no body.
            return SandboxResponse.empty(202)
        return self.results_page(account, job, what, request)

    def status_body(self, account: FullstoryAccount, job: BatchJob, now: int) -> dict[str, Any]:
        imports, errors = job.counts(now)
        body: dict[str, Any] = {"imports": imports}
        if errors or not account.omit_zero_errors:
            body["errors"] = errors
        body["job"] = job.metadata(now)
        return body

    def results_page(
        self, account: FullstoryAccount, job: BatchJob, what: str, request: SandboxRequest
    ) -> SandboxResponse:
        query = request.query
        include_schema = query.get("include_schema", "false").lower()
        if what == "imports" and include_schema not in ("true", "false", "1", "0"):
            return fs_error(400, "invalid_argument", "include_schema must be a boolean")
        offset = 0
        token = query.get("page_token", "")
        if token:
            found = read_page_token(job, what, token)
            if found is None:
                return fs_error(400, "invalid_argument", "page_token is not valid")
            offset = found
        if what == "errors":
            results = job.error_results()
        else:
            results = job.import_results(include_schema in ("true", "1"))
        end = offset + account.page_size
        body: dict[str, Any] = {
            "results": results[offset:end],
            "total_records": str(len(results)),
        }
        if end < len(results):
            body["next_page_token"] = page_token(job, what, end)
        return SandboxResponse.json(200, body)

    def create(
        self, account: FullstoryAccount, kind: str, request: SandboxRequest
    ) -> SandboxResponse:
        try:
            body = request.json()
        except ValueError:
            return fs_error(400, "invalid_argument", "the request body is not valid JSON")
        problem = create_error(kind, body)
        if problem is not None:
            return fs_error(400, *problem)
        now = account.now_ms()
        key = request.header("Idempotency-Key")
        digest = body_digest(request.body)
        if key:
            earlier = account.idempotency.get((kind, key))
            if earlier is not None:
                earlier_digest, job_id = earlier
                if earlier_digest != digest:
                    return fs_error(
                        400,
                        "invalid_argument",
                        "this Idempotency-Key was already used with a different request",
                    )
                job = account.by_id[(kind, job_id)]
                return SandboxResponse.json(200, {"job": job.metadata(now)})
        in_progress = account.in_progress(now)
        objects = sum(len(job.requests) for job in in_progress) + len(body["requests"])
        if len(in_progress) >= account.max_in_progress or (
            objects > account.max_in_progress_objects
        ):
            earliest = min((job.finish_ms for job in in_progress), default=now + 1000)
            return too_many(max(1.0, (earliest - now) / 1000))
        job = account.add_job(kind, body["requests"], body.get("shared"), now)
        if key:
            account.idempotency[(kind, key)] = (digest, job.id)
        return SandboxResponse.json(200, {"job": job.metadata(now)})


def too_many(wait_seconds: float) -> SandboxResponse:
    return fs_error(
        429,
        "too_many_requests",
        "Too many requests. Client has exceeded the rate limit for this endpoint.",
        **retry_after_header(math.ceil(wait_seconds)),
    )
