"""The parts every provider sandbox shares: accounts, clocks, rate limits, the request log.

A provider sandbox (`klaviyo.py`, `elasticpath.py`, `fullstory.py` beside this file)
subclasses `ProviderSandbox`: it creates accounts holding a seeded world of jobs, answers
requests under its URL prefix exactly as the real API does, and reports its true state
so tests can compare. Time inside an account runs on that account's own `Clock`, which
tests can freeze and move forward; rate limits run on real time, as the real ones do.
"""

from __future__ import annotations

import json
import math
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import parse_qsl


class Clock:
    """An account's notion of now: real time plus an offset, optionally frozen."""

    def __init__(self, start: float | None = None) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0 if start is None else start - time.time()
        self._frozen_at: float | None = None

    def now(self) -> float:
        with self._lock:
            if self._frozen_at is not None:
                return self._frozen_at
            return time.time() + self._offset

    def now_dt(self) -> datetime:
        return datetime.fromtimestamp(self.now(), tz=UTC)

    def freeze(self) -> None:
        with self._lock:
            if self._frozen_at is None:
                self._frozen_at = time.time() + self._offset

    def unfreeze(self) -> None:
        with self._lock:
            if self._frozen_at is not None:
                self._offset = self._frozen_at - time.time()
                self._frozen_at = None

    def advance(self, seconds: float) -> None:
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at += seconds
            else:
                self._offset += seconds

    def describe(self) -> dict[str, Any]:
        return {"now": iso(self.now()), "frozen": self._frozen_at is not None}


def iso(ts: float | None, *, micro: bool = True) -> str | None:
    """ISO-8601 in UTC with an explicit +00:00 offset, as Klaviyo writes times."""
    if ts is None:
        return None
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.isoformat(timespec="microseconds" if micro else "milliseconds")


def status_changes(
    status_at: Callable[[float], str], created: float, moments: Iterable[float | None]
) -> list[list[Any]]:
    """[[time, status], ...]: the status at creation, then each change, in order.

    `status_at` is a job's status as a function of its clock and `moments` the times it
    may change at (it is constant between them, and takes its new value at the moment).
    """
    changes: list[list[Any]] = [[created, status_at(created)]]
    for moment in sorted({m for m in moments if m is not None and m > created}):
        status = status_at(moment)
        if status != changes[-1][1]:
            changes.append([moment, status])
    return changes


FAULT_KINDS = (
    "429",
    "500",
    "502",
    "503",
    "reset",
    "timeout",
    "truncated",
    "content_type",
    "expired_cursor",
)


class FaultPlan:
    """Which share of an account's API answers go wrong, and how (weights per fault kind).

    Drawn from the account's own seeded generator, so a run's faults repeat for a seed.
    """

    def __init__(
        self,
        rate: float,
        mix: Mapping[str, float] | None = None,
        seed: int = 0,
        timeout_seconds: float = 3.0,
        retry_after: int = 1,
    ) -> None:
        if not 0 <= rate <= 1:
            raise ValueError("fault rate must be between 0 and 1")
        mix = dict(mix or dict.fromkeys(FAULT_KINDS, 1.0))
        unknown = set(mix) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
        self.rate = rate
        self.kinds = [k for k, w in mix.items() if w > 0]
        self.weights = [mix[k] for k in self.kinds]
        self.timeout_seconds = timeout_seconds
        self.retry_after = retry_after
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.injected: dict[str, int] = {}

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> FaultPlan | None:
        if not options or not float(options.get("rate", 0)):
            return None
        return cls(
            float(options["rate"]),
            options.get("mix"),
            int(options.get("seed", 0)),
            float(options.get("timeout_seconds", 3.0)),
            int(options.get("retry_after", 1)),
        )

    def choose(self) -> str | None:
        with self.lock:
            if not self.kinds or self.random.random() >= self.rate:
                return None
            return self.random.choices(self.kinds, self.weights)[0]

    def count(self, kind: str) -> None:
        with self.lock:
            self.injected[kind] = self.injected.get(kind, 0) + 1

    def describe(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "mix": dict(zip(self.kinds, self.weights, strict=True)),
            "injected": dict(self.injected),
        }


