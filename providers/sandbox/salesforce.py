"""Salesforce Bulk API 2.0 ingest and query jobs, as the real org behaves.

Written from the provider research notes (issue 19's facts, Salesforce section) and the
pages they cite ([SF]: the Bulk API 2.0 Developer Guide), not from any definition. What
it reproduces, and why each matters:

- `POST /services/oauth2/token`: the client credentials flow (a form with grant_type,
  client_id, client_secret) answers access_token, signature, scope, instance_url (this
  sandbox's base URL), id, token_type and issued_at (epoch ms as a string), and no
  expiry: the token lives until the session times out (`session_seconds` of inactivity
  on the account clock) or is revoked, so a client renews once on 401. Refusals are 400
  with `{"error", "error_description"}` (`invalid_client` for a wrong secret).
- `GET /services/data/vNN.N/jobs/ingest` (API >= 41.0) and `/jobs/query` (>= 47.0):
  `{done, records, nextRecordsUrl}`, at most 1,000 records a page, `nextRecordsUrl` a
  path on the instance carrying an opaque `queryLocator` (a snapshot: jobs created after
  the first page wait for the next listing), filters `jobType`, `isPkChunkingEnabled`
  and `concurrencyMode`, no state or date filter. List records carry no counts.
- `GET .../jobs/{ingest|query}/{jobId}`: the job with its counts and processing times;
  `GET .../jobs/ingest/{jobId}/failedResults/`: CSV, `sf__Id` (API >= 53), `sf__Error`,
  then the record's columns, one row per record failed so far.
- States on the account clock: ingest Open -> UploadComplete -> InProgress -> JobComplete
  | Failed, query UploadComplete -> InProgress -> ...; Aborted at any point before the
  end. numberRecordsProcessed (and numberRecordsFailed) grow linearly while InProgress.
  Partial failure is JobComplete with numberRecordsFailed > 0. Jobs in a terminal state
  and older than `retention_days` (7) are deleted; stuck Open jobs stay (uncertain).
- Errors as Salesforce writes them, `[{"message", "errorCode"}]`: 401
  INVALID_SESSION_ID, 404 NOT_FOUND, 400 INVALID_QUERY_LOCATOR, and the daily API
  request allocation (`api_requests_per_day`, fixed UTC days on real time) as 403
  REQUEST_LIMIT_EXCEEDED without Retry-After; `Sforce-Limit-Info: api-usage=n/m` on
  every authenticated answer. The token endpoint is not counted.

Account options beside the shared ones: `seed`, `jobs_per_kind`, `new_jobs_per_minute`
with `new_job_seconds` ([shortest, longest] InProgress time, default 30 to 600),
`session_seconds` (7200), `api_requests_per_day` (100,000), `retention_days` (7),
`page_size` (1..1000). Controls: `create_jobs` {kind ingest|query, count, size, failed,
duration, outcome JobComplete|Failed|Aborted, object, operation, api_version} ->
{"kind", "ids"}; `expire` {ids} -> {"expired", "unknown"}; `revoke_tokens` (every token
dies, the secret still works); `revoke` (the app refused, tokens die); `rotate_secret`
-> {"credentials"}; `set_session_seconds` {seconds}; `set_api_limit` {requests_per_day}.
"""

from __future__ import annotations

import bisect
import csv
import io
import math
import random
import re
import secrets
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from providers.sandbox.core import (
    ProviderSandbox,
    SandboxAccount,
    SandboxRequest,
    SandboxResponse,
    iso,
    status_changes,
)

