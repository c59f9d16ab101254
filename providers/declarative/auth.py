"""How a declared provider's requests carry its credentials.

Static schemes (a header template, HTTP basic) become the client's auth headers once.
OAuth 2 client credentials asks the token endpoint for a token and keeps it until
shortly before it expires, in a cache of this process shared by every provider instance
of the same client (the same token URL, client id and secret): consecutive syncs, the
hot lane and "test connection" reuse one token instead of asking for one each. A 401
renews it once: when another instance already renewed the refused token, its successor is
used without asking again.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from providers.declarative.fields import read, render
from providers.errors import AuthError, BadResponse, RequestRejected

if TYPE_CHECKING:
    from providers.http import HttpClient

DEFAULT_LIFETIME = 3600.0
DEFAULT_MARGIN = 60.0


def static_headers(auth: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, str]:
    """The headers a header or basic scheme sends on every authenticated request."""
    if auth["kind"] == "header":
        return {name: render(text, values) for name, text in auth["headers"].items()}
    if auth["kind"] == "basic":
        pair = f"{render(auth['username'], values)}:{render(auth['password'], values)}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    return {}


@dataclass
class CachedToken:
    token: str
    renew_at: float  # time.monotonic() after which it is renewed


# (token URL, client id, digest of the secret) -> the client's current token
_TOKENS: dict[tuple[str, str, str], CachedToken] = {}
_TOKENS_LOCK = threading.Lock()
# One lock per client, so two syncs of one client ask for one token, not two.
_CLIENT_LOCKS: dict[tuple[str, str, str], threading.Lock] = {}


def forget_tokens() -> None:
    """Empty the token cache (tests; a deployment never needs to)."""
    with _TOKENS_LOCK:
        _TOKENS.clear()


class ClientCredentials:
    """One provider instance's view of its client's shared token."""

    def __init__(
        self, auth: Mapping[str, Any], values: Mapping[str, str], client: HttpClient, label: str
    ) -> None:
        self.auth = auth
        self.client = client
        self.label = label
        self.client_id = render(auth["client_id"], values)
        self.client_secret = render(auth["client_secret"], values)
        self.token_path = render(auth["token_path"], values)
        secret_digest = hashlib.sha256(self.client_secret.encode()).hexdigest()
        self.key = (client.url_for(self.token_path), self.client_id, secret_digest)
        with _TOKENS_LOCK:
            self.lock = _CLIENT_LOCKS.setdefault(self.key, threading.Lock())
        self.token: str | None = None
        self.token_requests = 0  # made by this instance

    # -- the token ------------------------------------------------------------------------
    def ensure(self) -> None:
        """A live token on the client's headers: the shared one, or a new one."""
        with self.lock:
            cached = _TOKENS.get(self.key)
            if cached is None or time.monotonic() >= cached.renew_at:
                cached = self._request_token()
            self._use(cached.token)

    def renew(self, *, refused: str | None = None) -> None:
        """A new token: after a 401 of the token `refused` (unless another instance has
        already replaced it), or always when `refused` is None ("test connection")."""
        with self.lock:
            cached = _TOKENS.get(self.key)
            if refused is None or cached is None or cached.token == refused:
                cached = self._request_token()
            self._use(cached.token)

    def _use(self, token: str) -> None:
        self.token = token
        self.client.add_secret(token)
        header = self.auth.get("header", "Bearer {token}")
        self.client.auth_headers["Authorization"] = render(header, {"token": token})

    def _request_token(self) -> CachedToken:
        """Ask the token endpoint (under the client lock); refused credentials are an
        AuthError, an answer without a token a BadResponse."""
        _TOKENS.pop(self.key, None)
        self.client.auth_headers.pop("Authorization", None)
        self.token_requests += 1
        form = {"grant_type": "client_credentials", **(self.auth.get("form") or {})}
        headers: dict[str, str] = {}
        if self.auth.get("client_auth", "form") == "basic":
            pair = f"{self.client_id}:{self.client_secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        else:
            form.update(client_id=self.client_id, client_secret=self.client_secret)
        if self.auth.get("scope"):
            form["scope"] = self.auth["scope"]
        try:
            body = self.client.request_json(
                "POST", self.token_path, data=form, headers=headers, authenticated=False
            )
        except RequestRejected as exc:  # 400/422: the key itself is malformed or unknown
            raise AuthError(
                f"authentication failed: {exc.message}", status_code=exc.status_code
            ) from None
        token = read(self.auth.get("token", "access_token"), body)
        if not isinstance(token, str) or not token:
            raise BadResponse(
                f"{self.label}'s token answer has no token", excerpt=self.client.excerpt(body)
            )
        self.client.add_secret(token)
        lifetime = self._lifetime(body)
        margin = min(float(self.auth.get("renew_margin", DEFAULT_MARGIN)), lifetime / 10)
        cached = CachedToken(token, time.monotonic() + max(0.0, lifetime - margin))
        _TOKENS[self.key] = cached
        return cached

    def _lifetime(self, body: Any) -> float:
        """Seconds the token lives: expires_in, else expires_at (epoch) against our clock,
        else the definition's default."""
        expires_in = read(self.auth.get("expires_in", "expires_in"), body)
        if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
            return max(0.0, float(expires_in))
        expires_at = read(self.auth.get("expires_at"), body)
        if isinstance(expires_at, int | float) and not isinstance(expires_at, bool):
            return max(0.0, float(expires_at) - time.time())
        return float(self.auth.get("default_lifetime", DEFAULT_LIFETIME))
