"""Klaviyo's bulk-job API as the real service behaves (tests/specs/klaviyo-jobs.openapi.json).

What it reproduces, and why each matters to the sync:

- The 13 GA job types that have list endpoints, each at `/api/<type>s` and
  `/api/<type>s/<id>`, plus the paged `/api/profile-bulk-import-jobs/<id>/import-errors`.
  Resources are JSON:API objects exactly as the spec shapes them (`type`, `id`,
  `attributes`, `links.self`; profile imports link their import errors).
- Jobs move on the account's clock: `queued`, then `processing` with `completed_count`
  growing linearly, then `complete` (failures are counted and listed when the job ends:
  `failed_count` plus `errors[]` for catalog and coupon jobs, import errors for profile
  imports) or `cancelled`. Klaviyo has no failed status. A terminal job expires
  `retention_days` after it ended: it then vanishes from lists and answers 404 by id.
- Lists: at most 100 per page (`page[size]` 1..100 where the spec allows it), newest
  first unless `sort` says otherwise, opaque signed cursors that expire after three days
  (Klaviyo's own rule of thumb), `links.self/next/prev` as absolute URLs, `filter` with
  the operators each endpoint allows, sparse fieldsets; anything the spec does not allow
  is a 400 in Klaviyo's error envelope.
- Auth (`Authorization: Klaviyo-API-Key pk_...`), the required `revision` header, and
  per-endpoint fixed-window rate limits (burst per second and steady per minute, from
  each operation's `x-klaviyo-ratelimit`) with 429 + Retry-After and the throttled body;
  `RateLimit-*` headers on every other answer.

Lists are built without scanning the account: each kind keeps its jobs sorted by
creation time, a cursor encodes an index into that list, and a job's status is computed
from its schedule and the clock only when it is rendered. 100,000 jobs take about a
second to create.

Account options beside the shared ones: `seed`, `jobs_per_kind`, `retention_days`, and
`new_jobs_per_minute`: jobs that keep appearing on the clock, kinds in turn, each queued
for a time drawn from `new_job_queued_seconds` and processing for one drawn from
`new_job_processing_seconds` ([shortest, longest]; default 5 to 120 and 30 to 1,200).
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import hmac
import math
import random
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import parse_qsl, urlencode

from providers.sandbox.core import (
    ProviderSandbox,
    SandboxAccount,
    SandboxRequest,
    SandboxResponse,
    iso,
    retry_after_header,
    status_changes,
)

JSONAPI = "application/vnd.api+json"
MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
CURSOR_LIFETIME = 3 * DAY
DEFAULT_RETENTION_DAYS = 7
LIST_PAGE_SIZE = 100
DEFAULT_SIZED_PAGE = 20
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

# GA revisions (one branch each in klaviyo/openapi); a date between two is served by the
# newest revision on or before it, a date before the first or after the last is refused.
REVISIONS = (
    "2022-10-17",
    "2023-01-24",
    "2023-02-22",
    "2023-06-15",
    "2023-07-15",
    "2023-08-15",
    "2023-09-15",
    "2023-10-15",
    "2023-12-15",
    "2024-02-15",
    "2024-05-15",
    "2024-06-15",
    "2024-07-15",
    "2024-10-15",
    "2025-01-15",
    "2025-04-15",
    "2025-07-15",
    "2025-10-15",
    "2026-01-15",
    "2026-04-15",
    "2026-07-15",
)
REVISION_PATTERN = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(\.pre)?$")

QUEUED, PROCESSING, COMPLETE, CANCELLED = "queued", "processing", "complete", "cancelled"
ALL_STATUSES = (QUEUED, PROCESSING, COMPLETE, CANCELLED)

L_TIER = ((75, 1.0), (750, 60.0))
XL_TIER = ((350, 1.0), (3500, 60.0))
M_TIER = ((10, 1.0), (150, 60.0))

CATALOG_ATTRIBUTES = (
    "status",
    "created_at",
    "total_count",
    "completed_count",
    "failed_count",
    "completed_at",
    "errors",
    "expires_at",
)
IMPORT_ATTRIBUTES = (
    "status",
    "created_at",
    "total_count",
    "completed_count",
    "failed_count",
    "completed_at",
    "expires_at",
    "started_at",
)
SUPPRESSION_ATTRIBUTES = (
    "status",
    "created_at",
    "total_count",
    "completed_count",
    "completed_at",
    "skipped_count",
)
IMPORT_ERROR_FIELDS = ("code", "title", "detail", "source", "source.pointer", "original_payload")


@dataclass(frozen=True)
class KindSpec:
    """What the spec allows on one job type's endpoints."""

    name: str
    family: str  # "catalog", "coupon", "import", "suppression"
    attributes: tuple[str, ...]
    windows: tuple[tuple[int, float], ...]
    max_total: int
    includes: tuple[str, ...] = ()
    include_type: str = ""  # the resource type `include` embeds (for fields[...])
    filters: Mapping[str, tuple[str, ...]] | None = None  # field -> operators
    status_values: tuple[str, ...] = ALL_STATUSES
    sorts: tuple[str, ...] = ()
    sized: bool = False

    @property
    def plural(self) -> str:
        return self.name + "s"

    @property
    def subject(self) -> str:
        """What one operation of this job acts on, for error texts."""
        if self.family == "catalog":
            return self.name.split("-")[1]
        if self.family == "coupon":
            return "coupon code"
        return "profile"


def _catalog_kinds() -> list[KindSpec]:
    kinds = []
    for obj in ("item", "variant", "category"):
        for op in ("create", "update", "delete"):
            # Item/variant create and update reads are 75/s + 750/m since 2026-04-15;
            # delete jobs and every category job read at 350/s + 3500/m.
            windows = L_TIER if obj != "category" and op != "delete" else XL_TIER
            include = ""
            if op != "delete":
                include = {"item": "items", "variant": "variants", "category": "categories"}[obj]
            kinds.append(
                KindSpec(
                    name=f"catalog-{obj}-bulk-{op}-job",
                    family="catalog",
                    attributes=CATALOG_ATTRIBUTES,
                    windows=windows,
                    max_total=100,
                    includes=(include,) if include else (),
                    include_type=f"catalog-{obj}" if include else "",
                    filters={"status": ("equals",)},
                )
            )
    return kinds


