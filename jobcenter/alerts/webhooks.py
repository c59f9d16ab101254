"""Webhook channels: the signed POST, how a receiver checks it, which URLs are allowed.

Webhook requests: `POST` of JSON `{"text": "...", "event": {...}}` (`text` is what Slack
shows; `event` the structured alert, or for a digest `{"type": "digest", "events": [...]}`)
with these headers:

- `X-JobCenter-Timestamp`: Unix seconds when the attempt was made;
- `X-JobCenter-Signature`: `sha256=` + hex HMAC-SHA256, keyed with the channel's secret,
  of the bytes `<timestamp>.<raw body>`. A receiver recomputes it over the raw body it
  received, compares in constant time (`verify_signature`), and refuses timestamps more
  than five minutes old, so a captured request cannot be replayed later;
- `X-JobCenter-Delivery`: the delivery id, the same on every retry (a dedupe key).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.exceptions import ValidationError

from jobcenter.alerts.channels import Attempt
from jobcenter.crypto import CredentialsUnreadable
from jobcenter.models import AlertChannel, AlertDelivery
from providers.hosts import is_loopback

SIGNATURE_TOLERANCE_SECONDS = 300


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`: the signature header's value."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float | None = None,
    tolerance: float = SIGNATURE_TOLERANCE_SECONDS,
) -> bool:
    """What a receiver does: recompute the signature and refuse stale timestamps."""
    try:
        age = (time.time() if now is None else now) - int(timestamp)
    except ValueError:
        return False
    if abs(age) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def validate_webhook_url(url: str) -> str:
    """An http(s) URL without credentials; loopback only in development."""
    url = (url or "").strip()
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise ValidationError("Enter a full http(s) URL.", code="invalid")
    if parts.username or parts.password:
        raise ValidationError("The URL must not carry a user or password.", code="invalid")
    if is_loopback(host) and not settings.JOBCENTER_ALERT_ALLOW_LOOPBACK_WEBHOOKS:
        raise ValidationError(
            "Loopback webhook URLs are allowed only in development "
            "(JOBCENTER_ALERT_ALLOW_LOOPBACK_WEBHOOKS).",
            code="loopback",
        )
    return url


def without_url(text: str, url: str) -> str:
    """`text` with the webhook URL's path and query removed (requests' errors quote them)."""
    parts = urlsplit(url)
    for part in (url, parts.path + ("?" + parts.query if parts.query else ""), parts.path):
        if len(part) > 1:
            text = text.replace(part, "/…")
    return text


def send_webhook(delivery: AlertDelivery, channel: AlertChannel) -> Attempt:
    """One signed POST; timeouts, connection errors, 5xx, 408 and 429 are retryable."""
    try:
        url = validate_webhook_url(channel.url)
        secret = channel.get_secret()
    except ValidationError as exc:
        return Attempt(ok=False, error="; ".join(exc.messages))
    except CredentialsUnreadable as exc:
        return Attempt(ok=False, error=f"signing secret unreadable: {exc}")
    if not secret:
        return Attempt(ok=False, error="the channel has no signing secret")
    body = json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "JobCenter-Alerts/1",
        "X-JobCenter-Delivery": str(delivery.pk),
        "X-JobCenter-Timestamp": timestamp,
        "X-JobCenter-Signature": sign(secret, timestamp, body),
    }
    timeout = settings.JOBCENTER_ALERT_WEBHOOK_TIMEOUT
    try:
        response = requests.post(
            url, data=body, headers=headers, timeout=(timeout, timeout), allow_redirects=False
        )
    except requests.Timeout:
        return Attempt(ok=False, retryable=True, error=f"timed out after {timeout:g}s")
    except requests.RequestException as exc:
        error = without_url(f"{type(exc).__name__}: {exc}", url)
        return Attempt(ok=False, retryable=True, error=error[:500])
    code = response.status_code
    if 200 <= code < 300:
        return Attempt(ok=True, response_code=code)
    excerpt = " ".join(response.text[:200].split())
    return Attempt(
        ok=False,
        retryable=code >= 500 or code in (408, 429),
        response_code=code,
        error=f"HTTP {code}" + (f": {excerpt}" if excerpt else ""),
    )