API_VERSION = "62.0"  # the version seeded jobs and examples use (Winter '25)
MIN_VERSION = {"ingest": 41.0, "query": 47.0}  # [SF get_all_jobs.htm, query_get_all_jobs.htm]
LATEST_VERSION = 67.0  # Summer '26
SF_ID_VERSION = 53.0  # failedResults carries sf__Id from this version on
KINDS = ("ingest", "query")
JOB_TYPES = {"ingest": "V2Ingest", "query": "V2Query"}
TERMINAL = ("JobComplete", "Failed", "Aborted")
MAX_PAGE_SIZE = 1000
DAY = 86400.0
DEFAULT_SESSION_SECONDS = 7200  # the default org session timeout, two hours
DEFAULT_API_REQUESTS_PER_DAY = 100_000
DEFAULT_RETENTION_DAYS = 7
DEFAULT_NEW_JOB_SECONDS = (30.0, 600.0)
JSON_TYPE = "application/json;charset=UTF-8"
# What every job here was created with (the only values Bulk API 2.0 allows, or defaults).
CSV_SETTINGS = {
    "concurrencyMode": "Parallel",
    "contentType": "CSV",
    "lineEnding": "LF",
    "columnDelimiter": "COMMA",
}
NEVER = math.inf
ALNUM = string.digits + string.ascii_uppercase + string.ascii_lowercase

# Object -> the CSV columns its ingest jobs upload (update and delete add Id first).
OBJECTS: dict[str, tuple[str, ...]] = {
    "Account": ("Name", "ShippingCity", "NumberOfEmployees", "Website"),
    "Contact": ("FirstName", "LastName", "Email"),
    "Lead": ("FirstName", "LastName", "Company", "Email"),
    "Opportunity": ("Name", "StageName", "CloseDate", "Amount"),
}
PREFIXES = {"Account": "001", "Contact": "003", "Lead": "00Q", "Opportunity": "006"}
INGEST_OPERATIONS = ("insert", "update", "upsert", "delete")
RECORD_ERRORS = (  # sf__Error: code, message, fields
    "REQUIRED_FIELD_MISSING:Required fields are missing: [{field}]:{field} --",
    "INVALID_TYPE_ON_FIELD_IN_RECORD:{field}: value not of required type: {value}:{field} --",
    "STRING_TOO_LONG:{field}: data value too large: {value} (max length=80):{field} --",
    "DUPLICATE_VALUE:duplicate value found: External_Id__c duplicates value on record with id: {id}:--",
    "FIELD_CUSTOM_VALIDATION_EXCEPTION:{field} must not be blank for active records:{field} --",
)
JOB_ERRORS = {
    "ingest": (
        "InvalidBatch : Field name not found : Region__c",
        "ClientInputError : LineEnding is invalid on user data. Current LineEnding setting is LF",
        "InvalidBatch : Failed to parse CSV header",
    ),
    "query": (
        "INVALID_FIELD: No such column 'Region__c' on entity 'Account'.",
        "QUERY_TIMEOUT: Your query request was running for too long.",
    ),
}


def sf_id(prefix: str, rng: random.Random) -> str:
    """An 18-character Salesforce id: 15 case-sensitive characters and their checksum."""
    base = prefix + "".join(rng.choice(ALNUM) for _ in range(15 - len(prefix)))
    suffix = ""
    for chunk in range(3):
        bits = sum(1 << i for i, c in enumerate(base[chunk * 5 : chunk * 5 + 5]) if c.isupper())
        suffix += "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[bits]
    return base + suffix


def sf_time(ts: float) -> str:
    """A time as Salesforce writes it: `2018-12-07T19:58:09.000+0000`."""
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}+0000"


def sf_error(status: int, code: str, message: str, **headers: str) -> SandboxResponse:
    """Salesforce's REST error body: a list of {message, errorCode}."""
    return SandboxResponse.json(
        status, [{"message": message, "errorCode": code}], JSON_TYPE, dict(headers)
    )


