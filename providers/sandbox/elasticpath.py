"""Elastic Path PXM jobs, as the real service behaves (see its spec in tests/specs/).

What it reproduces, and why each matters to the sync:

- `POST /oauth/access_token` (form body) issues client-credentials tokens with the fields
  at the top level of the answer; tokens expire after `token_lifetime` seconds on the
  account's clock, so a test can advance the clock past an expiry mid-sync.
- `GET /pcm/jobs` lists every job type in one listing, paged by `page[offset]` /
  `page[limit]` (default 25, maximum 100), with the 10,000 soft limit on offsets (400
  beyond it). `meta.results.total` can be told to lie, as the spec's own example does.
- Jobs run one at a time per store: the oldest pending job starts when the previous one
  ends, so a burst of jobs leaves long `pending` stretches. A job can be cancelled only
  while it is pending.
- `GET /pcm/jobs/{id}` and `GET /pcm/jobs/{id}/errors`; failed jobs carry error messages.
- Errors in Elastic Path's envelope: `{"errors": [{"status", "title", "detail",
  "request_id"}]}`. Answers the PIM spec documents (400, 404, 422) carry `status` as a
  string, as the spec does; 401, 403 and 429 (absent from the PIM spec) carry it as a
  number, as the error guide's examples do. 429 comes without Retry-After. The token
  endpoint is not rate-limited here (the jobs endpoints are: `requests_per_second`).

Account options: `seed`, `jobs_per_kind` (jobs per type; a burst of the newest ones is
still queued), `token_lifetime` (seconds, default 3600), `requests_per_second` (default
25, a development store), `misreport_total`, `new_jobs_per_minute` (jobs that appear
on the clock, types in turn, a fifth failing) with `new_job_seconds` ([shortest,
longest] run time, default 30 to 300), plus the shared `rate_limits`, `frozen`,
`start`. Controls: `create_jobs` {type, count, outcome (success|failed|cancelled),
duration (seconds), errors [messages]} -> {"ids"}; `revoke` (the secret is refused and
every token dies); `rotate_secret` -> {"credentials"}; `set_token_lifetime` {seconds};
`expire_tokens`; `set_rate_limit` {requests_per_second}; `delete_jobs` {ids} ->
{"deleted", "unknown"} (gone from the listing and by id, so the offsets of the jobs behind
them shift, as the store's do; the queue keeps its past: no other job's times move).
"""

from __future__ import annotations

import json
import random
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, quote

from providers.sandbox.core import (
    ProviderSandbox,
    SandboxAccount,
    SandboxRequest,
    SandboxResponse,
    iso,
    status_changes,
)

JOB_TYPES = (
    "child-products",
    "product-import",
    "product-export",
    "hierarchy-duplicate",
    "price-import",
)
OUTCOMES = ("success", "failed", "cancelled")
DEFAULT_PAGE_LIMIT = 25
MAX_PAGE_LIMIT = 100
MAX_OFFSET = 10_000
DEFAULT_TOKEN_LIFETIME = 3600
DEFAULT_REQUESTS_PER_SECOND = 25  # a development store (rate-limits guide, 2024)
DEFAULT_NEW_JOB_SECONDS = (30.0, 300.0)
NEW_JOB_FAILED_SHARE = 0.2
FILE_HOST = "https://pxm-exports.sandbox.invalid"
MASK = "[redacted]"  # what the request log shows instead of a secret

ERROR_MESSAGES: dict[str, tuple[str, ...]] = {
    "product-import": (
        "data.attributes.sku: Must be unique amongst products.",
        "data.attributes.name: Is required.",
        "row {row}: data.attributes.commodity_type: Must be one of: physical, digital.",
    ),
    "price-import": (
        "row {row}: currencies.USD.amount: Must be an integer.",
        "row {row}: sku: No product found with this sku.",
    ),
    "product-export": ("could not write the export file; please retry the export.",),
    "hierarchy-duplicate": ("hierarchy not found: it was deleted before the duplicate started.",),
    "child-products": ("product has no variations attached; nothing to build.",),
}


