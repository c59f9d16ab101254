"""How the admin shows a value: badges, times, durations, progress, JSON.

One home for these so the job list, the job page, the account page and the dashboard
say the same thing the same way. Every badge carries a symbol and a word (never colour
alone); every time is in the staff member's zone with UTC in its hover text.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from django.utils import timezone
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

STATUS_SYMBOLS = {
    "queued": "◷",
    "running": "▶",
    "succeeded": "✔",
    "partially_failed": "◐",
    "failed": "✖",
    "cancelled": "⊘",
    "expired": "◌",
    "unknown": "?",
    # Account and sync-run states share the badge styles.
    "new": "○",
    "ok": "✔",
    "failing": "✖",
    "partial": "◐",
    "skipped": "↷",
    "deferred": "◷",
}
# The style each state borrows, so there are only a handful of tested colour pairs.
BADGE_STYLE = {
    "new": "queued",
    "ok": "succeeded",
    "failing": "failed",
    "partial": "partially_failed",
}
BADGE_STYLE |= {"skipped": "cancelled", "deferred": "queued"}
LABELS = {"partially_failed": "partly failed", "ok": "syncing", "new": "not synced yet"}


def status_label(status: str) -> str:
    return LABELS.get(status, status.replace("_", " "))


@lru_cache(maxsize=256)
def status_badge(status: str, label: str | None = None) -> SafeString:
    """A badge with a symbol and the word, so colour is never the only signal.

    Cached: a list page shows a handful of distinct badges many times over.
    """
    text = label or status_label(status)
    style = BADGE_STYLE.get(status, status)
    return format_html(
        '<span class="jc-badge jc-{}"><span aria-hidden="true">{}</span> {}</span>',
        style,
        STATUS_SYMBOLS.get(status, "•"),
        text,
    )


def utc_text(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _time_tag(value: datetime, title: str, text: str) -> SafeString:
    # Plain formatting, not format_html: list pages build a few hundred of these, and
    # every part is escaped here (the ISO time is digits and punctuation only).
    return mark_safe(  # noqa: S308
        f'<time datetime="{value.astimezone(UTC).isoformat()}" title="{escape(title)}">'
        f"{escape(text)}</time>"
    )


def when(value: datetime | None) -> SafeString | str:
    """The time in the active (staff) zone; UTC in the hover text and machine attribute."""
    if value is None:
        return "—"
    local = timezone.localtime(value)
    return _time_tag(value, utc_text(value), local.strftime("%Y-%m-%d %H:%M %Z"))


def relative_text(value: datetime, now: datetime) -> str:
    """'12 minutes ago' or 'in 3 hours', in the largest whole unit."""
    seconds = int((now - value).total_seconds())
    future, seconds = seconds < 0, abs(seconds)
    count, unit = seconds, "second"
    for size, name in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            count, unit = seconds // size, name
            break
    text = f"{count} {unit}{'' if count == 1 else 's'}"
    return f"in {text}" if future else f"{text} ago"


def ago(value: datetime | None, now: datetime | None = None) -> SafeString | str:
    """'5 minutes ago' (or 'in 5 minutes'), with the exact local and UTC times on hover."""
    if value is None:
        return "—"
    local = timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")
    return _time_tag(
        value, f"{local} ({utc_text(value)})", relative_text(value, now or timezone.now())
    )


def duration_text(seconds: float | None) -> str:
    """A short human duration: '45 s', '12 min', '3 h 5 min', '2 d 4 h'."""
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def job_duration(
    started: datetime | None,
    ended: datetime | None,
    is_terminal: bool,
    now: datetime | None = None,
) -> str:
    """How long a job took, or has been running so far ('running 3 h').

    `started` is the provider's start time, or its creation time when the provider
    reports none, so the figure includes any wait in the provider's queue.
    """
    if started is None:
        return "—"
    if ended is not None:
        return duration_text((ended - started).total_seconds())
    if is_terminal:
        return "—"
    return "running " + duration_text(((now or timezone.now()) - started).total_seconds())


def progress(total: int | None, completed: int | None, failed: int | None) -> SafeString | str:
    """'40 of 100', as a bar where the provider gives counts; failures named in words."""
    if total is None:
        return "—"
    done = completed or 0
    text = f"{done:,} of {total:,}"
    failures = f"{failed:,} failed" if failed else ""
    if total <= 0:
        return f"{text} ({failures})" if failures else text
    return format_html(
        '<span class="jc-progress"><progress max="{}" value="{}" aria-label="{}"></progress>'
        ' <span>{}</span><span class="jc-sub">{}</span></span>',
        total,
        min(done, total),
        f"{done:,} of {total:,} done",
        text,
        failures,
    )


def pretty_json(value: Any) -> SafeString:
    return format_html(
        '<pre class="jc-json" tabindex="0">{}</pre>',
        json.dumps(value, indent=2, sort_keys=True, default=str),
    )


def signed(delta: int | None) -> str:
    """'+25', '\u22123' (a true minus sign) or '' for a count change."""
    if not delta:
        return ""
    return f"+{delta:,}" if delta > 0 else f"\u2212{-delta:,}"


def minutes_text(minutes: int) -> str:
    return duration_text(timedelta(minutes=minutes).total_seconds())