KIND_SPECS: dict[str, KindSpec] = {
    spec.name: spec
    for spec in [
        *_catalog_kinds(),
        KindSpec(
            name="coupon-code-bulk-create-job",
            family="coupon",
            attributes=CATALOG_ATTRIBUTES,
            windows=L_TIER,
            max_total=200,
            includes=("coupon-codes",),
            include_type="coupon-code",
            filters={"status": ("equals",)},
        ),
        KindSpec(
            name="profile-bulk-import-job",
            family="import",
            attributes=IMPORT_ATTRIBUTES,
            windows=M_TIER,
            max_total=10_000,
            includes=("lists",),
            include_type="list",
            filters={"status": ("equals", "any")},
            status_values=(QUEUED, PROCESSING, COMPLETE),
            sorts=("created_at", "-created_at"),
            sized=True,
        ),
        *(
            KindSpec(
                name=f"profile-suppression-bulk-{op}-job",
                family="suppression",
                attributes=SUPPRESSION_ATTRIBUTES,
                windows=L_TIER,
                max_total=1000,
                filters={
                    "status": ("equals",),
                    "list_id": ("equals",),
                    "segment_id": ("equals",),
                },
                sorts=("created", "-created"),
            )
            for op in ("create", "delete")
        ),
    ]
}
KIND_NAMES = tuple(KIND_SPECS)
BY_PLURAL = {spec.plural: spec for spec in KIND_SPECS.values()}
IMPORT_KIND = KIND_SPECS["profile-bulk-import-job"]

# Error texts per family: (code, title, detail, source pointer); {n} is the failed row.
ERROR_TEMPLATES: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "catalog-create": (
        ("duplicate", "Duplicate resource.", "A catalog {subject} with external ID 'EXT-{n}' already exists.", "/data/attributes/{plural}/data/{n}/attributes/external_id"),
        ("invalid", "Invalid input.", "'price' must be a valid number.", "/data/attributes/{plural}/data/{n}/attributes/price"),
        ("invalid", "Invalid input.", "'title' may not be blank.", "/data/attributes/{plural}/data/{n}/attributes/title"),
    ),
    "catalog-update": (
        ("not_found", "Not found.", "Catalog {subject} '$custom:::$default:::EXT-{n}' does not exist.", "/data/attributes/{plural}/data/{n}/id"),
        ("invalid", "Invalid input.", "'url' must be a valid URL.", "/data/attributes/{plural}/data/{n}/attributes/url"),
    ),
    "catalog-delete": (
        ("not_found", "Not found.", "Catalog {subject} '$custom:::$default:::EXT-{n}' does not exist.", "/data/attributes/{plural}/data/{n}/id"),
    ),
    "coupon": (
        ("duplicate", "Duplicate resource.", "Coupon code 'CODE-{n}' already exists for this coupon.", "/data/attributes/coupon-codes/data/{n}/attributes/unique_code"),
        ("invalid", "Invalid input.", "'unique_code' may not be blank.", "/data/attributes/coupon-codes/data/{n}/attributes/unique_code"),
    ),
    "import": (
        ("invalid", "Invalid input.", "Invalid email address.", "/data/attributes/profiles/data/{n}/attributes/email"),
        ("invalid", "Invalid input.", "Invalid phone number format (Example of a valid format: +12345678901).", "/data/attributes/profiles/data/{n}/attributes/phone_number"),
    ),
}  # fmt: skip


# --- jobs ------------------------------------------------------------------------------


class Job:
    """One job; its status at any moment follows from its schedule and the clock."""

    __slots__ = (
        "cancel_at",
        "created",
        "done",
        "failed",
        "hidden",
        "id",
        "kind",
        "list_id",
        "seed",
        "segment_id",
        "skipped",
        "started",
        "total",
    )

    def __init__(
        self,
        kind: KindSpec,
        job_id: str,
        created: float,
        queued_for: float,
        processing_for: float,
        total: int,
        failed: int = 0,
        skipped: int = 0,
        cancel_at: float | None = None,
        list_id: str | None = None,
        segment_id: str | None = None,
        seed: int = 0,
    ) -> None:
        self.kind = kind
        self.id = job_id
        self.created = created
        self.started = created + max(0.0, queued_for)
        self.done = self.started + max(0.0, processing_for)
        self.total = total
        self.failed = failed
        self.skipped = skipped
        # A cancellation only counts if it comes before the job would have finished.
        self.cancel_at = cancel_at if cancel_at is not None and cancel_at < self.done else None
        self.list_id = list_id
        self.segment_id = segment_id
        self.seed = seed
        self.hidden = False  # expired on demand ("expire" control)

    @property
    def ended(self) -> float:
        """When the job reached its terminal state (cancelled or complete)."""
        return self.cancel_at if self.cancel_at is not None else self.done

    def visible(self, now: float, retention: float) -> bool:
        return not self.hidden and self.created <= now < self.ended + retention

    def status(self, now: float) -> str:
        if self.cancel_at is not None and now >= self.cancel_at:
            return CANCELLED
        if now < self.started:
            return QUEUED
        if now < self.done:
            return PROCESSING
        return COMPLETE

    def succeeded_ops(self) -> int:
        return self.total - self.failed - self.skipped

    def completed_at(self, t: float) -> int:
        """Operations completed by time `t` while processing: linear in the clock."""
        if t <= self.started:
            return 0
        if t >= self.done:
            return self.succeeded_ops()
        return int(self.succeeded_ops() * (t - self.started) / (self.done - self.started))

    def view(self, now: float, retention: float) -> dict[str, Any]:
        """Every attribute value at `now` (the spec's names; `errors` as a count)."""
        status = self.status(now)
        failed = skipped = 0
        completed_at = expires_at = started_at = None
        if status == COMPLETE:
            completed = self.succeeded_ops()
            failed, skipped = self.failed, self.skipped
            completed_at = self.done
            expires_at = self.done + retention
        elif status == CANCELLED:
            assert self.cancel_at is not None
            completed = self.completed_at(self.cancel_at)
            expires_at = self.cancel_at + retention
        elif status == PROCESSING:
            completed = self.completed_at(now)
        else:
            completed = 0
        if now >= self.started and (self.cancel_at is None or self.cancel_at > self.started):
            started_at = self.started
        return {
            "status": status,
            "created_at": iso(self.created),
            "total_count": self.total,
            "completed_count": completed,
            "failed_count": failed,
            "skipped_count": skipped,
            "completed_at": iso(completed_at),
            "expires_at": iso(expires_at),
            "started_at": iso(started_at),
            "errors": failed if status == COMPLETE else 0,
        }

    def schedule(self) -> dict[str, Any]:
        """Its `/_sandbox/timeline` entry: status changes and the completed_count's growth."""
        progress = None
        if self.started < self.done and (self.cancel_at is None or self.cancel_at > self.started):
            progress = {
                "field": "completed_count",
                "start": self.started,
                "end": self.done,
                "final": self.succeeded_ops(),
                "until": self.ended,
            }
        return {
            "kind": self.kind.name,
            "id": self.id,
            "created": self.created,
            "statuses": status_changes(
                self.status, self.created, (self.started, self.done, self.cancel_at)
            ),
            "progress": progress,
        }

    def error_count(self, now: float) -> int:
        """How many error records the API lists for this job now."""
        if self.kind.family == "suppression" or self.status(now) != COMPLETE:
            return 0
        return self.failed


