"""The one place that talks to the network.

One `HttpClient` per account: a `requests.Session` bound to the account's base URL,
connect/read timeouts, bounded retries with exponential backoff and jitter for transient
failures, Retry-After honoured (seconds or HTTP date), a token bucket per rate-limit tier
whose store is injected (so workers in several processes can share it), counters for
requests and retries, and redaction of every credential from logs and error texts.

Credentials travel only to the base URL's own origin: an absolute URL on any other
host, or in a form parsers could read two ways (a `links.next` or a saved cursor, say),
is refused before anything is sent. Every request goes out under the injected
`OutboundPolicy` (`providers.outbound`, `providers.transport`): to a checked address
only, no redirect followed, within a deadline, its body capped.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import requests

from providers.errors import (
    AccessDenied,
    AuthError,
    BadResponse,
    NotFound,
    ProviderError,
    RateLimited,
    RequestRejected,
    TransientError,
)
from providers.outbound import OutboundPolicy, Refused, check_url, parse_target
from providers.redaction import EXCERPT_CHARS, as_text, redact, redact_then_cut
from providers.transport import OutboundSession, ResponseTooLarge, fetch

logger = logging.getLogger("providers.http")

USER_AGENT = "jobcenter/0.1 (+internal job monitor)"
# How much of a log line an error message may take (after redaction).
LOG_MESSAGE_CHARS = 200


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RateLimit:
    """A provider rate-limit tier as the provider states it: windows of (requests, seconds).

    Klaviyo, for example, states a burst and a steady window at once: ((75, 1), (750, 60)).
    """

    windows: tuple[tuple[int, float], ...]

    def token_bucket(self, headroom: float = 0.1) -> tuple[float, float]:
        """(refill per second, capacity) of one bucket that can never break any window.

        A bucket of capacity C refilled at r lets through at most C + r*T requests in any
        span of T seconds, so choosing r and C with C + r*T <= limit for every window keeps
        every window (fixed or sliding), while sustaining (1 - headroom) of the tightest one.
        """
        rate = min(limit * (1 - headroom) / seconds for limit, seconds in self.windows)
        capacity = min(limit - rate * seconds for limit, seconds in self.windows)
        return rate, max(1.0, float(int(capacity)))


class GarbledBody(BadResponse):
    """A success status whose body is not the JSON it should be: retried, then raised."""


class TokenBucketStore(Protocol):
    """Where token buckets live; `take` reserves one token and says how long to wait for it.

    A reservation may drive the bucket below zero, so callers that arrive together queue
    up in order instead of all waking at once.
    """

    def take(self, key: str, rate_per_second: float, capacity: float) -> float: ...


class LocalTokenBucketStore:
    """Token buckets in this process's memory: enough for one worker."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, rate_per_second: float, capacity: float) -> float:
        with self._lock:
            now = self._clock()
            tokens, updated = self._buckets.get(key, (capacity, now))
            tokens = min(capacity, tokens + (now - updated) * rate_per_second) - 1.0
            self._buckets[key] = (tokens, now)
        return 0.0 if tokens >= 0 else -tokens / rate_per_second


