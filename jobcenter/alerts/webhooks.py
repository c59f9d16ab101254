"""Webhook channels: the signed POST, the channel's secret as receivers know it, allowed URLs.

Webhook requests: `POST` of JSON `{"text": "...", "event": {...}}` (`text` is what Slack
shows; `event` the structured alert, or for a digest `{"type": "digest", "events": [...]}`),
signed the Standard Webhooks way (https://www.standardwebhooks.com), so a receiver
verifies with the `standardwebhooks` library or any other implementation of the spec:

- `webhook-id`: `msg_` + the delivery's `message_id` (hex), the same on every retry: the
  receiver's dedupe key;
- `webhook-timestamp`: Unix seconds when the attempt was made (receivers refuse it more
  than five minutes off, so a captured request cannot be replayed later);
- `webhook-signature`: `v1,` + base64 HMAC-SHA256 of `<id>.<timestamp>.<raw body>`, keyed
  with the channel's secret as bytes (`signing_key`). The id is signed too, so a captured
  request cannot be replayed under another id past the receiver's dedupe.

The old `X-JobCenter-Timestamp`/`-Signature`/`-Delivery` headers are no longer sent.
"""

from __future__ import annotations

import base64
import binascii
import http
import json
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from standardwebhooks.webhooks import Webhook

from jobcenter.accounts import outbound_policy, refusal_message
from jobcenter.alerts.channels import Attempt
from jobcenter.crypto import CredentialsUnreadable
from jobcenter.models import AlertChannel, AlertDelivery
from providers.outbound import DEFAULT_PORTS, OutboundPolicy, Refused, check_url
from providers.transport import DeadlineExceeded, OutboundSession, fetch

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
MIN_KEY_BYTES = 16


def signing_key(secret: str) -> bytes:
    """The HMAC key of a channel's secret.

    A secret typed as `whsec_<base64>` (the Standard Webhooks form) is that base64's bytes;
    any other secret is its own UTF-8 bytes, so secrets stored before the Standard Webhooks
    signature keep their meaning. Raises ValueError for a `whsec_` secret that is not
    base64 of at least 16 bytes.
    """
    if not secret.startswith(SECRET_PREFIX):
        return secret.encode()
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        key = b""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"A secret starting with {SECRET_PREFIX} must be {SECRET_PREFIX} followed by the "
            f"base64 of at least {MIN_KEY_BYTES} bytes."
        )
    return key


def webhook_id(delivery: AlertDelivery) -> str:
    return f"msg_{delivery.message_id.hex}"


def signature_headers(delivery: AlertDelivery, secret: str, body: bytes) -> dict[str, str]:
    """`webhook-id`, `webhook-timestamp` (now) and `webhook-signature` of one attempt."""
    message_id = webhook_id(delivery)
    sent_at = datetime.fromtimestamp(int(time.time()), UTC)
    signature = Webhook(signing_key(secret)).sign(message_id, sent_at, body.decode())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signature,
    }


def webhook_policy() -> OutboundPolicy:
    """Loopback (and plain http) only while JOBCENTER_ALERT_ALLOW_LOOPBACK_WEBHOOKS is on."""
    return outbound_policy(allow_loopback=settings.JOBCENTER_ALERT_ALLOW_LOOPBACK_WEBHOOKS)


def validate_webhook_url(url: str) -> str:
    """An https URL that reads one way only and passes the outbound policy: no
    credentials in it, no literal address inside the network, plain http and loopback
    only in development. Checked on save and again on every send, when the name is also
    resolved and its address checked (`providers.transport`)."""
    url = (url or "").strip()
    if "://" not in url or urlsplit(url).scheme.lower() not in DEFAULT_PORTS:
        raise ValidationError("Enter a full https URL.", code="invalid")
    try:
        check_url(url, webhook_policy())
    except Refused as exc:
        raise ValidationError(refusal_message(exc), code="refused") from None
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
    try:
        signed = signature_headers(delivery, secret, body)
    except ValueError as exc:
        return Attempt(ok=False, error=f"signing secret unusable: {exc}")
    headers = {"Content-Type": "application/json", "User-Agent": "JobCenter-Alerts/1", **signed}
    timeout = settings.JOBCENTER_ALERT_WEBHOOK_TIMEOUT
    try:
        # The answer's body is never read: only its status matters, and an internal
        # service's page must not end up where staff read delivery errors.
        with OutboundSession(webhook_policy()) as session:
            response = fetch(
                session,
                "POST",
                url,
                data=body,
                headers=headers,
                timeout=(timeout, timeout),
                read_body=False,
            )
    except Refused as exc:  # the name resolves inside the network: final
        return Attempt(ok=False, error=refusal_message(exc))
    except DeadlineExceeded as exc:
        return Attempt(ok=False, retryable=True, error=str(exc))
    except requests.Timeout:
        return Attempt(ok=False, retryable=True, error=f"timed out after {timeout:g}s")
    except requests.RequestException as exc:
        error = without_url(f"{type(exc).__name__}: {exc}", url)
        return Attempt(ok=False, retryable=True, error=error[:500])
    code = response.status_code
    if 200 <= code < 300:
        return Attempt(ok=True, response_code=code)
    return Attempt(
        ok=False,
        retryable=code >= 500 or code in (408, 429),
        response_code=code,
        error=status_text(code),
    )


def status_text(code: int) -> str:
    """`HTTP 503 Service Unavailable`: the status and its standard phrase, nothing the
    receiver wrote (neither its body nor its own reason phrase)."""
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = ""
    text = f"HTTP {code} {phrase}".rstrip()
    return text + " (redirects are not followed)" if 300 <= code < 400 else text