@dataclass(slots=True)
class Job:
    """One Bulk API 2.0 job; its state at any moment follows from its schedule."""

    kind: str
    id: str
    seq: int
    created: float
    closed: float  # Open ends (query jobs: at creation; NEVER: an upload nobody closed)
    started: float  # InProgress begins
    done: float  # the outcome is reached
    outcome: str = "JobComplete"  # or Failed
    size: int = 0
    final: int = 0  # records processed when it ends
    failed: int = 0  # records failed when it ends (ingest)
    object: str = "Account"
    operation: str = "insert"
    version: float = float(API_VERSION)
    user: str = ""
    message: str | None = None  # errorMessage when Failed
    seed: int = 0  # the failed rows' generator
    abort_at: float | None = None  # counts only before `done`
    hidden: bool = False  # deleted on demand

    @property
    def until(self) -> float:
        """When processing stops and the job turns terminal: the end, or the abort (NEVER
        for an upload nobody closed)."""
        return self.done if self.abort_at is None else min(self.done, self.abort_at)

    def state(self, t: float) -> str:
        if self.abort_at is not None and t >= self.abort_at:
            return "Aborted"
        if t < self.closed:
            return "Open"
        if t < self.started:
            return "UploadComplete"
        if t < self.done:
            return "InProgress"
        return self.outcome

    def gone(self, t: float, retention: float) -> bool:
        """Deleted: on demand, or terminal and older than the retention [SF limits]."""
        return self.hidden or (t >= self.until and t >= self.created + retention)

    def grown(self, final: int, t: float) -> int:
        """A count growing linearly while InProgress (the timeline's `progress` rule)."""
        if t < self.started:
            return 0
        if t >= self.done and self.abort_at is None:
            return final
        moment = min(t, self.until)
        return int(final * (moment - self.started) / (self.done - self.started))

    def modstamp(self, t: float) -> float:
        moments = (self.closed, self.started, self.done, self.abort_at)
        return max([self.created, *(m for m in moments if m is not None and m <= t)])

    def record(self, t: float) -> dict[str, Any]:
        """The job as listings show it: no counts [SF get_all_jobs.htm]."""
        return {
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": self.user,
            "createdDate": sf_time(self.created),
            "systemModstamp": sf_time(self.modstamp(t)),
            "state": self.state(t),
            "apiVersion": self.version,
            "jobType": JOB_TYPES[self.kind],
            **CSV_SETTINGS,
        }

    def detail(self, t: float) -> dict[str, Any]:
        """The job by id [SF get_job_info.htm; queries.htm]."""
        body = self.record(t)
        state = body["state"]
        busy_ms = int(max(0.0, min(t, self.until) - self.started) * 1000)
        body["numberRecordsProcessed"] = self.grown(self.final, t)
        if self.kind == "ingest":
            body["numberRecordsFailed"] = self.grown(self.failed, t)
        body["retries"] = 0
        body["totalProcessingTime"] = busy_ms
        if self.kind == "ingest":
            body["apiActiveProcessingTime"] = busy_ms * 7 // 10
            body["apexProcessingTime"] = busy_ms // 10 if self.object != "Lead" else 0
            if self.operation == "upsert":
                body["externalIdFieldName"] = "External_Id__c"
            if state == "Open":
                v = f"{self.version:.1f}"
                body["contentUrl"] = f"services/data/v{v}/jobs/ingest/{self.id}/batches"
        if state == "Failed":
            body["errorMessage"] = self.message
        return body

    def columns(self) -> tuple[str, ...]:
        fields = OBJECTS[self.object]
        return {"delete": ("Id",), "update": ("Id", *fields)}.get(self.operation, fields)

    def failed_rows(self, t: float) -> list[tuple[str, str, list[str]]]:
        """(sf__Id, sf__Error, values) of the records failed by `t`, always the same."""
        rng = random.Random(self.seed)
        rows = []
        for _ in range(self.grown(self.failed, t)):
            values = {c: f"{c.lower()}-{rng.randint(1, 99_999)}" for c in self.columns()}
            if "Id" in values:
                values["Id"] = sf_id(PREFIXES[self.object], rng)
            field = rng.choice([c for c in self.columns() if c != "Id"] or ["Id"])
            error = rng.choice(RECORD_ERRORS).format(
                field=field, value=values.get(field, ""), id=sf_id(PREFIXES[self.object], rng)
            )
            rows.append((values.get("Id", ""), error, [values[c] for c in self.columns()]))
        return rows

    def failed_csv(self, t: float, version: float) -> str:
        """failedResults as Salesforce writes it: sf__ columns first, then the record's."""
        out = io.StringIO()
        with_id = version >= SF_ID_VERSION
        out.write(('"sf__Id",' if with_id else "") + '"sf__Error",' + ",".join(self.columns()))
        out.write("\n")
        writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
        for record_id, error, values in self.failed_rows(t):
            writer.writerow(([record_id] if with_id else []) + [error, *values])
        return out.getvalue()

    def schedule(self) -> dict[str, Any]:
        """Its `/_sandbox/timeline` entry: state changes and numberRecordsProcessed's growth."""
        moments = [m for m in (self.closed, self.started, self.done, self.abort_at) if m != NEVER]
        progress = None
        if self.started < self.until < NEVER:
            progress = {
                "field": "numberRecordsProcessed",
                "start": self.started,
                "end": self.done,
                "final": self.final,
                "until": self.until,
                "failed_final": self.failed if self.kind == "ingest" else None,
            }
        return {
            "kind": self.kind,
            "id": self.id,
            "created": self.created,
            "statuses": status_changes(self.state, self.created, moments),
            "progress": progress,
        }


