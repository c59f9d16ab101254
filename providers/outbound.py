"""The one outbound policy: which URLs and addresses Job Center may connect to.

Provider requests (base URLs, every next link and saved cursor a client follows) and
alert webhooks both ask here, so "no key leaves its host, no address inside is
reachable" has one home:

- `check_url` reads a URL the way urllib3 will connect, and refuses what parsers could
  read two ways (userinfo, backslashes, whitespace, percent signs or non-ASCII in the
  host, numeric shorthands like `127.1` or `2130706433`, trailing dots), plain http
  outside development, hosts outside the allowed origins, and literal addresses inside;
- `resolve` looks a name up and refuses it when any of its addresses is inside
  (loopback, private, link-local, unique-local, multicast, reserved, unspecified,
  IPv4-mapped, NAT64, 6to4, Teredo) unless the policy allows it.

`providers.transport` enforces it on the wire: it connects to the address `resolve`
checked, follows no redirect, and bounds each request's time and body size. Pure Python
like the rest of `providers/`: Job Center builds the `OutboundPolicy` from its settings
and hands it in.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from providers.errors import BadResponse

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORTS = {"http": 80, "https": 443}
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
DEFAULT_DEADLINE = 60.0
# Prefixes that carry an IPv4 address inside an IPv6 one: a way around the IPv4 checks.
EMBEDDING_NETWORKS = {
    ipaddress.ip_network("64:ff9b::/96"): "a NAT64 address",
    ipaddress.ip_network("64:ff9b:1::/48"): "a NAT64 address",
    ipaddress.ip_network("2002::/16"): "a 6to4 address",
    ipaddress.ip_network("2001::/32"): "a Teredo address",
}
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")


class Refused(BadResponse):
    """The policy refuses this URL or address: final, never retried, nothing was sent."""


class Unresolvable(requests.ConnectionError):
    """The name does not resolve now: a network fault, worth trying again later."""


@dataclass(frozen=True)
class OutboundPolicy:
    """Which addresses a request may reach, and how long and large it may be.

    `allow_loopback` is for development and tests (the sandbox and local receivers run on
    127.0.0.1): it also allows plain http, to loopback only. `allowed_networks` admits
    chosen inside networks, an on-premises proxy say (https still).
    """

    allow_loopback: bool = False
    allowed_networks: tuple[IPNetwork, ...] = field(default=())
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    deadline: float = DEFAULT_DEADLINE

    def __post_init__(self) -> None:
        networks = tuple(ipaddress.ip_network(n, strict=False) for n in self.allowed_networks)
        object.__setattr__(self, "allowed_networks", networks)

    @classmethod
    def development(cls) -> OutboundPolicy:
        """Loopback (and plain http to it) allowed: what tests use against the sandbox."""
        return cls(allow_loopback=True)


class Target(NamedTuple):
    """Where a URL connects: lower-case scheme and host (no brackets), port, literal IP."""

    scheme: str
    host: str
    port: int
    ip: IPAddress | None

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.ip is not None:
            return self.ip.is_loopback
        return self.host == "localhost" or self.host.endswith(".localhost")


def parse_target(url: str) -> Target:
    """Where urllib3 will connect for `url`; Refused when parsers could read it two ways."""
    if not isinstance(url, str) or not url:
        raise Refused("no URL given")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise Refused("the URL contains whitespace or control characters")
    if "\\" in url:
        raise Refused("the URL contains a backslash")
    scheme, sep, rest = url.partition("://")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if not sep or scheme.lower() not in DEFAULT_PORTS:
        raise Refused("only http and https URLs are allowed")
    if "@" in authority:
        raise Refused("the URL must not carry credentials (a user or password)")
    if "%" in authority or not authority.isascii():
        raise Refused(
            "the host must be plain ASCII (an international name in its xn-- form), "
            "without percent-escapes"
        )
    if authority.endswith(":"):
        raise Refused("the URL has an empty port")
    try:
        parsed = parse_url(url)
    except LocationParseError as exc:
        raise Refused(f"the URL cannot be read: {exc}") from None
    host = (parsed.host or "").lower()
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host:
        raise Refused("the URL has no host")
    port = parsed.port or DEFAULT_PORTS[scheme.lower()]
    target = Target(scheme.lower(), host, port, _literal_ip(host))
    if _as_requests_reads_it(url) != target.origin or _as_urlsplit_reads_it(url) != (target.origin):
        raise Refused("the URL reads differently to different parsers")
    return target


def _literal_ip(host: str) -> IPAddress | None:
    """The host as an IP address, None for a name; Refused for anything in between."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    labels = host.split(".")
    if host.endswith("."):
        raise Refused(f"the host {host} ends with a dot")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        raise Refused(f"{host} is not a plain dotted address (like 192.0.2.1) or a name")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise Refused(f"{host} is not a valid host name")
    return None


