"""Credentials out of every text Job Center keeps, shows or logs: redact first, cut after.

A text is cut only after it is redacted (`redact_then_cut`): cut first, a credential
that straddles the cut leaves its prefix behind, where redaction no longer recognises
it. Redaction knows the forms a credential takes when an answer echoes it back: as is,
URL-encoded (a path, a query or a form body), JSON-escaped (once or inside a JSON
string), as a Python repr, HTML-escaped, in hex, and inside base64 (HTTP Basic
authentication of `user:secret`, at any offset). Matching ignores case, so percent
escapes and hex in either case are caught too.

Pure Python, no Django: the HTTP client, the providers and Job Center's bookkeeping all
call these same functions.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import quote, quote_plus

REDACTED = "[redacted]"
# Shorter values are too common to hunt for: a three-letter "key" would redact every
# word that holds those letters.
MIN_SECRET_CHARS = 4
# How much of an answer an error text keeps.
EXCERPT_CHARS = 300
# The base64 of a secret inside a longer base64 text keeps at least this many characters
# once the ones its neighbours change are set aside; shorter is too common to hunt for.
MIN_BASE64_CHARS = 8


def _base64_forms(raw: bytes) -> set[str]:
    """The part of base64 that a secret always encodes to, at each of the three offsets.

    `Basic base64(user:secret)` places the secret at any byte offset: for each offset,
    the characters that encode only the secret's own bytes are the same whatever
    surrounds it (the first and last four-character groups may mix in neighbours).
    """
    forms: set[str] = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode().rstrip("=")
        start = 4 if offset else 0
        whole_groups = (offset + len(raw)) // 3 * 4
        core = encoded[start:whole_groups]
        if len(core) >= MIN_BASE64_CHARS:
            forms.add(core)
            forms.add(core.replace("+", "-").replace("/", "_"))  # the URL-safe alphabet
    return forms


def secret_forms(secret: str) -> frozenset[str]:
    """Every form of `secret` redaction hunts for (empty for a too short secret)."""
    if len(secret) < MIN_SECRET_CHARS:
        return frozenset()
    json_escaped = json.dumps(secret)[1:-1]
    forms = {
        secret,
        quote(secret, safe=""),
        quote(secret),  # "/" kept, as in a path
        quote_plus(secret),
        json_escaped,
        json.dumps(secret, ensure_ascii=False)[1:-1],
        json.dumps(json_escaped)[1:-1],  # JSON inside a JSON string
        repr(secret)[1:-1],
        html.escape(secret),
        secret.encode().hex(),
        *_base64_forms(secret.encode()),
    }
    return frozenset(form for form in forms if len(form) >= MIN_SECRET_CHARS)


@lru_cache(maxsize=256)
def _matcher(secrets: frozenset[str]) -> tuple[re.Pattern[str] | None, int]:
    """One pattern for every form of every secret, longest first; and the longest form."""
    forms = sorted({form for secret in secrets for form in secret_forms(secret)}, key=len)
    if not forms:
        return None, 0
    alternatives = "|".join(re.escape(form) for form in reversed(forms))
    return re.compile(alternatives, re.IGNORECASE), len(forms[-1])


def _compiled(secrets: Iterable[str]) -> tuple[re.Pattern[str] | None, int]:
    return _matcher(frozenset(s for s in secrets if s and len(s) >= MIN_SECRET_CHARS))


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every form of every secret replaced by REDACTED."""
    pattern, _ = _compiled(secrets)
    return text if pattern is None else pattern.sub(REDACTED, text)


def redact_then_cut(text: str, secrets: Iterable[str], limit: int) -> str:
    """The first `limit` characters of the redacted `text`: the only safe way to shorten.

    Only a bounded head of `text` is redacted (a 10 MB body costs what a short one
    does): each redaction turns at most `longest` characters into len(REDACTED), so the
    first `limit` characters of the result come from fewer than
    limit + (limit // len(REDACTED) + 1) * longest characters of `text`, and one more
    whole form past them is enough for every match that reaches into the result to be
    found whole.
    """
    pattern, longest = _compiled(secrets)
    if pattern is None:
        return text[:limit]
    head = text[: limit + (limit // len(REDACTED) + 2) * longest]
    return pattern.sub(REDACTED, head)[:limit]


def as_text(value: object) -> str:
    """A value from a provider's answer as text for an error excerpt: JSON where it can.

    Whole, not cut: whoever shows it redacts, then cuts (`redact_then_cut`).
    """
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


__all__ = [
    "EXCERPT_CHARS",
    "MIN_SECRET_CHARS",
    "REDACTED",
    "as_text",
    "redact",
    "redact_then_cut",
    "secret_forms",
]