@dataclass
class Session:
    """An issued access token: whose, of which epoch, last used when (account clock)."""

    account_id: str
    epoch: int
    last_used: float


class SalesforceAccount(SandboxAccount):
    """An org: its external client app, integration user, sessions and jobs."""

    def __init__(self, credentials: dict[str, str], options: Mapping[str, Any]) -> None:
        super().__init__("salesforce", credentials, options)
        seed = options.get("seed", 1)
        self.rng = random.Random(f"salesforce:{seed}")
        self.control_rng = random.Random(f"salesforce:{seed}:control")
        self.new_rng = random.Random(f"salesforce:{seed}:new")
        self.org_id = sf_id("00D", self.rng)
        self.user_id = sf_id("005", self.rng)  # the integration user tokens run as
        self.users = [self.user_id, sf_id("005", self.rng), sf_id("005", self.rng)]
        self.session_seconds = float(options.get("session_seconds", DEFAULT_SESSION_SECONDS))
        self.api_per_day = int(options.get("api_requests_per_day", DEFAULT_API_REQUESTS_PER_DAY))
        self.retention = float(options.get("retention_days", DEFAULT_RETENTION_DAYS)) * DAY
        self.page_size = int(options.get("page_size", MAX_PAGE_SIZE))
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        self.token_epoch = 0
        self.tokens_issued = 0
        self.usage_day, self.api_used = 0, 0
        self.jobs: dict[str, list[Job]] = {kind: [] for kind in KINDS}  # by seq
        self.seqs: dict[str, list[int]] = {kind: [] for kind in KINDS}
        self.by_id: dict[str, Job] = {}
        self._seq = 0
        self.new_per_minute = float(options.get("new_jobs_per_minute") or 0)
        low, high = options.get("new_job_seconds") or DEFAULT_NEW_JOB_SECONDS
        if not 0 < float(low) <= float(high):
            raise ValueError("new_job_seconds is [shortest, longest] with 0 < shortest")
        self.new_seconds = (float(low), float(high))
        self.origin = self.clock.now()
        self.new_made = 0

    def add(
        self,
        kind: str,
        created: float,
        rng: random.Random,
        spans: tuple[float, float, float],
        size: int,
        failed: int = 0,
        outcome: str = "JobComplete",
    ) -> Job:
        """A job of `size` records uploaded for spans[0] seconds (ingest), waiting spans[1]
        and running spans[2], `failed` records failing (ingest), ending in `outcome`:
        JobComplete, Failed (a third of the records processed) or Aborted (halfway)."""
        open_for, queued_for, running = spans
        closed = created + (open_for if kind == "ingest" else 0.0)
        started = closed + queued_for
        self._seq += 1
        job = Job(kind, sf_id("750", rng), self._seq, created, closed, started, started + running)
        job.object, job.user = rng.choice(sorted(OBJECTS)), rng.choice(self.users)
        job.operation = rng.choice(INGEST_OPERATIONS if kind == "ingest" else ("query", "queryAll"))
        job.seed, job.size, job.final = rng.getrandbits(32), size, size
        if outcome == "Failed":
            job.outcome, job.final = "Failed", size // 3
            job.message = rng.choice(JOB_ERRORS[kind])
        if outcome == "Aborted":
            job.abort_at = started + running / 2
        job.failed = min(failed, job.final) if kind == "ingest" else 0
        self.jobs[kind].append(job)
        self.seqs[kind].append(job.seq)
        self.by_id[job.id] = job
        return job

    def materialize(self, now: float) -> None:
        """Create the jobs `new_jobs_per_minute` says appeared up to `now`: kinds in turn,
        a fifth of them failing (failed records for ingest, a Failed query)."""
        if self.new_per_minute <= 0:
            return
        interval = 60.0 / self.new_per_minute
        while self.origin + (self.new_made + 1) * interval <= now:
            rng, kind = self.new_rng, KINDS[self.new_made % len(KINDS)]
            created = self.origin + (self.new_made + 1) * interval
            spans = (rng.uniform(1, 10), rng.uniform(1, 10), rng.uniform(*self.new_seconds))
            size, failing = rng.randint(1, 5000), rng.random() < 0.2
            failed = rng.randint(1, min(size, 20)) if failing else 0
            outcome = "Failed" if failing and kind == "query" else "JobComplete"
            self.add(kind, created, rng, spans, size, failed, outcome)
            self.new_made += 1

    def seed(self, per_kind: int) -> None:
        """Six days of history per kind, most complete (some with failed records), some
        Failed or Aborted, a few ingest uploads abandoned Open; then a recent burst still
        Open, UploadComplete or InProgress."""
        rng, now = self.rng, self.clock.now()
        plans: list[tuple[float, str, str]] = []
        for kind in KINDS:
            recent = max(1, per_kind // 10) if per_kind >= 2 else 0
            choices = ("JobComplete", "partial", "Failed", "Aborted", "stuck")
            weights = (60, 20, 8, 8, 4 if kind == "ingest" else 0)
            for i in range(per_kind):
                if i < recent:
                    plans.append((now - rng.uniform(30, 600), kind, "recent"))
                else:
                    plan = rng.choices(choices, weights)[0]
                    plans.append((now - rng.uniform(3600, 6 * DAY), kind, plan))
        for created, kind, plan in sorted(plans):
            size = int(10 ** rng.uniform(0, 4.5))
            running = (
                rng.uniform(600, 3600) if plan == "recent" else 5 + size / rng.uniform(50, 500)
            )
            open_for = NEVER if plan == "stuck" else rng.uniform(2, 120)
            failed = rng.randint(1, min(size, 50)) if plan == "partial" else 0
            outcome = plan if plan in ("Failed", "Aborted") else "JobComplete"
            self.add(
                kind, created, rng, (open_for, rng.uniform(1, 60), running), size, failed, outcome
            )

    def count_api_request(self) -> int:
        """Count one API request in today's allocation (UTC day, real time)."""
        day = int(time.time() // DAY)
        if day != self.usage_day:
            self.usage_day, self.api_used = day, 0
        self.api_used += 1
        return self.api_used

    def visible_jobs(self, now: float) -> list[Job]:
        return [
            job
            for kind in KINDS
            for job in self.jobs[kind]
            if job.created <= now and not job.gone(now, self.retention)
        ]


ROUTE = re.compile(
    r"^/services/data/v(\d+\.\d)/jobs/(ingest|query)(?:/(\w+))?(?:/(failedResults))?/?$"
)
# What `state()` tells of each job (numberRecordsFailed is None for query jobs).
STATE_FIELDS = ("id", "state", "object", "operation", "apiVersion", "createdDate")
STATE_FIELDS += ("systemModstamp", "numberRecordsProcessed", "numberRecordsFailed", "errorMessage")
LOCATOR = re.compile(r"^01g([0-9A-F]{7})([0-9A-F]{8})-(\d+)$")
MASKS = (
    (re.compile(r"(client_secret=)[^&]*"), r"\1[redacted]"),
    (re.compile(r'("(?:access_token|signature)":")[^"]*'), r"\1[redacted]"),
)


class SalesforceSandbox(ProviderSandbox):
    prefix = "salesforce"
    cursor_parameter = "queryLocator"

    def __init__(self, limiter: Any) -> None:
        super().__init__(limiter)
        self.sessions: dict[str, Session] = {}
        self.clients: dict[str, SalesforceAccount] = {}

    def error_response(
        self, status: int, message: str, retry_after: float | None = None
    ) -> SandboxResponse:
        code = {429: "REQUEST_LIMIT_EXCEEDED", 503: "SERVER_UNAVAILABLE"}.get(
            status, "UNKNOWN_EXCEPTION"
        )
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after else {}
        return sf_error(status, code, message, **headers)

    def redact_log_entry(self, entry: dict[str, Any]) -> None:
        """The consumer secret, issued tokens and their signatures stay out of the log."""
        for key in ("body", "response_body"):
            for pattern, replacement in MASKS:
                if entry.get(key):
                    entry[key] = pattern.sub(replacement, entry[key])

    # -- accounts -----------------------------------------------------------------------
    def create_account(self, options: Mapping[str, Any]) -> SandboxAccount:
        key_chars = string.ascii_letters + string.digits + "._"
        credentials = {
            "client_id": "3MVG9" + "".join(secrets.choice(key_chars) for _ in range(80)),
            "client_secret": secrets.token_hex(32).upper(),
        }
        account = SalesforceAccount(credentials, options)
        account.seed(int(options.get("jobs_per_kind", 20)))
        with self.lock:
            self.clients[credentials["client_id"]] = account
        return self.register(account)

    def state(self, account: SandboxAccount) -> dict[str, Any]:
        assert isinstance(account, SalesforceAccount)
        now = account.clock.now()
        account.materialize(now)
        jobs = []
        for job in account.visible_jobs(now):
            view = job.detail(now)
            errors = [e for _, e, _ in job.failed_rows(now)] if job.kind == "ingest" else []
            truth = {name: view.get(name) for name in STATE_FIELDS}
            jobs.append({"kind": job.kind, **truth, "error_count": len(errors), "errors": errors})
        return {
            "provider": "salesforce",
            "account": account.id,
            "now": iso(now),
            "revoked": account.revoked,
            "tokens_issued": account.tokens_issued,
            "session_seconds": account.session_seconds,
            "api_usage": {"used": account.api_used, "limit": account.api_per_day},
            "jobs": jobs,
        }

    def timeline(self, account: SandboxAccount) -> list[dict[str, Any]]:
        assert isinstance(account, SalesforceAccount)
        now = account.clock.now()
        account.materialize(now)
        return [job.schedule() for job in account.visible_jobs(now)]

    def control(
        self, account: SandboxAccount, action: str, payload: Mapping[str, Any]
    ) -> dict[str, Any]:
        assert isinstance(account, SalesforceAccount)
        now = account.clock.now()
        account.materialize(now)
        if action == "create_jobs":
            return self.create_jobs(account, payload, now)
        if action == "expire":
            ids = [str(i) for i in payload.get("ids") or []]
            found = [account.by_id[i] for i in ids if i in account.by_id]
            for job in found:
                job.hidden = True
            return {
                "expired": [j.id for j in found],
                "unknown": [i for i in ids if i not in account.by_id],
            }
        if action in ("revoke_tokens", "revoke"):
            account.token_epoch += 1
            account.revoked = account.revoked or action == "revoke"
            return {"revoked": account.revoked, "token_epoch": account.token_epoch}
        if action == "rotate_secret":
            account.credentials["client_secret"] = secrets.token_hex(32).upper()
            account.revoked = False
            account.token_epoch += 1
            return {"credentials": account.credentials}
        if action == "set_session_seconds":
            account.session_seconds = max(1.0, float(payload["seconds"]))
            return {"session_seconds": account.session_seconds}
        if action == "set_api_limit":
            account.api_per_day = max(1, int(payload["requests_per_day"]))
            return {"api_requests_per_day": account.api_per_day}
        raise KeyError(action)

    def create_jobs(
        self, account: SalesforceAccount, payload: Mapping[str, Any], now: float
    ) -> dict[str, Any]:
        kind = str(payload.get("kind") or "ingest")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        size, failed = int(payload.get("size", 100)), int(payload.get("failed", 0))
        if size < 1 or not 0 <= failed <= size or (failed and kind == "query"):
            raise ValueError("need 1 <= size and 0 <= failed <= size (failed: ingest only)")
        outcome = str(payload.get("outcome") or "JobComplete")
        if outcome not in TERMINAL:
            raise ValueError(f"outcome must be one of {TERMINAL}")
        version = float(payload.get("api_version") or API_VERSION)
        if not MIN_VERSION[kind] <= version <= LATEST_VERSION:
            raise ValueError(f"{kind} jobs need API {MIN_VERSION[kind]} to {LATEST_VERSION}")
        obj = str(payload.get("object") or "Account")
        if obj not in OBJECTS:
            raise ValueError(f"object must be one of {sorted(OBJECTS)}")
        spans = (
            float(payload.get("open_seconds", 5)),
            float(payload.get("queued_seconds", 5)),
            max(0.001, float(payload.get("duration", 60))),
        )
        default_operation = "insert" if kind == "ingest" else "query"
        ids = []
        for i in range(int(payload.get("count", 1))):
            job = account.add(
                kind, now + i * 1e-6, account.control_rng, spans, size, failed, outcome
            )
            job.object, job.version, job.user = obj, version, account.user_id
            job.operation = str(payload.get("operation") or default_operation)
            ids.append(job.id)
        return {"kind": kind, "ids": ids}

    # -- requests -------------------------------------------------------------------------
    def handle(self, request: SandboxRequest) -> tuple[SandboxResponse, SandboxAccount | None]:
        if request.path.rstrip("/") == "/services/oauth2/token":
            return self.token(request)
        account, alive = self.authenticate(request)
        if account is None or not alive:
            return sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid"), account
        with account.lock:
            used = account.api_used
            if self.rate_limit(account, "api-requests", ((account.api_per_day, DAY),)):
                return sf_error(
                    403,
                    "REQUEST_LIMIT_EXCEEDED",
                    "TotalRequests Limit exceeded.",
                    **{"Sforce-Limit-Info": f"api-usage={used}/{account.api_per_day}"},
                ), account
            used = account.count_api_request()
            response = self.route(account, request)
            response.headers["Sforce-Limit-Info"] = f"api-usage={used}/{account.api_per_day}"
            return response, account

    def token(self, request: SandboxRequest) -> tuple[SandboxResponse, SandboxAccount | None]:
        """The client credentials flow [Salesforce Help, client credentials flow]."""
        if request.method != "POST":
            return oauth_error("invalid_request", "must use HTTP POST"), None
        form = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        if form.get("grant_type") != "client_credentials":
            return oauth_error("unsupported_grant_type", "grant type not supported"), None
        with self.lock:
            account = self.clients.get(form.get("client_id", ""))
        if account is None:
            return oauth_error("invalid_client_id", "client identifier invalid"), None
        with account.lock:
            secret = account.credentials["client_secret"]
            if account.revoked or not secrets.compare_digest(form.get("client_secret", ""), secret):
                return oauth_error("invalid_client", "invalid client credentials"), account
            now = account.clock.now()
            token = f"{account.org_id[:15]}!{secrets.token_urlsafe(72)}"
            account.tokens_issued += 1
            with self.lock:
                self.sessions[token] = Session(account.id, account.token_epoch, now)
            return SandboxResponse.json(
                200,
                {
                    "access_token": token,
                    "signature": secrets.token_urlsafe(32),
                    "scope": "api",
                    "instance_url": request.base_url,
                    "id": f"{request.base_url}/id/{account.org_id}/{account.user_id}",
                    "token_type": "Bearer",
                    "issued_at": str(int(now * 1000)),
                },
                JSON_TYPE,
            ), account

    def authenticate(self, request: SandboxRequest) -> tuple[SalesforceAccount | None, bool]:
        """Whose token this is (None if nobody's) and whether its session is still alive:
        a dead one is refused, but the refusal is logged against its account."""
        scheme, _, token = (request.header("Authorization") or "").partition(" ")
        token = token.strip()
        with self.lock:
            session = self.sessions.get(token) if scheme.lower() == "bearer" else None
            account = self.accounts.get(session.account_id) if session else None
        if session is None or not isinstance(account, SalesforceAccount):
            return None, False
        with account.lock:
            now = account.clock.now()
            idle = now - session.last_used
            if session.epoch != account.token_epoch or idle >= account.session_seconds:
                with self.lock:
                    self.sessions.pop(token, None)
                return account, False
            session.last_used = now
            return account, True

    def route(self, account: SalesforceAccount, request: SandboxRequest) -> SandboxResponse:
        match = ROUTE.match(request.path)
        if (
            match is None
            or float(match[1]) < MIN_VERSION[match[2]]
            or float(match[1]) > LATEST_VERSION
        ):
            return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        if request.method != "GET":
            message = f"HTTP Method '{request.method}' not allowed. Allowed are GET"
            return sf_error(405, "METHOD_NOT_ALLOWED", message)
        version, kind, job_id, results = float(match[1]), match[2], match[3], match[4]
        now = account.clock.now()
        account.materialize(now)
        if job_id is None:
            return self.list_jobs(account, kind, match[1], request.query, now)
        job = account.by_id.get(job_id)
        if job is None or job.kind != kind or job.created > now or job.gone(now, account.retention):
            return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        if results is None:
            return SandboxResponse.json(200, job.detail(now), JSON_TYPE)
        if kind != "ingest":
            return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        return SandboxResponse(200, job.failed_csv(now, version).encode(), "text/csv")

    def list_jobs(
        self, account: SalesforceAccount, kind: str, version: str, query: dict[str, str], now: float
    ) -> SandboxResponse:
        """One page of jobs in creation order, bounded by the snapshot the locator holds."""
        jobs, seqs = account.jobs[kind], account.seqs[kind]
        locator = query.get("queryLocator")
        if locator is not None:
            parsed = LOCATOR.match(locator)
            if parsed is None:
                return sf_error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
            snapshot, after, served = int(parsed[1], 16), int(parsed[2], 16), int(parsed[3])
        else:
            snapshot, after, served = (jobs[-1].seq if jobs else 0), 0, 0

        def wanted(job: Job) -> bool:
            return (
                job.created <= now
                and not job.gone(now, account.retention)
                and query.get("jobType", JOB_TYPES[kind]) == JOB_TYPES[kind]
                and query.get("isPkChunkingEnabled", "false").lower() != "true"
                and query.get("concurrencyMode", "parallel").lower() == "parallel"
            )

        page: list[Job] = []
        more = False
        for index in range(bisect.bisect_right(seqs, after), len(jobs)):
            job = jobs[index]
            if job.seq > snapshot:
                break
            if wanted(job):
                if len(page) == account.page_size:
                    more = True
                    break
                page.append(job)
        next_url = None
        if more:
            filters = {k: v for k, v in query.items() if k != "queryLocator"}
            filters["queryLocator"] = f"01g{snapshot:07X}{page[-1].seq:08X}-{served + len(page)}"
            next_url = f"/services/data/v{version}/jobs/{kind}?{urlencode(filters)}"
        body = {
            "done": not more,
            "records": [job.record(now) for job in page],
            "nextRecordsUrl": next_url,
        }
        return SandboxResponse.json(200, body, JSON_TYPE)


def oauth_error(error: str, description: str) -> SandboxResponse:
    """The token endpoint's refusal: 400 with the OAuth error and its description."""
    return SandboxResponse.json(400, {"error": error, "error_description": description}, JSON_TYPE)