def _as_requests_reads_it(url: str) -> tuple[str, str, int]:
    prepared = requests.PreparedRequest()
    try:
        prepared.prepare_url(url, None)
        parsed = parse_url(prepared.url or "")
    except (requests.RequestException, LocationParseError, ValueError):
        raise Refused("the URL cannot be read") from None
    scheme = (parsed.scheme or "").lower()
    host = (parsed.host or "").lower().strip("[]")
    return scheme, host, parsed.port or DEFAULT_PORTS.get(scheme, 0)


def _as_urlsplit_reads_it(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise Refused("the URL has an invalid port") from None
    scheme = parts.scheme.lower()
    return scheme, parts.hostname or "", port or DEFAULT_PORTS.get(scheme, 0)


def address_refusal(ip: IPAddress, policy: OutboundPolicy) -> str | None:
    """Why `ip` may not be reached under `policy` (a phrase), or None when it may."""
    if any(ip.version == net.version and ip in net for net in policy.allowed_networks):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return "an IPv4-mapped address"
        for network, name in EMBEDDING_NETWORKS.items():
            if ip in network:
                return name
        if ip.is_site_local:
            return "a site-local address"
    if ip.is_loopback:
        return None if policy.allow_loopback else "a loopback address (only in development)"
    checks = (
        (ip.is_unspecified, "the unspecified address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip.version == 6 and ip in ipaddress.ip_network("fc00::/7"), "a unique-local address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "not a public address"),
    )
    return next((why for refused, why in checks if refused), None)


def check_url(
    url: str,
    policy: OutboundPolicy,
    *,
    origins: Collection[tuple[str, str, int]] | None = None,
) -> Target:
    """The URL's target if the policy allows it without resolving names; else Refused.

    `origins`, when given, are the only (scheme, host, port) it may point at. A name is
    resolved later, at connect time (`providers.transport`), so a check cannot go stale.
    """
    target = parse_target(url)
    if target.is_loopback and target.ip is None and not policy.allow_loopback:
        raise Refused(f"{target.host} is a loopback name (only in development)")
    if target.ip is not None:
        why = address_refusal(target.ip, policy)
        if why:
            raise Refused(f"{target.host} is {why}")
    if target.scheme == "http" and not (policy.allow_loopback and target.is_loopback):
        raise Refused("only https URLs are allowed (plain http only to loopback, in development)")
    if origins is not None and target.origin not in origins:
        raise Refused(f"{target.host}:{target.port} ({target.scheme}) is not an allowed host")
    return target


def resolve(target: Target, policy: OutboundPolicy) -> IPAddress:
    """The address to connect to: every address the name has must pass the policy."""
    if target.ip is not None:
        addresses = [target.ip]
    else:
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise Unresolvable(f"{target.host} does not resolve: {exc}") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]
    for address in addresses:
        why = address_refusal(address, policy)
        if why:
            raise Refused(f"{target.host} resolves to {address}, {why}; not connected")
    if not addresses:
        raise Unresolvable(f"{target.host} has no address")
    return addresses[0]
