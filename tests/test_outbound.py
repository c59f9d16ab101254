"""The outbound policy (providers.outbound, providers.transport) against real sockets.

Tricky URLs, a crafted next link and saved cursor (the sandbox, a real listener on
another port), names resolving inside (socket.getaddrinfo patched: what the sandbox
cannot produce), a pinned TLS connection, a 60 MB body, a redirect, a drip-feeding
server and a webhook receiver's error page, each over a real local socket.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.core.exceptions import ValidationError

from jobcenter.accounts import validate_base_url
from jobcenter.alerts.delivery import deliver
from jobcenter.alerts.webhooks import validate_webhook_url
from jobcenter.models import AlertChannel, AlertDelivery
from providers.errors import BadResponse, InvalidCursor, TransientError
from providers.http import HttpClient, RetryPolicy
from providers.klaviyo import KlaviyoProvider
from providers.outbound import OutboundPolicy, Refused, check_url
from providers.sandbox.client import SandboxClient
from providers.transport import OutboundSession, ResponseTooLarge, fetch

PRODUCTION = OutboundPolicy()
DEVELOPMENT = OutboundPolicy.development()
KLAVIYO = {("https", "a.klaviyo.com", 443)}
ONE_TRY = RetryPolicy(max_attempts=1)
MB = 1024 * 1024
CATALOG = "catalog-item-bulk-create-job"

INSIDE = [
    "https://127.1/",
    "https://0.0.0.0/",
    "https://169.254.169.254/latest/meta-data/",
    "https://10.0.0.1/",
    "https://192.168.1.10/",
    "https://100.64.0.1/",
    "https://[::1]/",
    "https://[::ffff:127.0.0.1]/",
    "https://[fd00::1]/",
    "https://[fe80::1]/",
    "https://[64:ff9b::a00:1]/",
    "https://[2002:a00:1::]/",
    "https://[2001:0:4136:e378::1]/",
    "https://224.0.0.1/",
    "https://2130706433/",
    "https://0x7f.0.0.1/",
    "https://0177.0.0.1/",
    "https://localhost/",
    "https://localhost./",
    "https://app.localhost/",
    "http://hooks.example.com/x",
]
AMBIGUOUS = [
    "https://evil.example\\@a.klaviyo.com/api/",
    "https://a.klaviyo.com@evil.example/api/",
    "https://user:pw@a.klaviyo.com/api/",
    "https://a.klaviyo.com\t.evil.example/api/",
    "https://a.klaviyo.com\n/api/",
    "https://a.klaviyo.com%2eevil.example/api/",
    "https://a.klaviyo.com./api/",
    "https://\uff41.klaviyo.com/api/",  # a fullwidth a: IDNA maps it to the ASCII name
    "https://a.klaviyo.com:/api/",
    "https:a.klaviyo.com/api/",
    "//a.klaviyo.com/api/",
    "ftp://a.klaviyo.com/api/",
]
ELSEWHERE = [
    "https://a.klaviyo.com.evil.example/api/",
    "https://xn--a-w4a.klaviyo.com/api/",
    "https://a.klaviyo.com:8443/api/",
    "http://a.klaviyo.com/api/",
]


@pytest.mark.parametrize("url", INSIDE + AMBIGUOUS + ELSEWHERE)
def test_tricky_urls_are_refused(url: str) -> None:
    with pytest.raises(Refused):
        check_url(url, PRODUCTION, origins=KLAVIYO)


@pytest.mark.parametrize(
    "url", ["HTTPS://A.KLAVIYO.COM/api/", "https://a.klaviyo.com:443/api/", "https://a.Klaviyo.com"]
)
def test_the_same_host_written_otherwise_is_the_same_origin(url: str) -> None:
    assert check_url(url, PRODUCTION, origins=KLAVIYO).origin == ("https", "a.klaviyo.com", 443)


@pytest.mark.parametrize("url", INSIDE + AMBIGUOUS)
def test_webhook_urls_inside_or_ambiguous_are_refused_in_production(url: str, settings) -> None:
    settings.JOBCENTER_ALERT_ALLOW_LOOPBACK_WEBHOOKS = False
    with pytest.raises(ValidationError):
        validate_webhook_url(url)


@pytest.mark.parametrize("url", INSIDE + AMBIGUOUS + ELSEWHERE)
def test_base_urls_inside_ambiguous_or_elsewhere_are_refused_in_production(
    url: str, settings
) -> None:
    settings.JOBCENTER_ALLOW_LOOPBACK_PROVIDERS = False
    with pytest.raises(ValidationError):
        validate_base_url("klaviyo", url)


def test_an_allowed_network_admits_an_on_premises_proxy(settings) -> None:
    settings.JOBCENTER_ALLOW_LOOPBACK_PROVIDERS = False
    settings.JOBCENTER_EXTRA_PROVIDER_HOSTS = ["10.1.2.3:8443"]
    with pytest.raises(ValidationError, match="private address"):
        validate_base_url("klaviyo", "https://10.1.2.3:8443")
    settings.JOBCENTER_OUTBOUND_ALLOWED_NETWORKS = ["10.1.2.0/24"]
    assert validate_base_url("klaviyo", "https://10.1.2.3:8443/") == "https://10.1.2.3:8443"
    with pytest.raises(ValidationError, match="https"):
        validate_base_url("klaviyo", "http://10.1.2.3:8443")


# --- real sockets --------------------------------------------------------------------


class Server:
    """A raw HTTP server on 127.0.0.1: reads each request's head (and body), then lets
    `answer` write whatever it likes; counts connections and the bytes it got out."""

    def __init__(
        self,
        answer: Callable[[Server, socket.socket], None] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.answer = answer or (lambda server, conn: server.send(conn, ok_answer()))
        self.tls = tls
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.requests: list[bytes] = []
        self.sent = 0
        self.finished = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            body_read = len(head.partition(b"\r\n\r\n")[2])
            while length and body_read < int(length.group(1)):
                body_read += len(conn.recv(65536))
            self.requests.append(head)
            self.answer(self, conn)
            self.finished.set()
        except (OSError, ssl.SSLError):
            pass  # the client hung up: what several tests are after
        finally:
            conn.close()

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        self.sent += len(data)

    def close(self) -> None:
        self.sock.close()


def ok_answer(body: bytes = b'{"ok": true}', status: str = "200 OK") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


@pytest.fixture
def servers() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(*args: object, **kwargs: object) -> Server:
        server = Server(*args, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def client_for(server: Server, policy: OutboundPolicy = DEVELOPMENT) -> HttpClient:
    return HttpClient(
        f"http://127.0.0.1:{server.port}",
        secrets=["pk_secret_value_1234"],
        auth_headers={"Authorization": "Klaviyo-API-Key pk_secret_value_1234"},
        policy=policy,
        retry=ONE_TRY,
        timeout=(5.0, 5.0),
    )


def crafted(url: str, evil_port: int) -> str:
    """`url` with `127.0.0.1:<evil>\\@` before its host: urlsplit reads the same host,
    requests connects to the evil port."""
    return url.replace("://", f"://127.0.0.1:{evil_port}\\@", 1)


def test_a_crafted_next_link_reaches_no_other_listener(sandbox: SandboxClient, servers) -> None:
    evil = servers()
    described = sandbox.create_account("klaviyo", jobs_per_kind=150, frozen=True, rate_limits=False)
    base_url = sandbox.base_url("klaviyo")
    sandbox.control(described["id"], "set_link_base", url=crafted(base_url, evil.port))
    provider = KlaviyoProvider(described["credentials"], base_url=base_url, outbound=DEVELOPMENT)
    with pytest.raises(BadResponse, match="another host"):
        list(provider.iter_pages(CATALOG))
    assert evil.connections == 0 and evil.requests == []
    assert provider.client.counters.requests == 1


def test_a_crafted_saved_cursor_reaches_no_other_listener(sandbox: SandboxClient, servers) -> None:
    evil = servers()
    described = sandbox.create_account("klaviyo", jobs_per_kind=150, frozen=True, rate_limits=False)
    provider = KlaviyoProvider(
        described["credentials"], base_url=sandbox.base_url("klaviyo"), outbound=DEVELOPMENT
    )
    cursor = next(provider.iter_pages(CATALOG)).next_cursor
    assert cursor and "\\" not in cursor
    with pytest.raises(InvalidCursor):
        list(provider.iter_pages(CATALOG, crafted(cursor, evil.port)))
    assert evil.connections == 0 and evil.requests == []


def resolving(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    """Patch name resolution: each name in `answers` gets its addresses in turn (the last
    one repeated), IP literals resolve as ever. Returns the names asked, in order."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def fake(host: object, port: object, *args: object, **kwargs: object) -> list:
        if isinstance(host, bytes):
            host = host.decode()
        if host not in answers:
            return real(host, port, *args, **kwargs)  # type: ignore[arg-type]
        asked.append(host)
        address = answers[host][min(len(asked) - 1, len(answers[host]) - 1)]
        return real(address, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return asked


def test_a_name_resolving_inside_is_refused_before_connecting(monkeypatch, servers) -> None:
    """DNS rebinding: the URL names a host; the name answers a loopback address."""
    listener = servers()
    resolving(monkeypatch, {"api.provider.test": ["127.0.0.1"]})
    client = HttpClient(f"https://api.provider.test:{listener.port}", policy=PRODUCTION)
    with pytest.raises(Refused, match=r"resolves to 127\.0\.0\.1, a loopback address"):
        client.request("GET", "/api/jobs")
    assert listener.connections == 0


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_the_connection_goes_to_the_checked_address_with_tls_for_the_name(
    monkeypatch, servers, tmp_path
) -> None:
    """Resolved once, connected to that address; Host, SNI and certificate stay the name.

    The name's second answer (a rebinding to 10.0.0.5) is never asked for.
    """
    cert, key = self_signed(tmp_path, "hooks.partner.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server_names: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)
    server = servers(tls=context)
    asked = resolving(monkeypatch, {"hooks.partner.test": ["127.0.0.1", "10.0.0.5"]})
    policy = OutboundPolicy(allowed_networks=("127.0.0.0/8",))
    url = f"https://hooks.partner.test:{server.port}/x"
    with OutboundSession(policy) as session:
        session.verify = str(cert)
        response = fetch(session, "GET", url, timeout=(5, 5))
    assert response.status_code == 200 and response.json() == {"ok": True}
    assert asked == ["hooks.partner.test"]
    assert server_names == ["hooks.partner.test"]
    assert f"Host: hooks.partner.test:{server.port}" in server.requests[0].decode()

    other_cert, _ = self_signed(tmp_path, "other.test")  # trusting only another name's
    resolving(monkeypatch, {"hooks.partner.test": ["127.0.0.1"]})
    with OutboundSession(policy) as session:
        session.verify = str(other_cert)
        with pytest.raises(requests.exceptions.SSLError, match=r"(?i)certificate"):
            fetch(session, "GET", url, timeout=(5, 5))


def big_answer(status: str = "200 OK", *, length: bool = True, extra: str = "") -> Callable:
    def answer(server: Server, conn: socket.socket) -> None:
        head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}"
        head += f"Content-Length: {60 * MB}\r\n" if length else "Connection: close\r\n"
        server.send(conn, (head + "\r\n").encode())
        chunk = b"x" * MB
        for _ in range(60):
            server.send(conn, chunk)

    return answer


@pytest.mark.parametrize("length", [True, False], ids=["announced", "unannounced"])
def test_a_60_mb_body_is_refused_without_reading_it(servers, length: bool) -> None:
    server = servers(big_answer(length=length))
    client = client_for(server)
    with pytest.raises(ResponseTooLarge, match="10485760-byte limit"):
        client.request_json("GET", "/api/jobs")
    assert isinstance(ResponseTooLarge("x"), BadResponse)
    server.finished.wait(5)
    assert server.sent < 40 * MB  # the rest stayed at the server: the client hung up


def test_a_redirect_is_neither_followed_nor_read(servers) -> None:
    elsewhere = servers()
    location = f"Location: http://127.0.0.1:{elsewhere.port}/steal\r\n"
    server = servers(big_answer("302 Found", extra=location))
    with pytest.raises(BadResponse, match="redirect"):
        client_for(server).request("GET", "/api/jobs")
    assert elsewhere.connections == 0
    server.finished.wait(5)
    assert server.sent < 40 * MB  # requests' own redirect handling would read it all


def drip(in_head: bool) -> Callable[[Server, socket.socket], None]:
    """A byte a second: of the status line itself, or of a 10-byte body."""

    def answer(server: Server, conn: socket.socket) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n"
        body = b'"abcdefgh"'
        if not in_head:
            server.send(conn, head)
        for byte in (head + body if in_head else body)[:20]:
            server.send(conn, bytes([byte]))
            time.sleep(1)

    return answer


@pytest.mark.parametrize("in_head", [True, False], ids=["headers", "body"])
def test_a_drip_feeding_server_is_cut_at_the_deadline(servers, in_head: bool) -> None:
    server = servers(drip(in_head))
    client = client_for(server, OutboundPolicy(allow_loopback=True, deadline=2.0))
    with pytest.raises(TransientError, match="no complete answer within 2s"):
        client.request_json("GET", "/api/jobs")
    # Each byte came well within the 5 s read timeout; only the deadline ended it.
    assert not server.finished.is_set()


# --- webhooks ------------------------------------------------------------------------


def webhook_delivery(url: str) -> AlertDelivery:
    channel = AlertChannel(name="hook", kind="webhook", url=url)
    channel.set_secret("whsec-test-" + "k" * 24)
    channel.save()
    return AlertDelivery.objects.create(
        channel=channel, channel_kind="webhook", subject="s", text="t", payload={"text": "t"}
    )


@pytest.mark.django_db
def test_a_webhook_error_answer_is_not_stored(servers) -> None:
    page = b"<html>db-internal-7 password=hunter2 stack trace</html>"
    server = servers(
        lambda server, conn: server.send(
            conn, ok_answer(page, "500 Internal Server Error").replace(b"json", b"html")
        )
    )
    delivery = webhook_delivery(f"http://127.0.0.1:{server.port}/hook")
    deliver(delivery.pk)
    delivery.refresh_from_db()
    assert len(server.requests) == 1 and delivery.response_code == 500
    assert delivery.last_error == "HTTP 500 Internal Server Error"
    stored = str(AlertDelivery.objects.filter(pk=delivery.pk).values().get())
    assert "hunter2" not in stored and "db-internal" not in stored


@pytest.mark.django_db
def test_a_webhook_name_resolving_inside_is_refused_on_send(monkeypatch, servers, settings):
    settings.JOBCENTER_ALERT_ALLOW_LOOPBACK_WEBHOOKS = False
    listener = servers()
    url = f"https://hooks.partner.test:{listener.port}/hook"
    assert validate_webhook_url(url) == url  # a name: resolved when sending
    resolving(monkeypatch, {"hooks.partner.test": ["127.0.0.1"]})
    delivery = webhook_delivery(url)
    deliver(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.attempts == 1  # final, not retried
    assert "resolves to 127.0.0.1, a loopback address" in delivery.last_error
    assert listener.connections == 0
