"""The one way providers read a time from a provider's JSON.

The policy, the same for every provider:

- A missing time (absent, JSON null or "") is None: most of a job's times are optional
  (not started yet, not finished yet).
- A time is ISO 8601 text, as `datetime.fromisoformat` reads it (RFC 3339 included, with
  `T` or a space, a `Z`, `z` or `±hh:mm` offset). More than six fraction digits (protobuf
  JSON writes nanoseconds) are cut to microseconds. The result is an aware datetime in UTC.
- A time without an offset is UTC only when the provider's documentation shows its
  times that way (the provider class says so with `naive_times_are_utc`); for any other
  provider it is refused, since guessing a zone would shift the job by hours unnoticed.
- Anything else (not text, not ISO 8601, a naive time not known to be UTC) raises
  `BadTime`, a `BadResponse`: the answer is not what the API documents, and the sync
  reports it as it reports any other malformed answer instead of storing a wrong time.
  Its excerpt is the value whole: whoever shows it redacts, then cuts
  (`providers.redaction.redact_then_cut`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from providers.errors import BadTime

# More than six fraction digits, then whatever follows (an offset or nothing).
_LONG_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_time(value: object, what: str, *, naive_is_utc: bool = False) -> datetime | None:
    """`value` as an aware UTC datetime, None when missing; BadTime when unreadable.

    `what` names the field for the error, e.g. "Klaviyo's created_at". `naive_is_utc`
    is the provider's `naive_times_are_utc`: whether its documentation shows times
    without an offset as UTC.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadTime(f"{what} is not a time", excerpt=repr(value))
    text = _LONG_FRACTION.sub(r"\1", value.strip())
    if text[-1:] == "z":
        text = text[:-1] + "Z"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadTime(f"{what} is not an ISO 8601 time", excerpt=value) from None
    if parsed.tzinfo is None:
        if not naive_is_utc:
            raise BadTime(
                f"{what} has no UTC offset, and the provider does not document its zone",
                excerpt=value,
            )
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


__all__ = ["BadTime", "parse_time"]