@dataclass
class RetryPolicy:
    """How hard one call tries before giving up with a typed error."""

    max_attempts: int = 4
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    max_total_wait: float = 30.0
    # A 429 asking for at most this many seconds is waited out in place; longer ones
    # are raised as RateLimited so the caller can defer the whole account.
    max_inline_retry_after: float = 10.0

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter for retry number `attempt` (1-based)."""
        return random.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1)))


@dataclass
class HttpCounters:
    requests: int = 0
    retries: int = 0
    # Attempts that failed with a retryable fault (5xx, network, 429, garbled body),
    # whether or not another attempt followed.
    failed_attempts: int = 0
    rate_limit_waits: int = 0
    waited_seconds: float = 0.0
    faults: list[str] = field(default_factory=list)


ErrorDescriber = Callable[[requests.Response], str]


@dataclass(frozen=True)
class SlowDown:
    """A provider's "slow down" in another form than a 429 (Salesforce's 403
    REQUEST_LIMIT_EXCEEDED): `retry_after` is the wait to use when the answer has no
    Retry-After header (None: back off)."""

    retry_after: float | None = None


# Reads an error answer: a SlowDown when it means "slow down", else None.
SlowDownReader = Callable[[requests.Response], SlowDown | None]


def default_error_text(response: requests.Response) -> str:
    """The whole body: the client redacts it, then cuts it to EXCERPT_CHARS."""
    return response.text


class HttpClient:
    """An HTTP session bound to one account's base URL and credentials."""

    def __init__(
        self,
        base_url: str,
        *,
        secrets: Iterable[str] = (),
        auth_headers: Mapping[str, str] | None = None,
        default_headers: Mapping[str, str] | None = None,
        timeout: tuple[float, float] = (5.0, 30.0),
        retry: RetryPolicy | None = None,
        rate_limits: Mapping[str, RateLimit] | None = None,
        bucket_store: TokenBucketStore | None = None,
        bucket_prefix: str = "",
        describe_error: ErrorDescriber = default_error_text,
        provider_label: str = "provider",
        sleep: Callable[[float], None] = time.sleep,
        policy: OutboundPolicy | None = None,
        slow_down: SlowDownReader | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.slow_down = slow_down
        self.secrets = [s for s in secrets if s]
        self.auth_headers = dict(auth_headers or {})
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.rate_limits = dict(rate_limits or {})
        self.bucket_store = bucket_store
        self.bucket_prefix = bucket_prefix
        self.describe_error = describe_error
        self.provider_label = provider_label
        self.sleep = sleep
        self.counters = HttpCounters()
        # No policy given: the strict one (https to public addresses only).
        self.policy = policy or OutboundPolicy()
        self.session = OutboundSession(self.policy)
        self.session.headers.update({"User-Agent": USER_AGENT, **(default_headers or {})})
        self._origins = {parse_target(self.base_url).origin}

    # -- helpers ----------------------------------------------------------------------
    def add_secret(self, value: str) -> None:
        """Register a value (a freshly issued token, say) for redaction."""
        if value and value not in self.secrets:
            self.secrets.append(value)

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    def excerpt(self, value: object) -> str:
        """A short piece of an answer (text or parsed JSON) for an error: redacted, then cut."""
        return redact_then_cut(as_text(value), self.secrets, EXCERPT_CHARS)

    def url_for(self, path_or_url: str) -> str:
        """Absolute URL for a path under the base URL, or an absolute URL on its origin."""
        if "://" not in path_or_url:
            return self.base_url + "/" + path_or_url.lstrip("/")
        try:
            check_url(path_or_url, self.policy, origins=self._origins)
        except Refused as exc:
            raise Refused(
                f"{self.provider_label} sent a link to another host, or one that reads two "
                f"ways ({exc.message}); it was not followed, so the credentials stayed here"
            ) from None
        return urljoin(self.base_url + "/", path_or_url)

    # -- the call ---------------------------------------------------------------------
    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        tier: str = "default",
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        data: Mapping[str, Any] | None = None,
        json_body: Any = None,
        authenticated: bool = True,
        expect: Iterable[int] = (200,),
        parse_json: bool = False,
    ) -> requests.Response:
        """Send one request, retrying what is worth retrying; raise a typed error otherwise.

        With `parse_json`, a 2xx body that is not JSON (a proxy's HTML page, a body cut
        off mid-way) counts as a fault of that attempt and is retried like a 5xx; the
        parsed body is then on `response.parsed`.
        """
        url = self.url_for(path_or_url)
        expected = set(expect)
        send_headers = dict(headers or {})
        if authenticated:
            send_headers.update(self.auth_headers)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            self._wait_for_token(tier)
            try:
                response = self._send(
                    method, url, params, send_headers, data, json_body, attempt=attempt
                )
                error = None if response.status_code in expected else self._error_for(response)
                if error is None and parse_json and response.content:
                    try:
                        response.parsed = self.parse_json(response)  # type: ignore[attr-defined]
                    except BadResponse as exc:
                        error = GarbledBody(
                            exc.message, excerpt=exc.excerpt, status_code=exc.status_code
                        )
            except (Refused, ResponseTooLarge) as exc:  # final: nothing worth a retry
                raise type(exc)(
                    f"{self.provider_label}: {exc.message}", status_code=exc.status_code
                ) from None
            except requests.RequestException as exc:
                response = None
                error = TransientError(
                    f"{self.provider_label} did not answer: {type(exc).__name__}: "
                    + self.excerpt(str(exc))
                )
            if error is None:
                return response  # type: ignore[return-value]
            if isinstance(error, TransientError | RateLimited | GarbledBody):
                self.counters.failed_attempts += 1
            wait = self._retry_wait(error, attempt, time.monotonic() - started)
            if wait is None:
                raise error
            self.counters.retries += 1
            self.counters.faults.append(type(error).__name__)
            logger.info(
                "%s %s failed (%s); retry %d in %.2fs",
                method,
                self.redact(url),
                redact_then_cut(error.message, self.secrets, LOG_MESSAGE_CHARS),
                attempt,
                wait,
            )
            self._sleep(wait)

    def request_json(self, method: str, path_or_url: str, **kwargs: Any) -> Any:
        """`request`, then the body as JSON; a body that stays unparseable is a BadResponse."""
        response = self.request(method, path_or_url, parse_json=True, **kwargs)
        return getattr(response, "parsed", None)

    def parse_json(self, response: requests.Response) -> Any:
        content_type = response.headers.get("Content-Type", "")
        if "json" not in content_type:
            raise BadResponse(
                f"{self.provider_label} answered with {content_type or 'no content type'} "
                "instead of JSON",
                excerpt=self.excerpt(response.text),
                status_code=response.status_code,
            )
        try:
            return json.loads(response.content)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadResponse(
                f"{self.provider_label} sent a body that is not valid JSON ({exc})",
                excerpt=self.excerpt(response.text),
                status_code=response.status_code,
            ) from None

    # -- internals --------------------------------------------------------------------
    def _send(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        headers: dict[str, str],
        data: Mapping[str, Any] | None,
        json_body: Any,
        *,
        attempt: int = 1,
    ) -> requests.Response:
        self.counters.requests += 1
        t0 = time.monotonic()
        outcome: int | str = "?"
        try:
            # The body is read here, capped and within the deadline: a connection cut
            # mid-body is a RequestException, an oversized body a ResponseTooLarge.
            response = fetch(
                self.session,
                method,
                url,
                params=params,
                headers=headers,
                data=data,
                json=json_body,
                timeout=self.timeout,
            )
            outcome = response.status_code
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            self._log_request(method, url, params, outcome, t0, attempt)
        return response

    def _log_request(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        outcome: int | str,
        started: float,
        attempt: int,
    ) -> None:
        """One DEBUG line per attempt: method, path and query (redacted with this client's
        secrets, in every form they take; never the host, userinfo, headers or body), the
        status or the exception's class, milliseconds, attempt. The same as fields
        (`http_method`, `http_path`, `http_status` or `http_error`, `http_ms`,
        `http_attempt`) for the JSON log format."""
        if not logger.isEnabledFor(logging.DEBUG):
            return
        ms = round((time.monotonic() - started) * 1000, 1)
        prepared = requests.PreparedRequest()
        try:
            prepared.prepare_url(url, params)
            parts = urlsplit(prepared.url or url)
        except (requests.RequestException, ValueError):  # logged as it was given
            parts = urlsplit(url)
        path = self.redact(parts.path + (f"?{parts.query}" if parts.query else ""))
        result = {"http_status": outcome} if isinstance(outcome, int) else {"http_error": outcome}
        logger.debug(
            "%s %s -> %s in %.0fms (attempt %d)",
            method,
            path,
            outcome,
            ms,
            attempt,
            extra={
                "http_method": method,
                "http_path": path,
                **result,
                "http_ms": ms,
                "http_attempt": attempt,
            },
        )

    def _error_for(self, response: requests.Response) -> ProviderError:
        code = response.status_code
        try:
            detail = self.excerpt(self.describe_error(response))
        except Exception:  # a describer must never hide the real error
            detail = self.excerpt(response.text)
        label = self.provider_label
        signal = self.slow_down(response) if self.slow_down is not None and code != 401 else None
        if signal is not None:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return RateLimited(
                f"{label} asked to slow down (HTTP {code}: {detail})",
                retry_after=signal.retry_after if retry_after is None else retry_after,
                status_code=code,
            )
        if code == 401:
            return AuthError(
                f"authentication failed: {label} refused the credentials (HTTP 401: {detail})",
                status_code=code,
            )
        if code == 403:
            return AccessDenied(
                f"access denied: {label} accepted the credentials but refused this request "
                f"(HTTP 403: {detail})",
                status_code=code,
            )
        if code == 404:
            return NotFound(
                f"{label} does not know this resource (HTTP 404: {detail})", status_code=code
            )
        if code == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return RateLimited(
                f"{label} rate limit reached (HTTP 429: {detail})", retry_after=retry_after
            )
        if code >= 500:
            return TransientError(f"{label} server error (HTTP {code}: {detail})", status_code=code)
        if 300 <= code < 400:
            return BadResponse(
                f"{label} answered with a redirect (HTTP {code}); not followed",
                status_code=code,
            )
        if 200 <= code < 300:
            return BadResponse(
                f"{label} answered HTTP {code} where the API documents another status",
                excerpt=self.excerpt(response.text),
                status_code=code,
            )
        return RequestRejected(
            f"{label} rejected the request (HTTP {code}: {detail})", status_code=code
        )

    def _retry_wait(self, error: ProviderError, attempt: int, elapsed: float) -> float | None:
        """Seconds to wait before the next attempt, or None when this error is final."""
        policy = self.retry
        if attempt >= policy.max_attempts:
            return None
        if isinstance(error, RateLimited):
            if error.retry_after is not None:
                if error.retry_after > policy.max_inline_retry_after:
                    return None
                wait = error.retry_after + random.uniform(0, 0.25)
            else:
                wait = policy.backoff(attempt) + policy.backoff_base
            self.counters.rate_limit_waits += 1
        elif isinstance(error, TransientError | GarbledBody):
            wait = policy.backoff(attempt)
        else:
            return None
        if elapsed + wait > policy.max_total_wait:
            return None
        return wait

    def _wait_for_token(self, tier: str) -> None:
        if self.bucket_store is None:
            return
        limit = self.rate_limits.get(tier) or self.rate_limits.get("default")
        if limit is None:
            return
        rate, capacity = limit.token_bucket()
        wait = self.bucket_store.take(f"{self.bucket_prefix}{tier}", rate, capacity)
        if wait > 0:
            self._sleep(wait)

    def _sleep(self, seconds: float) -> None:
        self.counters.waited_seconds += seconds
        self.sleep(seconds)