def ep_time(ms: int | None) -> str | None:
    """A time as Elastic Path writes it: RFC 3339, milliseconds, trailing zeros cut, `Z`.

    Go's RFC3339Nano layout does this, hence `...42.07Z` and `...42Z` in the examples.
    """
    if ms is None:
        return None
    dt = datetime.fromtimestamp(ms // 1000, tz=UTC)
    fraction = f"{ms % 1000:03d}".rstrip("0")
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


@dataclass
class PimJob:
    """One PXM job; its status at any moment follows from the queue and the clock."""

    id: str
    type: str
    seq: int
    created_ms: int
    duration_ms: int
    outcome: str  # "success" or "failed": how it ends once it runs
    meta: dict[str, Any]
    errors: list[dict[str, str]]
    files: list[str] = field(default_factory=list)
    cancel_ms: int | None = None
    pickup_ms: int = 400  # how long an idle queue takes to notice a new job
    start_ms: int | None = None  # set by the queue; None once cancelled before starting

    def view(self, now_ms: int) -> dict[str, Any]:
        """The job object `/pcm/jobs` answers at `now_ms`."""
        started_at = completed_at = None
        if self.start_ms is None:
            status = "cancelled"
            updated = self.cancel_ms if self.cancel_ms is not None else self.created_ms
        elif now_ms < self.start_ms:
            status, updated = "pending", self.created_ms
        elif now_ms < self.start_ms + self.duration_ms:
            # The spec's "started" example has started_at null while the job runs.
            status, updated = "started", self.start_ms
        else:
            status = self.outcome
            started_at, completed_at = self.start_ms, self.start_ms + self.duration_ms
            updated = completed_at
        meta = dict(self.meta)
        if self.type == "product-export":
            meta["file_locations"] = list(self.files) if status == "success" else None
        return {
            "type": "pim-job",
            "id": self.id,
            "attributes": {
                "started_at": ep_time(started_at),
                "completed_at": ep_time(completed_at),
                "created_at": ep_time(self.created_ms),
                "updated_at": ep_time(updated),
                "type": self.type,
                "status": status,
            },
            "meta": meta,
        }

    def status_at(self, ms: float) -> str:
        return str(self.view(int(ms))["attributes"]["status"])

    def schedule(self) -> dict[str, Any]:
        """Its `/_sandbox/timeline` entry (seconds): status changes; no counts to grow."""
        moments = [self.cancel_ms]
        if self.start_ms is not None:
            moments += [self.start_ms, self.start_ms + self.duration_ms]
        changes = status_changes(self.status_at, self.created_ms, moments)
        return {
            "kind": self.type,
            "id": self.id,
            "created": self.created_ms / 1000,
            "statuses": [[ms / 1000, status] for ms, status in changes],
            "progress": None,
        }

    def visible_errors(self, now_ms: int) -> list[dict[str, str]]:
        """Errors show once the job has failed, never before."""
        if self.start_ms is None or self.outcome != "failed":
            return []
        return self.errors if now_ms >= self.start_ms + self.duration_ms else []


@dataclass
class IssuedToken:
    account_id: str
    expires_ms: int
    epoch: int
    identifier: str


class ElasticPathAccount(SandboxAccount):
    """A store: its key, its token settings and its one job queue."""

    def __init__(self, credentials: dict[str, str], options: Mapping[str, Any]) -> None:
        super().__init__("elasticpath", credentials, options)
        lifetime = options.get("token_lifetime")
        self.token_lifetime = DEFAULT_TOKEN_LIFETIME if lifetime is None else max(0, int(lifetime))
        self.requests_per_second = int(
            options.get("requests_per_second") or DEFAULT_REQUESTS_PER_SECOND
        )
        self.misreport_total = bool(options.get("misreport_total", False))
        self.token_epoch = 0  # tokens of an older epoch are dead (revoked or rotated)
        self.tokens_issued = 0
        self.jobs: list[PimJob] = []
        self.deleted: list[PimJob] = []  # still in the queue's past, never answered
        self.by_id: dict[str, PimJob] = {}
        self.rng = random.Random(f"elasticpath:{options.get('seed', 1)}")
        self._seq = 0
        # Jobs that appear on the clock: one every 60 / new_jobs_per_minute seconds, each
        # running a duration drawn from new_job_seconds ([shortest, longest]).
        self.new_per_minute = float(options.get("new_jobs_per_minute") or 0)
        low, high = options.get("new_job_seconds") or DEFAULT_NEW_JOB_SECONDS
        if not 0 < float(low) <= float(high):
            raise ValueError("new_job_seconds is [shortest, longest] with 0 < shortest")
        self.new_job_ms = (int(float(low) * 1000), int(float(high) * 1000))
        self.new_rng = random.Random(f"elasticpath:{options.get('seed', 1)}:new")
        self.origin_ms = self.now_ms()
        self.new_made = 0

    def now_ms(self) -> int:
        return int(self.clock.now() * 1000)

    def materialize(self, now_ms: int) -> None:
        """Create the jobs `new_jobs_per_minute` says appeared up to `now_ms`, in order,
        types in turn, a fifth of them failing: the same jobs for the same seed."""
        if self.new_per_minute <= 0:
            return
        interval = 60_000 / self.new_per_minute
        made = self.new_made
        while self.origin_ms + (self.new_made + 1) * interval <= now_ms:
            rng = self.new_rng
            outcome = "failed" if rng.random() < NEW_JOB_FAILED_SHARE else "success"
            self.add_job(
                JOB_TYPES[self.new_made % len(JOB_TYPES)],
                int(self.origin_ms + (self.new_made + 1) * interval),
                rng.randint(*self.new_job_ms),
                outcome,
                rng=rng,
            )
            self.new_made += 1
        if self.new_made != made:
            self.schedule()

    # -- the queue ------------------------------------------------------------------------
    def schedule(self) -> None:
        """Lay out the one-at-a-time queue: oldest pending first, cancelled ones skipped."""
        free_at = 0
        for job in sorted([*self.jobs, *self.deleted], key=lambda j: (j.created_ms, j.seq)):
            would_start = max(job.created_ms + job.pickup_ms, free_at)
            if job.cancel_ms is not None and job.cancel_ms <= would_start:
                job.start_ms = None
                continue
            job.start_ms = would_start
            free_at = would_start + job.duration_ms
        # Newest first, as a listing without a documented order most usefully reads.
        self.jobs.sort(key=lambda j: (j.created_ms, j.seq), reverse=True)

    def add_job(
        self,
        job_type: str,
        created_ms: int,
        duration_ms: int,
        outcome: str,
        *,
        cancelled: bool = False,
        errors: list[str] | None = None,
        rng: random.Random | None = None,
    ) -> PimJob:
        rng = rng or self.rng
        self._seq += 1
        meta: dict[str, Any] = {"x_request_id": str(uuid.UUID(int=rng.getrandbits(128), version=4))}
        files: list[str] = []
        job_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if job_type == "hierarchy-duplicate":
            meta["copied_from"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            meta["hierarchy_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if job_type == "product-export":
            meta["filter"] = rng.choice(
                [f"eq(sku,product-{rng.randint(1, 999)})", "eq(status,live)", "like(name,*shirt*)"]
            )
            files = [
                f"{FILE_HOST}/pcm/exports/{job_id}/products-{part}.csv"
                for part in range(1, rng.randint(0, 2) + 1)
            ]
        if outcome == "failed":
            messages = errors or [
                rng.choice(ERROR_MESSAGES.get(job_type, ("the job failed.",))).format(
                    row=rng.randint(2, 5000)
                )
                for _ in range(rng.randint(1, 3))
            ]
        else:
            messages = []
        job = PimJob(
            id=job_id,
            type=job_type,
            seq=self._seq,
            created_ms=created_ms,
            duration_ms=max(1, duration_ms),
            outcome="failed" if outcome == "failed" else "success",
            meta=meta,
            errors=[
                {"id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "message": m}
                for m in messages
            ],
            files=files,
            cancel_ms=created_ms if cancelled or outcome == "cancelled" else None,
            pickup_ms=rng.randint(50, 900),
        )
        self.jobs.append(job)
        self.by_id[job.id] = job
        return job

    def delete_jobs(self, ids: list[str]) -> tuple[list[str], list[str]]:
        """Delete jobs: the listing and `/pcm/jobs/{id}` stop answering them."""
        deleted = [self.by_id.pop(i) for i in dict.fromkeys(ids) if i in self.by_id]
        self.deleted.extend(deleted)
        gone = {job.id for job in deleted}
        self.jobs = [job for job in self.jobs if job.id not in gone]
        return [job.id for job in deleted], [i for i in ids if i not in gone]

    def seed(self, jobs_per_kind: int) -> None:
        """Finished history (success, failed, cancelled) then a recent burst still queued.

        With two or more jobs per type, each type has one job in the burst: the first of
        the burst is running, the rest wait behind it for many minutes.
        """
        if jobs_per_kind <= 0:
            return
        rng = self.rng
        now = self.now_ms()
        history: list[tuple[str, str]] = []
        burst: list[str] = []
        cycle = ("failed", "success", "cancelled", "success")
        for job_type in JOB_TYPES:
            in_burst = 0 if jobs_per_kind < 2 else max(1, jobs_per_kind // 10)
            burst.extend([job_type] * in_burst)
            offset = rng.randrange(len(cycle))
            history.extend(
                (job_type, cycle[(offset + i) % len(cycle)])
                for i in range(jobs_per_kind - in_burst)
            )
        rng.shuffle(history)
        rng.shuffle(burst)
        gaps = [rng.randint(120_000, 1_800_000) for _ in history]
        t = now - 600_000 - sum(gaps)
        for (job_type, outcome), gap in zip(history, gaps, strict=True):
            self.add_job(job_type, t, rng.randint(2_000, 90_000), outcome)
            t += gap
        for i, job_type in enumerate(burst):
            duration = rng.randint(600_000, 1_200_000) if i == 0 else rng.randint(120_000, 900_000)
            outcome = "failed" if rng.random() < 0.25 else "success"
            self.add_job(job_type, now - 90_000 + i * 1_000, duration, outcome)
        self.schedule()


class ElasticPathSandbox(ProviderSandbox):
    prefix = "elasticpath"
    cursor_parameter = None  # offsets do not expire

    def error_response(
        self, status: int, message: str, retry_after: float | None = None
    ) -> SandboxResponse:
        # Elastic Path documents no Retry-After, so none is sent even on a 429.
        return error(status, HTTPStatus(status).phrase, message, str_status=status >= 500)

    def __init__(self, limiter: Any) -> None:
        super().__init__(limiter)
        self.tokens: dict[str, IssuedToken] = {}
        self.clients: dict[str, ElasticPathAccount] = {}

    # -- accounts -----------------------------------------------------------------------
    def create_account(self, options: Mapping[str, Any]) -> SandboxAccount:
        credentials = {
            "client_id": secrets.token_hex(20),
            "client_secret": secrets.token_hex(20),
        }
        account = ElasticPathAccount(credentials, options)
        account.seed(int(options.get("jobs_per_kind", 20)))
        with self.lock:
            self.clients[credentials["client_id"]] = account
        return self.register(account)

    def state(self, account: SandboxAccount) -> dict[str, Any]:
        assert isinstance(account, ElasticPathAccount)
        now = account.now_ms()
        account.materialize(now)
        jobs = []
        for job in account.jobs:
            view = job.view(now)
            errors = job.visible_errors(now)
            jobs.append(
                {
                    "kind": job.type,
                    "id": job.id,
                    "status": view["attributes"]["status"],
                    **{
                        name: view["attributes"][name]
                        for name in ("created_at", "started_at", "completed_at", "updated_at")
                    },
                    "meta": view["meta"],
                    "error_count": len(errors),
                    "errors": [e["message"] for e in errors],
                }
            )
        return {
            "provider": "elasticpath",
            "account": account.id,
            "now": iso(account.clock.now()),
            "token_lifetime": account.token_lifetime,
            "revoked": account.revoked,
            "tokens_issued": account.tokens_issued,
            "jobs": jobs,
        }

    def timeline(self, account: SandboxAccount) -> list[dict[str, Any]]:
        assert isinstance(account, ElasticPathAccount)
        account.materialize(account.now_ms())
        return [job.schedule() for job in account.jobs]

    def control(
        self, account: SandboxAccount, action: str, payload: Mapping[str, Any]
    ) -> dict[str, Any]:
        assert isinstance(account, ElasticPathAccount)
        account.materialize(account.now_ms())
        if action == "create_jobs":
            job_type = str(payload.get("type") or "product-import")
            count = int(payload.get("count", 1))
            outcome = str(payload.get("outcome") or "success")
            if outcome not in OUTCOMES:
                raise ValueError(f"outcome must be one of {OUTCOMES}")
            duration = payload.get("duration")
            errors = payload.get("errors")
            now = account.now_ms()
            ids = []
            for _ in range(count):
                ms = (
                    int(float(duration) * 1000)
                    if duration is not None
                    else account.rng.randint(30_000, 300_000)
                )
                ids.append(
                    account.add_job(
                        job_type, now, ms, outcome, errors=list(errors) if errors else None
                    ).id
                )
            account.schedule()
            return {"ids": ids}
        if action == "delete_jobs":
            deleted, unknown = account.delete_jobs([str(i) for i in payload.get("ids") or []])
            return {"deleted": deleted, "unknown": unknown}
        if action == "revoke":
            account.revoked = True
            account.token_epoch += 1
            return {"revoked": True}
        if action == "rotate_secret":
            account.credentials["client_secret"] = secrets.token_hex(20)
            account.revoked = False
            account.token_epoch += 1
            return {"credentials": account.credentials}
        if action == "set_token_lifetime":
            account.token_lifetime = max(0, int(payload["seconds"]))
            return {"token_lifetime": account.token_lifetime}
        if action == "expire_tokens":
            account.token_epoch += 1
            return {"expired": True}
        if action == "set_rate_limit":
            account.requests_per_second = max(1, int(payload["requests_per_second"]))
            return {"requests_per_second": account.requests_per_second}
        raise KeyError(action)

    # -- requests -------------------------------------------------------------------------
    def handle(self, request: SandboxRequest) -> tuple[SandboxResponse, SandboxAccount | None]:
        if request.path.rstrip("/") == "/oauth/access_token":
            return self.access_token(request)
        if request.path.startswith("/pcm/"):
            return self.pcm(request)
        return error(404, "Not Found", f"no route for {request.path}", str_status=True), None

    def access_token(
        self, request: SandboxRequest
    ) -> tuple[SandboxResponse, SandboxAccount | None]:
        if request.method != "POST":
            return auth_error(400, "Bad Request", "use POST"), None
        content_type = (request.header("Content-Type") or "").split(";")[0].strip()
        if content_type != "application/x-www-form-urlencoded":
            return auth_error(400, "Bad Request", "expected a form body"), None
        form = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        grant_type = form.get("grant_type", "")
        client_id = form.get("client_id", "")
        if grant_type not in ("client_credentials", "implicit") or not client_id:
            return auth_error(400, "Bad Request", "grant_type and client_id are required"), None
        with self.lock:
            account = self.clients.get(client_id)
        if account is None:
            return auth_error(401, "Unauthorized", "invalid client credentials"), None
        with account.lock:
            if grant_type == "client_credentials" and (
                account.revoked
                or not secrets.compare_digest(
                    form.get("client_secret", ""), account.credentials["client_secret"]
                )
            ):
                return auth_error(401, "Unauthorized", "invalid client credentials"), account
            now = account.now_ms()
            token = secrets.token_hex(20)
            expires_ms = now + account.token_lifetime * 1000
            account.tokens_issued += 1
            with self.lock:
                self.tokens[token] = IssuedToken(
                    account.id, expires_ms, account.token_epoch, grant_type
                )
            return SandboxResponse.json(
                200,
                {
                    "access_token": token,
                    "token_type": "Bearer",
                    "expires_in": account.token_lifetime,
                    "expires": expires_ms // 1000,
                    "identifier": grant_type,
                },
            ), account

    def pcm(self, request: SandboxRequest) -> tuple[SandboxResponse, SandboxAccount | None]:
        authorization = request.header("Authorization") or ""
        scheme, _, token = authorization.partition(" ")
        with self.lock:
            issued = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
            account = self.accounts.get(issued.account_id) if issued else None
        if issued is None or not isinstance(account, ElasticPathAccount):
            return error(401, "Unauthorized", "a valid Bearer token is required"), None
        with account.lock:
            if issued.epoch != account.token_epoch:
                return error(401, "Unauthorized", "the access token is no longer valid"), account
            if account.now_ms() >= issued.expires_ms:
                return error(401, "Unauthorized", "the access token has expired"), account
            if issued.identifier != "client_credentials":
                return error(403, "Forbidden", "implicit tokens cannot access PXM jobs"), account
            if self.rate_limit(account, "store", ((account.requests_per_second, 1.0),)):
                # Elastic Path documents no Retry-After: the client has to back off itself.
                return error(429, "Too Many Requests", "rate limit exceeded"), account
            return self.route_pcm(account, request), account

    def route_pcm(self, account: ElasticPathAccount, request: SandboxRequest) -> SandboxResponse:
        parts = [p for p in request.path.split("/") if p]  # ["pcm", "jobs", id?, sub?]
        if parts[:2] != ["pcm", "jobs"] or len(parts) > 4:
            return error(404, "Not Found", f"no route for {request.path}", str_status=True)
        now = account.now_ms()
        account.materialize(now)
        if len(parts) == 2 and request.method == "GET":
            return self.list_jobs(account, request, now)
        job = account.by_id.get(parts[2]) if len(parts) > 2 else None
        if job is None:
            return error(404, "Not Found", "job not found", str_status=True)
        if len(parts) == 3 and request.method == "GET":
            return SandboxResponse.json(200, {"data": job.view(now)})
        if len(parts) == 4 and parts[3] == "errors" and request.method == "GET":
            return SandboxResponse.json(
                200,
                {
                    "data": [
                        {
                            "type": "pim-job-error",
                            "id": e["id"],
                            "attributes": {"message": e["message"]},
                        }
                        for e in job.visible_errors(now)
                    ]
                },
            )
        if len(parts) == 4 and parts[3] == "cancel" and request.method == "POST":
            if job.view(now)["attributes"]["status"] != "pending":
                return error(
                    422, "Failed Validation", "only pending jobs can be cancelled", str_status=True
                )
            job.cancel_ms = now
            account.schedule()
            return SandboxResponse.json(200, {"data": job.view(now)})
        return error(404, "Not Found", f"no route for {request.method} {request.path}", True)

    def list_jobs(
        self, account: ElasticPathAccount, request: SandboxRequest, now: int
    ) -> SandboxResponse:
        query = request.query
        try:
            limit = int(query.get("page[limit]", DEFAULT_PAGE_LIMIT))
            offset = int(query.get("page[offset]", 0))
        except ValueError:
            return error(400, "Bad Request", "page[limit] and page[offset] must be integers", True)
        if not 1 <= limit <= MAX_PAGE_LIMIT:
            return error(
                400, "Bad Request", f"page[limit] must be between 1 and {MAX_PAGE_LIMIT}", True
            )
        if not 0 <= offset <= MAX_OFFSET:
            return error(
                400,
                "Bad Request",
                f"page[offset] must be between 0 and {MAX_OFFSET}; filter or sort instead",
                True,
            )
        total = len(account.jobs)
        page = account.jobs[offset : offset + limit]
        return SandboxResponse.json(
            200,
            {
                "data": [job.view(now) for job in page],
                "meta": {
                    "page": {
                        "limit": limit,
                        "offset": offset,
                        "current": offset // limit + 1,
                        "total": max(1, -(-total // limit)),
                    },
                    # The spec's own example says 1 beside three jobs; so can this one.
                    "results": {"total": 1 if account.misreport_total else total},
                },
            },
        )

    def redact_log_entry(self, entry: dict[str, Any]) -> None:
        """Keep the client secret and issued tokens out of the readable request log."""
        body = entry.get("body")
        if body and "client_secret=" in body:
            pairs = parse_qsl(body, keep_blank_values=True)
            entry["body"] = "&".join(
                f"{quote(k)}={quote('[redacted]' if k == 'client_secret' else v)}" for k, v in pairs
            )
        answer = entry.get("response_body")
        if answer and '"access_token"' in answer:
            try:
                payload = json.loads(answer)
            except ValueError:
                return
            if isinstance(payload, dict) and "access_token" in payload:
                payload["access_token"] = MASK
                entry["response_body"] = json.dumps(payload, separators=(",", ":"))


def error(status: int, title: str, detail: str, str_status: bool = False) -> SandboxResponse:
    """Elastic Path's error envelope; `status` a string where the PIM spec documents it."""
    return SandboxResponse.json(
        status,
        {
            "errors": [
                {
                    "status": str(status) if str_status else status,
                    "title": title,
                    "detail": detail,
                    "request_id": str(uuid.uuid4()),
                }
            ]
        },
    )


def auth_error(status: int, title: str, detail: str) -> SandboxResponse:
    """The token endpoint's error body (its spec: `status` a string)."""
    return SandboxResponse.json(
        status, {"errors": [{"status": str(status), "title": title, "detail": detail}]}
    )
