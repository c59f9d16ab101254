"""The wire side of the outbound policy: pinned connections, a deadline, a capped body.

- `PinnedAdapter` (a requests transport adapter) checks the prepared URL again, resolves
  its name once (`providers.outbound.resolve`) and connects to that very address, with
  the name as Host header, TLS server name and the name the certificate must match: a
  second lookup cannot rebind it to an address inside;
- `fetch` sends one request without following redirects, bounds the whole of it by the
  policy's deadline (a watchdog shuts the socket down, whatever the request waits for),
  and reads at most `max_response_bytes` of the body, a chunk at a time.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import socket
import threading
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ReadTimeoutError

from providers.errors import BadResponse
from providers.outbound import OutboundPolicy, check_url, resolve

CHUNK_BYTES = 64 * 1024


class ResponseTooLarge(BadResponse):
    """The answer is larger than `max_response_bytes`; the rest was not read."""


class DeadlineExceeded(requests.Timeout):
    """The request took longer than the policy's deadline in all (a drip-feeding server)."""


_current = threading.local()


class Deadline:
    """The whole time one request may take; when it passes, its sockets are shut down.

    Per-read timeouts bound each wait for a byte, so a server sending a byte a second
    holds a worker indefinitely; this bounds connect, TLS, headers and body together.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._connections: list[HTTPConnection] = []
        self._done = False

    def __enter__(self) -> Deadline:
        _current.deadline = self
        _watchdog.add(time.monotonic() + self.seconds, self)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._done = True
            self._connections.clear()
        _current.deadline = None

    def watch(self, connection: HTTPConnection) -> None:
        with self._lock:
            self._connections.append(connection)
            if self.expired:
                _cut(connection)

    def expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for connection in self._connections:
                _cut(connection)


class _Watchdog:
    """One thread expiring every deadline in time order (a thread per request cost more
    than a small local request itself). Started on first use, again in a forked child."""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._thread: threading.Thread | None = None

    def add(self, when: float, deadline: Deadline) -> None:
        with self._wake:
            heapq.heappush(self._heap, (when, id(deadline), deadline))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="outbound-deadlines", daemon=True
                )
                self._thread.start()
            if self._heap[0][2] is deadline:  # sooner than any other: wake to wait less
                self._wake.notify()

    def _run(self) -> None:
        with self._wake:
            while True:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    heapq.heappop(self._heap)[2].expire()  # a finished one does nothing
                self._wake.wait(self._heap[0][0] - now if self._heap else None)

    def forked(self) -> None:
        self._wake = threading.Condition()
        self._heap, self._thread = [], None


_watchdog = _Watchdog()
os.register_at_fork(after_in_child=_watchdog.forked)


def _cut(connection: HTTPConnection) -> None:
    """Wake whatever waits on the connection's socket (base-class shutdown: TLS too)."""
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _active_deadline() -> Deadline | None:
    return getattr(_current, "deadline", None)


class _WatchedConnection:
    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        deadline = _active_deadline()
        if deadline is not None and deadline.expired:
            _cut(self)  # type: ignore[arg-type]


class _WatchedHTTPConnection(_WatchedConnection, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


class _WatchedPool:
    def _get_conn(self, timeout: float | None = None) -> HTTPConnection:
        connection = super()._get_conn(timeout)  # type: ignore[misc]
        deadline = _active_deadline()
        if deadline is not None:
            deadline.watch(connection)
        return connection


class _WatchedHTTPPool(_WatchedPool, HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(_WatchedPool, HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


# -- the transport -----------------------------------------------------------------------


class PinnedAdapter(HTTPAdapter):
    """requests' adapter, connecting only to the checked address of the checked URL.

    The prepared URL (what urllib3 is handed) is checked again, its name resolved once
    and every address checked; the pool then connects to that address, with the name as
    Host header, TLS server name and the name the certificate must match.
    """

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPPool,
            "https": _WatchedHTTPSPool,
        }

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        target = check_url(request.url or "", self.policy)
        address = resolve(target, self.policy)
        _, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        host_params = {"scheme": target.scheme, "host": str(address), "port": target.port}
        if target.scheme == "https":
            pool_kwargs.update(server_hostname=target.host, assert_hostname=target.host)
        request.headers["Host"] = target.host_header
        return host_params, pool_kwargs


class OutboundSession(requests.Session):
    """A session whose every http(s) request goes through `PinnedAdapter`.

    It sees no redirect at all: a 3xx comes back as it is, its body unread (requests'
    own handling reads a redirect's whole body, uncapped, even when not following it).
    No proxies or .netrc from the environment: a forward proxy would resolve names
    itself (and .netrc could add credentials); an on-premises proxy is reached as a base
    URL on `allowed_networks` instead.
    """

    def __init__(self, policy: OutboundPolicy) -> None:
        super().__init__()
        self.policy = policy
        self.trust_env = False
        adapter = PinnedAdapter(policy)
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def get_redirect_target(self, resp: requests.Response) -> None:
        return None


def fetch(
    session: OutboundSession,
    method: str,
    url: str,
    *,
    timeout: tuple[float, float],
    read_body: bool = True,
    **kwargs: Any,
) -> requests.Response:
    """One request: no redirect followed, within the deadline, the body read capped.

    With `read_body` False the body is not read at all (the connection is closed), nor
    is a redirect's: it is never followed, so its body is of no use.
    Raises DeadlineExceeded, ResponseTooLarge, Refused, or requests' own errors.
    """
    policy = session.policy
    deadline = policy.deadline
    timeout = (min(timeout[0], deadline), min(timeout[1], deadline))
    with Deadline(deadline) as watch:
        try:
            response = session.request(
                method, url, timeout=timeout, allow_redirects=False, stream=True, **kwargs
            )
            if read_body and not 300 <= response.status_code < 400:
                body = _read_capped(response, policy.max_response_bytes)
            else:
                response.close()
                body = b""
            response._content = body
            response._content_consumed = True
        except requests.RequestException as exc:
            if watch.expired:
                raise DeadlineExceeded(f"no complete answer within {deadline:g}s") from exc
            raise
        if watch.expired:
            response.close()
            raise DeadlineExceeded(f"no complete answer within {deadline:g}s")
    return response


def _read_capped(response: requests.Response, limit: int) -> bytes:
    if response.raw is None:  # a test's canned adapter: the body is already there
        return response.content
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > limit:
        response.close()
        raise ResponseTooLarge(
            f"the answer announces {int(length)} bytes, over the {limit}-byte limit; not read",
            status_code=response.status_code,
        )
    chunks: list[bytes] = []
    total = 0
    try:
        while chunk := response.raw.read1(CHUNK_BYTES, decode_content=True):
            total += len(chunk)
            if total > limit:
                response.close()
                raise ResponseTooLarge(
                    f"the answer is over the {limit}-byte limit; the rest was not read",
                    status_code=response.status_code,
                )
            chunks.append(chunk)
    except ReadTimeoutError as exc:
        raise requests.ReadTimeout(f"the answer stalled: {exc}") from exc
    except (Urllib3Error, OSError) as exc:  # a cut connection, a body that does not decode
        raise requests.ConnectionError(f"the answer was cut off: {exc}") from exc
    return b"".join(chunks)