def stable_uuid(*parts: str) -> str:
    digest = hashlib.blake2b("|".join(parts).encode(), digest_size=16).digest()
    return str(uuid.UUID(bytes=digest, version=4))


def error_entry(job: Job, n: int) -> tuple[str, str, str, str, str]:
    """(id, code, title, detail, pointer) of the `n`th failure of `job`, always the same."""
    spec = job.kind
    family = spec.family
    if family == "catalog":
        family = "catalog-" + spec.name.split("-")[3]
    templates = ERROR_TEMPLATES[family]
    code, title, detail, pointer = templates[(job.seed + n) % len(templates)]
    row = n + (job.seed % 7)
    plural = {"item": "items", "variant": "variants", "category": "categories"}.get(
        spec.subject, "profiles"
    )
    return (
        stable_uuid(job.id, str(n)),
        code,
        title,
        detail.format(n=row, subject=spec.subject),
        pointer.format(n=row, plural=plural),
    )


def inline_errors(job: Job) -> list[dict[str, Any]]:
    return [
        {"id": eid, "code": code, "title": title, "detail": detail, "source": {"pointer": ptr}}
        for eid, code, title, detail, ptr in (error_entry(job, n) for n in range(job.failed))
    ]


def import_error_resource(job: Job, n: int, fields: tuple[str, ...] | None) -> dict[str, Any]:
    eid, code, title, detail, pointer = error_entry(job, n)
    row = n + (job.seed % 7)
    if "email" in pointer:
        payload: dict[str, Any] = {"email": f"customer-{row}@example", "first_name": "Sam"}
    else:
        payload = {"email": f"customer-{row}@example.com", "phone_number": f"555-01{row % 100:02d}"}
    attributes: dict[str, Any] = {
        "code": code,
        "title": title,
        "detail": detail,
        "source": {"pointer": pointer},
        "original_payload": {"type": "profile", "attributes": payload},
    }
    if fields is not None:
        wanted = set(fields)
        if "source.pointer" in wanted:
            wanted.add("source")
        attributes = {k: v for k, v in attributes.items() if k in wanted}
    return {"type": "import-error", "id": eid, "attributes": attributes}


# --- accounts --------------------------------------------------------------------------


class KindStore:
    """One kind's jobs, sorted by creation time (then id), and an index by id."""

    def __init__(self, spec: KindSpec) -> None:
        self.spec = spec
        self.jobs: list[Job] = []
        self.by_id: dict[str, Job] = {}

    def add(self, job: Job) -> None:
        if not self.jobs or (job.created, job.id) >= (self.jobs[-1].created, self.jobs[-1].id):
            self.jobs.append(job)
        else:
            bisect.insort(self.jobs, job, key=lambda j: (j.created, j.id))
        self.by_id[job.id] = job


