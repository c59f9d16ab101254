"""Channels: where a delivery goes, shown without secrets, and the outcome of one attempt.

Both ways out (this module's email, `webhooks`'s POST) return an `Attempt`, which
`delivery` records on the AlertDelivery row staff read in admin.
"""

from __future__ import annotations

import smtplib
import unicodedata
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMessage

from jobcenter.models import AlertChannel, AlertChannelKind, AlertDelivery


@dataclass
class Attempt:
    """One try at sending: whether it worked, and if not whether trying later may help."""

    ok: bool
    retryable: bool = False
    response_code: int | None = None
    error: str = ""


def one_line(text: str) -> str:
    """`text` on one line without control characters: safe as a mail header's value.

    Account names, job kinds and ids come from staff and providers; a line break there
    made Django refuse the subject (BadHeaderError) and dropped the alert, and could have
    smuggled in a header of its own. Each control character or line separator becomes a
    space, and runs of spaces one.
    """
    spaced = "".join(
        " " if unicodedata.category(char) in ("Cc", "Zl", "Zp") else char for char in text
    )
    return " ".join(spaced.split())


def channel_destination(channel: AlertChannel) -> str:
    """Where a channel sends, safe to display: addresses, or a webhook's origin only.

    A webhook URL's path can be a credential (Slack's incoming webhooks are), so neither
    delivery records nor logs carry it.
    """
    if channel.kind == AlertChannelKind.WEBHOOK:
        parts = urlsplit(channel.url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…" if parts.netloc else ""
    return ", ".join(channel.recipient_list())[:500]


def send_email(delivery: AlertDelivery, channel: AlertChannel) -> Attempt:
    """One email; refused recipients are final, other SMTP and network errors retryable.

    The subject is cleaned again here (`one_line`): a delivery stored before subjects were
    cleaned, or a digest's rule name, must not make Django refuse the header.
    """
    recipients = channel.recipient_list()
    if not recipients:
        return Attempt(ok=False, error="the channel has no email recipients")
    message = EmailMessage(
        subject=one_line(delivery.subject),
        body=delivery.text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=recipients,
        headers={"X-JobCenter-Delivery": str(delivery.pk)},
    )
    try:
        message.send(fail_silently=False)
    except smtplib.SMTPRecipientsRefused as exc:
        return Attempt(ok=False, error=f"recipients refused: {', '.join(exc.recipients)}")
    except (smtplib.SMTPException, OSError) as exc:
        return Attempt(ok=False, retryable=True, error=f"{type(exc).__name__}: {exc}"[:500])
    return Attempt(ok=True)