class FixedWindowLimiter:
    """Fixed windows per (account, limit key), counted on real time like the real APIs.

    `hit` returns None when the request is within every window, or the seconds until the
    window that is full resets.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, float], tuple[int, int]] = {}
        self.violations = 0
        self.violations_by_account: dict[str, int] = {}

    def hit(self, key: str, windows: tuple[tuple[int, float], ...]) -> float | None:
        now = self._clock()
        with self._lock:
            wait: float | None = None
            for limit, seconds in windows:
                window_index = int(now // seconds)
                index, count = self._counts.get((key, seconds), (window_index, 0))
                if index != window_index:
                    count = 0
                if count >= limit:
                    reset = (window_index + 1) * seconds - now
                    wait = max(wait or 0.0, reset)
            if wait is not None:
                self.violations += 1
                account = key.split(":", 1)[0]
                self.violations_by_account[account] = self.violations_by_account.get(account, 0) + 1
                return wait
            for _limit, seconds in windows:
                window_index = int(now // seconds)
                index, count = self._counts.get((key, seconds), (window_index, 0))
                if index != window_index:
                    count = 0
                self._counts[(key, seconds)] = (window_index, count + 1)
            return None


@dataclass
class SandboxRequest:
    method: str
    path: str  # below the provider prefix, e.g. "/api/catalog-item-bulk-create-jobs"
    query_string: str
    headers: Mapping[str, str]
    body: bytes
    base_url: str  # scheme://host:port/prefix, for building absolute links

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.query_string, keep_blank_values=True))

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lname:
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class SandboxResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    # Faults: seconds to stall before answering, and how to break the connection
    # ("reset": no answer at all; "truncate": headers and half the body).
    delay: float = 0.0
    cut: str | None = None

    @classmethod
    def json(
        cls,
        status: int,
        payload: Any,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> SandboxResponse:
        return cls(
            status,
            json.dumps(payload, separators=(",", ":")).encode(),
            content_type,
            headers or {},
        )

    @classmethod
    def empty(cls, status: int, headers: dict[str, str] | None = None) -> SandboxResponse:
        return cls(status, b"", "", headers or {})


class SandboxAccount:
    """One provider account in the sandbox: credentials, clock and seeded world."""

    def __init__(self, provider: str, credentials: dict[str, str], options: Mapping[str, Any]):
        self.id = f"{provider}-{secrets.token_hex(4)}"
        self.provider = provider
        self.credentials = credentials
        self.options = dict(options)
        self.clock = Clock(options.get("start"))
        if options.get("frozen"):
            self.clock.freeze()
        self.enforce_rate_limits = bool(options.get("rate_limits", True))
        self.faults: FaultPlan | None = FaultPlan.from_options(options.get("faults"))
        self.lock = threading.RLock()
        self.revoked = False

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "provider": self.provider,
            "credentials": self.credentials,
            "clock": self.clock.describe(),
            "rate_limits": self.enforce_rate_limits,
            "faults": self.faults.describe() if self.faults else None,
        }


class ProviderSandbox:
    """Base of a provider's sandbox: one URL prefix, many accounts."""

    prefix: ClassVar[str]  # "klaviyo", "elasticpath", "fullstory"

    def __init__(self, limiter: FixedWindowLimiter) -> None:
        self.limiter = limiter
        self.accounts: dict[str, SandboxAccount] = {}
        self.lock = threading.Lock()

    # -- to implement -----------------------------------------------------------------
    def create_account(self, options: Mapping[str, Any]) -> SandboxAccount:
        raise NotImplementedError

    def handle(self, request: SandboxRequest) -> tuple[SandboxResponse, SandboxAccount | None]:
        """Answer one API request; also say which account it was for (None if unknown)."""
        raise NotImplementedError

    def state(self, account: SandboxAccount) -> dict[str, Any]:
        """The account's true state, for tests to compare with what was synced."""
        raise NotImplementedError

    def control(
        self, account: SandboxAccount, action: str, payload: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Provider-specific test controls (create jobs, revoke a key, ...).

        The sandbox of a provider with `tracked_kinds` (jobs only their client knows the
        ids of) answers `create_jobs` with `kind` (a Job.kind name), `count`, `size`
        (items per job) and `failed` (how many of them fail) by {"kind", "ids"}: the demo
        creates jobs that way and tracks them, naming no provider.
        """
        raise KeyError(action)

    def timeline(self, account: SandboxAccount) -> list[dict[str, Any]]:
        """Every job's schedule on the account's clock, for benchmarks to know the truth
        at any moment without sampling it: `kind`, `id`, `created` (epoch seconds),
        `statuses` ([[time, provider status], ...] from `status_changes`) and `progress`:
        None, or how a count grows while the job runs: {"field", "start", "end",
        "final", "until"}, the field reading int(final * (t - start) / (end - start)) at
        any t with start <= t < until (a cancellation stops it at `until`)."""
        raise NotImplementedError

    # The query parameter that carries a page cursor, for the "expired_cursor" fault.
    cursor_parameter: ClassVar[str | None] = None

    def error_response(
        self, status: int, message: str, retry_after: float | None = None
    ) -> SandboxResponse:
        """An error in this provider's own envelope, for injected faults (override)."""
        headers = retry_after_header(retry_after) if retry_after is not None else {}
        return SandboxResponse.json(status, {"error": message}, headers=headers)

    def redact_log_entry(self, entry: dict[str, Any]) -> None:
        """Mask secrets a request or answer carries in its body (a client secret in a form,
        an issued token) before the entry enters the readable request log. Default: none."""

    # -- shared -----------------------------------------------------------------------
    def register(self, account: SandboxAccount) -> SandboxAccount:
        with self.lock:
            self.accounts[account.id] = account
        return account

    def rate_limit(
        self, account: SandboxAccount, key: str, windows: tuple[tuple[int, float], ...]
    ) -> float | None:
        """Seconds until allowed when this request breaks `windows`, else None."""
        if not account.enforce_rate_limits:
            return None
        return self.limiter.hit(f"{account.id}:{key}", windows)


def retry_after_header(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class RequestLog:
    """A bounded log of every request and answer, for tests that validate against specs."""

    def __init__(self, maxlen: int = 50_000) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._seq = 0

    def add(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._seq += 1
            entry["seq"] = self._seq
            self._entries.append(entry)

    def entries(self, account: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        with self._lock:
            return [
                e
                for e in self._entries
                if e["seq"] > since and (account is None or e.get("account") == account)
            ]