class KlaviyoAccount(SandboxAccount):
    """A Klaviyo account: its private key, one store per job kind, and its schedule rules."""

    def __init__(self, credentials: dict[str, str], options: Mapping[str, Any]) -> None:
        super().__init__("klaviyo", credentials, options)
        self.seed = int(options.get("seed", 1))
        self.rng = random.Random(f"klaviyo:{self.seed}")
        self.control_rng = random.Random(f"klaviyo:{self.seed}:control")
        self.new_rng = random.Random(f"klaviyo:{self.seed}:new")
        self.retention = float(options.get("retention_days", DEFAULT_RETENTION_DAYS)) * DAY
        self.new_per_minute = float(options.get("new_jobs_per_minute", 0) or 0)
        # How long each of those waits queued and then processes: (shortest, longest) s.
        self.new_queued = seconds_range(options.get("new_job_queued_seconds"), (5, 2 * MINUTE))
        self.new_processing = seconds_range(
            options.get("new_job_processing_seconds"), (30, 20 * MINUTE)
        )
        self.stores: dict[str, KindStore] = {name: KindStore(s) for name, s in KIND_SPECS.items()}
        self.origin = self.clock.now()
        self.new_made = 0
        self.cursor_key = secrets.token_bytes(16)
        self.link_base: str | None = None
        # Steady-window usage per endpoint, for the RateLimit-* headers.
        self.usage: dict[str, tuple[int, int]] = {}
        self.usage_lock = threading.Lock()

    def job(self, job_id: str, kind: str | None = None) -> Job | None:
        stores = [self.stores[kind]] if kind else self.stores.values()
        for store in stores:
            job = store.by_id.get(job_id)
            if job is not None:
                return job
        return None

    def visible_jobs(self, now: float) -> Iterator[Job]:
        for store in self.stores.values():
            for job in reversed(store.jobs):
                if job.visible(now, self.retention):
                    yield job

    def materialize(self, now: float) -> None:
        """Create the jobs `new_jobs_per_minute` says appeared up to `now`, in order."""
        if self.new_per_minute <= 0:
            return
        interval = MINUTE / self.new_per_minute
        while self.origin + (self.new_made + 1) * interval <= now:
            created = self.origin + (self.new_made + 1) * interval
            spec = KIND_SPECS[KIND_NAMES[self.new_made % len(KIND_NAMES)]]
            rng = self.new_rng
            outcome = pick_outcome(rng, spec)
            total = pick_total(rng, spec, outcome)
            self.add(
                make_job(
                    rng,
                    spec,
                    created,
                    queued_for=rng.uniform(*self.new_queued),
                    processing_for=rng.uniform(*self.new_processing),
                    total=total,
                    outcome=outcome,
                )
            )
            self.new_made += 1

    def add(self, job: Job) -> Job:
        self.stores[job.kind.name].add(job)
        return job

    def count_use(self, key: str, limit: int, seconds: float) -> tuple[int, int]:
        """Count one request in the endpoint's steady window: (remaining, reset seconds)."""
        now = time.time()
        index = int(now // seconds)
        with self.usage_lock:
            window, used = self.usage.get(key, (index, 0))
            if window != index:
                used = 0
            used += 1
            self.usage[key] = (index, used)
        return max(0, limit - used), max(1, math.ceil((index + 1) * seconds - now))


def seconds_range(value: Any, default: tuple[float, float]) -> tuple[float, float]:
    """An option given as [shortest, longest] seconds (or one number), else `default`."""
    if value is None:
        return default
    low, high = (value, value) if isinstance(value, int | float) else value
    if not 0 <= float(low) <= float(high):
        raise ValueError(f"a range of seconds is [shortest, longest] with 0 <= shortest: {value}")
    return float(low), float(high)


def make_id(rng: random.Random) -> str:
    """A ULID-looking id (Klaviyo's job ids are ULIDs), drawn from the seeded generator."""
    return "01" + "".join(rng.choices(CROCKFORD, k=24))


def pick_outcome(rng: random.Random, spec: KindSpec) -> str:
    r = rng.random()
    if r < 0.08:
        return "cancel"
    if spec.family == "suppression":
        return "succeed"  # suppression jobs have no failed_count
    if r < 0.20:
        return "partial"
    if r < 0.27:
        return "fail"
    return "succeed"


def pick_total(rng: random.Random, spec: KindSpec, outcome: str) -> int:
    if spec.family == "import":
        total = rng.randint(1, 10_000) if rng.random() < 0.05 else rng.randint(1, 2000)
        if outcome == "fail":
            total = min(total, rng.randint(1, 250))  # a wholly failed import: <= 250 errors
    else:
        total = rng.randint(1, spec.max_total)
    return max(total, 2) if outcome == "partial" else total


def failures_for(rng: random.Random, spec: KindSpec, total: int, outcome: str) -> int:
    if outcome == "fail":
        return total
    if outcome != "partial":
        return 0
    if spec.family == "import":
        if total > 150 and rng.random() < 0.3:
            return rng.randint(101, min(total - 1, 350))  # more than one page of errors
        return rng.randint(1, min(total - 1, 60))
    return rng.randint(1, max(1, min(total - 1, total // 3 + 1)))


def make_job(
    rng: random.Random,
    spec: KindSpec,
    created: float,
    *,
    queued_for: float,
    processing_for: float,
    total: int,
    outcome: str,
    failed: int | None = None,
    cancel_at: float | None = None,
) -> Job:
    if failed is None:
        failed = failures_for(rng, spec, total, outcome)
    skipped = 0
    list_id = segment_id = None
    if spec.family == "suppression":
        skipped = rng.randint(0, total // 4) if rng.random() < 0.3 else 0
        which = rng.random()
        if which < 0.4:
            list_id = "".join(rng.choices(ALNUM, k=6))
        elif which < 0.7:
            segment_id = "".join(rng.choices(ALNUM, k=6))
    elif spec.family == "import":
        list_id = "".join(rng.choices(ALNUM, k=6))
    if outcome == "cancel" and cancel_at is None:
        cancel_at = created + rng.uniform(0, queued_for + processing_for)
    return Job(
        spec,
        make_id(rng),
        created,
        queued_for,
        processing_for,
        total,
        failed=failed,
        skipped=skipped,
        cancel_at=cancel_at if outcome == "cancel" else None,
        list_id=list_id,
        segment_id=segment_id,
        seed=rng.randrange(1 << 30),
    )


def seed_world(account: KlaviyoAccount, jobs_per_kind: int) -> None:
    """`jobs_per_kind` jobs of every kind over the past four days; some still running."""
    rng = account.rng
    t0 = account.origin
    for spec in KIND_SPECS.values():
        store = account.stores[spec.name]
        jobs = []
        for _ in range(jobs_per_kind):
            outcome = pick_outcome(rng, spec)
            total = pick_total(rng, spec, outcome)
            r = rng.random()
            if r < 0.07:  # still queued now
                age = rng.uniform(0, 20 * MINUTE)
                queued_for = age + rng.uniform(MINUTE, 2 * HOUR)
                processing_for = rng.uniform(10 * MINUTE, 3 * HOUR)
            elif r < 0.16:  # processing now
                age = rng.uniform(5 * MINUTE, 3 * HOUR)
                queued_for = rng.uniform(0, age / 2)
                processing_for = age - queued_for + rng.uniform(5 * MINUTE, 3 * HOUR)
            else:  # finished (or cancelled) before now
                age = rng.uniform(HOUR, 4 * DAY)
                queued_for = rng.uniform(0, 10 * MINUTE)
                processing_for = rng.uniform(10, 40 * MINUTE)
            jobs.append(
                make_job(
                    rng,
                    spec,
                    t0 - age,
                    queued_for=queued_for,
                    processing_for=processing_for,
                    total=total,
                    outcome=outcome,
                )
            )
        jobs.sort(key=lambda j: (j.created, j.id))
        store.jobs = jobs
        store.by_id = {job.id: job for job in jobs}


# --- errors in Klaviyo's envelope ------------------------------------------------------


class ApiError(Exception):
    """An answer in Klaviyo's error envelope, raised from anywhere in a handler."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str,
        *,
        parameter: str | None = None,
        pointer: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.parameter = parameter
        self.pointer = pointer
        self.headers = headers or {}

    def response(self) -> SandboxResponse:
        error: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "status": self.status,
            "code": self.code,
            "title": self.title,
            "detail": self.detail,
        }
        if self.parameter:
            error["source"] = {"parameter": self.parameter}
        elif self.pointer:
            error["source"] = {"pointer": self.pointer}
        return SandboxResponse.json(self.status, {"errors": [error]}, JSONAPI, dict(self.headers))


def invalid(detail: str, parameter: str | None = None) -> ApiError:
    return ApiError(400, "invalid", "Invalid input.", detail, parameter=parameter)


def not_found(detail: str = "Not found.") -> ApiError:
    return ApiError(404, "not_found", "Not found.", detail)


# --- filters ---------------------------------------------------------------------------

FILTER_TOKEN = re.compile(r"\s*(\(|\)|\[|\]|,|\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[\w.-]+)")


def tokenize_filter(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = FILTER_TOKEN.match(text, pos)
        if not match:
            raise invalid(f"Invalid filter provided: could not parse '{text[pos:]}'.", "filter")
        tokens.append(match.group(1))
        pos = match.end()
    return tokens


def parse_filter(text: str) -> list[tuple[str, str, list[str]]]:
    """`equals(status,"x")`, `any(status,["x","y"])`, joined by `,` or `and(...)`."""
    tokens = tokenize_filter(text)
    position = 0

    def take(expected: str | None = None) -> str:
        nonlocal position
        if position >= len(tokens):
            raise invalid("Invalid filter provided: unexpected end of filter.", "filter")
        token = tokens[position]
        if expected is not None and token != expected:
            raise invalid(f"Invalid filter provided: expected '{expected}'.", "filter")
        position += 1
        return token

    def value() -> str:
        token = take()
        if len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'":
            return token[1:-1]
        raise invalid(f"Invalid filter provided: {token} is not a quoted value.", "filter")

    def term() -> list[tuple[str, str, list[str]]]:
        operator = take()
        take("(")
        if operator == "and":
            terms = term()
            while tokens[position : position + 1] == [","]:
                take(",")
                terms += term()
            take(")")
            return terms
        field = take()
        take(",")
        if tokens[position : position + 1] == ["["]:
            take("[")
            values = [value()]
            while tokens[position : position + 1] == [","]:
                take(",")
                values.append(value())
            take("]")
            listed = True
        else:
            values, listed = [value()], False
        take(")")
        if listed and operator != "any":
            raise invalid(f"Invalid filter provided: '{operator}' takes one value.", "filter")
        return [(operator, field, values)]

    terms = term()
    while position < len(tokens):
        take(",")
        terms += term()
    return terms


def job_matcher(
    spec: KindSpec, text: str | None, now: float, retention: float
) -> Callable[[Job], bool]:
    """A predicate for visible jobs passing `filter`; 400 for what the endpoint forbids."""
    statuses: set[str] | None = None
    list_id = segment_id = None
    for operator, field, values in parse_filter(text) if text else []:
        allowed = (spec.filters or {}).get(field)
        if allowed is None:
            raise invalid(f"'{field}' is not a valid field for filtering {spec.plural}.", "filter")
        if operator not in allowed:
            raise invalid(
                f"Filter operator '{operator}' is not allowed for field '{field}'. "
                f"Allowed: {', '.join(allowed)}.",
                "filter",
            )
        if field == "status":
            for v in values:
                if v not in spec.status_values:
                    raise invalid(
                        f"'{v}' is not a valid value for 'status'. "
                        f"Valid values: {', '.join(spec.status_values)}.",
                        "filter",
                    )
            statuses = set(values) if statuses is None else statuses & set(values)
        elif field == "list_id":
            list_id = values[0]
        else:
            segment_id = values[0]

    def match(job: Job) -> bool:
        if not job.visible(now, retention):
            return False
        if list_id is not None and job.list_id != list_id:
            return False
        if segment_id is not None and job.segment_id != segment_id:
            return False
        return statuses is None or job.status(now) in statuses

    return match


# --- the sandbox -----------------------------------------------------------------------


@dataclass
class Page:
    items: list[Any]
    next_start: int | None
    prev_start: int | None


def page_of(
    items: list[Job], start: int, step: int, size: int, match: Callable[[Job], bool]
) -> Page:
    """Up to `size` matching items from index `start` walking by `step`, and the cursors
    around them: where the next page starts and where the previous one started."""
    n = len(items)
    found: list[Job] = []
    i = start
    while 0 <= i < n and len(found) < size:
        if match(items[i]):
            found.append(items[i])
        i += step
    next_start = None
    while 0 <= i < n:
        if match(items[i]):
            next_start = i
            break
        i += step
    prev_start = None
    back, seen = start - step, 0
    while 0 <= back < n and seen < size:
        if match(items[back]):
            prev_start, seen = back, seen + 1
        back -= step
    return Page(found, next_start, prev_start)


class KlaviyoSandbox(ProviderSandbox):
    """Klaviyo's `/api/` job endpoints, one seeded world per account, keyed by private key."""

    prefix = "klaviyo"
    cursor_parameter = "page[cursor]"

    def error_response(
        self, status: int, message: str, retry_after: float | None = None
    ) -> SandboxResponse:
        """Klaviyo's JSON:API error envelope, for injected faults."""
        if status == 429:
            seconds = max(1, math.ceil(retry_after or 1))
            return ApiError(
                429,
                "throttled",
                "Request was throttled.",
                f"Request was throttled. Expected available in {seconds} seconds.",
                pointer="/data/",
                headers=retry_after_header(seconds),
            ).response()
        return ApiError(status, "error", "A server error occurred.", message).response()

    def __init__(self, limiter: Any) -> None:
        super().__init__(limiter)
        self.by_key: dict[str, KlaviyoAccount] = {}

    # -- accounts ---------------------------------------------------------------------
    def create_account(self, options: Mapping[str, Any]) -> SandboxAccount:
        credentials = {"api_key": "pk_" + secrets.token_hex(17)}
        account = KlaviyoAccount(credentials, options)
        seed_world(account, int(options.get("jobs_per_kind", 20)))
        with self.lock:
            self.by_key[credentials["api_key"]] = account
        return self.register(account)

    def state(self, account: SandboxAccount) -> dict[str, Any]:
        assert isinstance(account, KlaviyoAccount)
        now = account.clock.now()
        account.materialize(now)
        jobs = []
        for job in account.visible_jobs(now):
            view = job.view(now, account.retention)
            shown = job.kind.attributes  # what the API shows of this kind (the rest: None)
            suppression = job.kind.family == "suppression"
            jobs.append(
                {
                    "kind": job.kind.name,
                    "id": job.id,
                    "status": view["status"],
                    "total_count": view["total_count"],
                    "completed_count": view["completed_count"],
                    "failed_count": None if suppression else view["failed_count"],
                    "skipped_count": view["skipped_count"] if suppression else None,
                    "created_at": view["created_at"],
                    "started_at": view["started_at"] if "started_at" in shown else None,
                    "completed_at": view["completed_at"],
                    "expires_at": view["expires_at"] if "expires_at" in shown else None,
                    "error_count": job.error_count(now),
                }
            )
        return {"provider": "klaviyo", "now": iso(now), "jobs": jobs}

    def timeline(self, account: SandboxAccount) -> list[dict[str, Any]]:
        assert isinstance(account, KlaviyoAccount)
        now = account.clock.now()
        account.materialize(now)
        return [job.schedule() for job in account.visible_jobs(now)]

    def control(
        self, account: SandboxAccount, action: str, payload: Mapping[str, Any]
    ) -> dict[str, Any]:
        assert isinstance(account, KlaviyoAccount)
        now = account.clock.now()
        account.materialize(now)
        if action == "create_jobs":
            return {"ids": self.create_jobs(account, payload, now)}
        if action == "revoke":
            account.revoked = True
            return {"revoked": True}
        if action == "expire":
            ids = [str(i) for i in payload.get("ids") or []]
            expired, unknown = [], []
            for job_id in ids:
                job = account.job(job_id)
                if job is None:
                    unknown.append(job_id)
                else:
                    job.hidden = True
                    expired.append(job_id)
            return {"expired": expired, "unknown": unknown}
        if action == "set_link_base":
            # Fault injection: links (self, next, prev) point at another origin.
            account.link_base = str(payload.get("url") or "").rstrip("/") or None
            return {"link_base": account.link_base}
        raise KeyError(action)

    def create_jobs(
        self, account: KlaviyoAccount, payload: Mapping[str, Any], now: float
    ) -> list[str]:
        kind = payload.get("kind")
        if kind not in KIND_SPECS:
            raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KIND_NAMES)}")
        spec = KIND_SPECS[kind]
        outcome = payload.get("outcome", "succeed")
        if outcome not in ("succeed", "partial", "fail", "cancel"):
            raise ValueError("outcome must be succeed, partial, fail or cancel")
        if spec.family == "suppression" and outcome in ("partial", "fail"):
            raise ValueError("suppression jobs report no failures (they have no failed_count)")
        count = int(payload.get("count", 1))
        queued_for = float(payload.get("queued_seconds", 5))
        processing_for = float(payload.get("processing_seconds", 60))
        rng = account.control_rng
        ids = []
        for i in range(count):
            total = int(payload.get("total_count") or pick_total(rng, spec, outcome))
            failed = payload.get("failed_count")
            if failed is not None:
                failed = int(failed)
                if outcome not in ("partial", "fail") or not 0 < failed <= total:
                    raise ValueError("failed_count needs outcome partial/fail and 0 < n <= total")
            elif outcome == "partial" and total < 2:
                total = 2
            job = make_job(
                rng,
                spec,
                now + i * 1e-6,  # keeps creation order within one call
                queued_for=queued_for,
                processing_for=processing_for,
                total=total,
                outcome=outcome,
                failed=failed,
                cancel_at=now + queued_for + processing_for / 2 if outcome == "cancel" else None,
            )
            ids.append(account.add(job).id)
        return ids

    # -- requests ---------------------------------------------------------------------
    def handle(self, request: SandboxRequest) -> tuple[SandboxResponse, SandboxAccount | None]:
        account, refusal = self.authenticate(request)
        if refusal is not None:
            return refusal.response(), account  # a revoked key's 401 belongs to its account
        assert account is not None
        with account.lock:
            try:
                return self.answer(account, request), account
            except ApiError as error:
                return error.response(), account

    def authenticate(
        self, request: SandboxRequest
    ) -> tuple[KlaviyoAccount | None, ApiError | None]:
        """The account whose private key the request carries, or the 401 Klaviyo answers."""
        header = (request.header("Authorization") or "").strip()
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() not in ("klaviyo-api-key", "bearer") or not key:
            return None, ApiError(
                401,
                "not_authenticated",
                "Authentication credentials were not provided.",
                "Missing or invalid authorization scheme. Please use Klaviyo-API-Key.",
            )
        account = self.by_key.get(key) if scheme.lower() == "klaviyo-api-key" else None
        if account is None or account.revoked:
            return account, ApiError(
                401,
                "authentication_failed",
                "Incorrect authentication credentials.",
                "Incorrect authentication credentials.",
            )
        return account, None

    def answer(self, account: KlaviyoAccount, request: SandboxRequest) -> SandboxResponse:
        now = account.clock.now()
        account.materialize(now)
        check_revision(request.header("revision"))
        parts = [p for p in request.path.split("/") if p]
        spec = BY_PLURAL.get(parts[1]) if len(parts) >= 2 and parts[0] == "api" else None
        if spec is None or len(parts) > 4 or (len(parts) == 4 and spec is not IMPORT_KIND):
            raise not_found(f"No API endpoint at {request.path}.")
        if request.method not in ("GET", "HEAD"):
            raise ApiError(
                405,
                "method_not_allowed",
                "Method not allowed.",
                f'Method "{request.method}" not allowed on this sandbox endpoint.',
            )
        if len(parts) == 4:
            if parts[3] != "import-errors":
                raise not_found(f"No API endpoint at {request.path}.")
            key, windows = "profile-bulk-import-job:import-errors", M_TIER
        else:
            key = f"{spec.name}:{'list' if len(parts) == 2 else 'get'}"
            windows = spec.windows
        wait = self.rate_limit(account, key, windows)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            raise ApiError(
                429,
                "throttled",
                "Request was throttled.",
                f"Request was throttled. Expected available in {seconds} seconds.",
                pointer="/data/",
                headers=retry_after_header(wait),
            )
        steady_limit, steady_seconds = max(windows, key=lambda w: w[1])
        remaining, reset = account.count_use(key, steady_limit, steady_seconds)
        headers = {
            "RateLimit-Limit": str(steady_limit),
            "RateLimit-Remaining": str(remaining),
            "RateLimit-Reset": str(reset),
        }
        try:
            base = account.link_base or request.base_url
            query = parse_qsl(request.query_string, keep_blank_values=True)
            if len(parts) == 2:
                body = self.list_jobs(account, spec, request, query, base, now)
            elif len(parts) == 3:
                body = self.get_job(account, spec, parts[2], query, base, now)
            else:
                body = self.import_errors(account, parts[2], request, query, base, now)
        except ApiError as error:
            error.headers.update(headers)
            raise
        return SandboxResponse.json(200, body, JSONAPI, headers)

    # -- endpoints --------------------------------------------------------------------
    def list_jobs(
        self,
        account: KlaviyoAccount,
        spec: KindSpec,
        request: SandboxRequest,
        query: list[tuple[str, str]],
        base: str,
        now: float,
    ) -> dict[str, Any]:
        allowed = {f"fields[{spec.name}]", "filter", "page[cursor]"}
        if spec.sized:
            allowed.add("page[size]")
        if spec.sorts:
            allowed.add("sort")
        params = check_params(query, allowed)
        fields = parse_fields(params.get(f"fields[{spec.name}]"), spec.name, spec.attributes)
        size = parse_size(params.get("page[size]")) if spec.sized else LIST_PAGE_SIZE
        sort = params.get("sort")
        if sort is not None and sort not in spec.sorts:
            raise invalid(
                f"'{sort}' is not a valid sort for {spec.plural}. "
                f"Valid sorts: {', '.join(spec.sorts)}.",
                "sort",
            )
        ascending = sort is not None and not sort.startswith("-")
        match = job_matcher(spec, params.get("filter"), now, account.retention)
        store = account.stores[spec.name]
        items = store.jobs
        step = 1 if ascending else -1
        start = 0 if ascending else len(items) - 1
        if "page[cursor]" in params:
            start = self.read_cursor(account, spec.name, params["page[cursor]"], len(items), now)
        page = page_of(items, start, step, size, match)
        data = [self.resource(account, job, now, fields, base) for job in page.items]
        return {
            "data": data,
            "links": self.collection_links(account, request, query, base, page, spec.name, now),
        }

    def get_job(
        self,
        account: KlaviyoAccount,
        spec: KindSpec,
        job_id: str,
        query: list[tuple[str, str]],
        base: str,
        now: float,
    ) -> dict[str, Any]:
        allowed = {f"fields[{spec.name}]"}
        if spec.includes:
            allowed |= {"include", f"fields[{spec.include_type}]"}
        params = check_params(query, allowed)
        fields = parse_fields(params.get(f"fields[{spec.name}]"), spec.name, spec.attributes)
        if "include" in params:
            for value in params["include"].split(","):
                if value not in spec.includes:
                    raise invalid(
                        f"'{value}' is not a valid include for {spec.name}. "
                        f"Valid includes: {', '.join(spec.includes)}.",
                        "include",
                    )
            raise invalid(
                f"include={params['include']} is not supported by this sandbox; "
                "request the job without include.",
                "include",
            )
        job = account.stores[spec.name].by_id.get(job_id)
        if job is None or not job.visible(now, account.retention):
            raise not_found(f"A {spec.name} with id '{job_id}' does not exist.")
        resource = self.resource(account, job, now, fields, base)
        return {"data": resource, "links": {"self": resource["links"]["self"]}}

    def import_errors(
        self,
        account: KlaviyoAccount,
        job_id: str,
        request: SandboxRequest,
        query: list[tuple[str, str]],
        base: str,
        now: float,
    ) -> dict[str, Any]:
        params = check_params(query, {"fields[import-error]", "page[cursor]", "page[size]"})
        fields = parse_fields(
            params.get("fields[import-error]"), "import-error", IMPORT_ERROR_FIELDS
        )
        size = parse_size(params.get("page[size]"))
        job = account.stores[IMPORT_KIND.name].by_id.get(job_id)
        if job is None or not job.visible(now, account.retention):
            raise not_found(f"A profile-bulk-import-job with id '{job_id}' does not exist.")
        count = job.error_count(now)
        scope = f"import-errors:{job.id}"
        start = 0
        if "page[cursor]" in params:
            start = self.read_cursor(account, scope, params["page[cursor]"], max(count, 1), now)
        end = min(count, start + size)
        data = [import_error_resource(job, n, fields) for n in range(start, end)]
        page = Page(data, end if end < count else None, max(0, start - size) if start else None)
        return {
            "data": data,
            "links": self.collection_links(account, request, query, base, page, scope, now),
        }

    # -- rendering --------------------------------------------------------------------
    def resource(
        self,
        account: KlaviyoAccount,
        job: Job,
        now: float,
        fields: tuple[str, ...] | None,
        base: str,
    ) -> dict[str, Any]:
        spec = job.kind
        view = job.view(now, account.retention)
        names = spec.attributes if fields is None else [a for a in spec.attributes if a in fields]
        attributes: dict[str, Any] = {}
        for name in names:
            if name == "errors":
                attributes["errors"] = inline_errors(job) if view["errors"] else []
            else:
                attributes[name] = view[name]
        self_link = f"{base}/api/{spec.plural}/{job.id}/"
        resource: dict[str, Any] = {
            "type": spec.name,
            "id": job.id,
            "attributes": attributes,
            "links": {"self": self_link},
        }
        if spec.family == "import":
            resource["relationships"] = {
                "import-errors": {"links": {"related": f"{self_link}import-errors/"}}
            }
        return resource

    def collection_links(
        self,
        account: KlaviyoAccount,
        request: SandboxRequest,
        query: list[tuple[str, str]],
        base: str,
        page: Page,
        scope: str,
        now: float,
    ) -> dict[str, str]:
        path = request.path
        kept = [(k, v) for k, v in query if k != "page[cursor]"]

        def link(cursor: str | None) -> str:
            pairs = [*kept, ("page[cursor]", cursor)] if cursor is not None else list(query)
            return f"{base}{path}" + (f"?{urlencode(pairs)}" if pairs else "")

        links = {"self": link(None)}
        if page.next_start is not None:
            links["next"] = link(self.make_cursor(account, scope, page.next_start, now))
        if page.prev_start is not None:
            links["prev"] = link(self.make_cursor(account, scope, page.prev_start, now))
        return links

    # -- cursors ----------------------------------------------------------------------
    @staticmethod
    def _signature(account: KlaviyoAccount, scope: str, payload: str) -> str:
        message = f"{scope}|{payload}".encode()
        return hmac.new(account.cursor_key, message, hashlib.sha256).hexdigest()[:16]

    def make_cursor(self, account: KlaviyoAccount, scope: str, index: int, now: float) -> str:
        """An opaque cursor: a position in the kind's list, when it was issued, a signature."""
        payload = f"{index}:{int(now)}"
        token = f"{payload}:{self._signature(account, scope, payload)}"
        return base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")

    def read_cursor(
        self, account: KlaviyoAccount, scope: str, cursor: str, size: int, now: float
    ) -> int:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            index_text, issued_text, signature = raw.split(":")
            index, issued = int(index_text), int(issued_text)
        except (ValueError, UnicodeDecodeError):
            raise invalid("Invalid page cursor.", "page[cursor]") from None
        expected = self._signature(account, scope, f"{index_text}:{issued_text}")
        if not hmac.compare_digest(signature, expected) or not 0 <= index < size:
            raise invalid("Invalid page cursor.", "page[cursor]")
        if now - issued > CURSOR_LIFETIME:
            raise invalid("Page cursor has expired; request the first page again.", "page[cursor]")
        return index


# --- request checks --------------------------------------------------------------------


def check_revision(value: str | None) -> None:
    """The `revision` header is required: a known date format, not before the first GA
    revision and not after the newest one."""
    if not value:
        raise invalid(
            "Missing required header 'revision'. Provide an API revision such as "
            f"'{REVISIONS[-1]}'.",
            "revision",
        )
    match = REVISION_PATTERN.match(value.strip())
    try:
        day = date(int(match.group(1)), int(match.group(2)), int(match.group(3))) if match else None
    except ValueError:
        day = None
    if day is None:
        raise invalid(
            f"Invalid revision '{value}'. Revisions are dates in the format YYYY-MM-DD[.suffix].",
            "revision",
        )
    if day.isoformat() < REVISIONS[0] or day.isoformat() > REVISIONS[-1]:
        raise invalid(
            f"Invalid revision '{value}'. Valid revisions are {REVISIONS[0]} through "
            f"{REVISIONS[-1]}.",
            "revision",
        )


def check_params(query: list[tuple[str, str]], allowed: set[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for key, value in query:
        if key not in allowed:
            raise invalid(f"'{key}' is not a valid query parameter for this endpoint.", key)
        params[key] = value
    return params


def parse_fields(
    value: str | None, resource: str, names: tuple[str, ...]
) -> tuple[str, ...] | None:
    if value is None:
        return None
    fields = tuple(f.strip() for f in value.split(",") if f.strip())
    for name in fields:
        if name not in names and name != "id":
            raise invalid(
                f"'{name}' is not a valid field for the resource '{resource}'.",
                f"fields[{resource}]",
            )
    return fields


def parse_size(value: str | None) -> int:
    if value is None:
        return DEFAULT_SIZED_PAGE
    try:
        size = int(value)
    except ValueError:
        size = 0
    if not 1 <= size <= 100:
        raise invalid("page[size] must be an integer between 1 and 100.", "page[size]")
    return size
