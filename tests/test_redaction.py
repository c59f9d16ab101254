"""Redaction: every form of a credential, always before any cut, in what a sync stores.

The end-to-end tests point an account at a small answering server on 127.0.0.1 (real
HTTP): the sandbox never echoes a key back, which is exactly what these tests need.
"""

from __future__ import annotations

import base64
import html
import json
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, quote_plus

import pytest

from jobcenter.accounts import create_account
from jobcenter.models import ProviderAccount
from jobcenter.sync.engine import sync_account
from providers.redaction import REDACTED, redact, redact_then_cut, secret_forms

# Characters that URL-encoding, JSON escaping and HTML escaping all change.
KEY = 'pk_live/9f+Q="ab\\cd&ef' + "0123456789abcdef"


def pieces(secret: str, size: int = 8) -> list[str]:
    """Every run of `size` characters of the secret: none may be left in a redacted text."""
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


def assert_no_piece(secret: str, text: str) -> None:
    for piece in pieces(secret):
        assert piece not in text, f"{piece!r} of the secret is in {text!r}"


# --- the functions --------------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [
        KEY,
        quote(KEY, safe=""),
        quote(KEY),
        quote(KEY, safe="").lower(),
        quote_plus(KEY),
        json.dumps(KEY)[1:-1],
        json.dumps(json.dumps(KEY))[1:-1],
        repr(KEY)[1:-1],
        f'"{KEY}"',
        f"'{KEY}'",
        KEY.encode().hex(),
        KEY.encode().hex().upper(),
    ],
    ids=[
        "as-is",
        "quote",
        "quote-path",
        "quote-lowercase",
        "quote_plus",
        "json",
        "json-in-json",
        "repr",
        "double-quoted",
        "single-quoted",
        "hex",
        "HEX",
    ],
)
def test_every_form_of_the_key_is_redacted(form: str) -> None:
    text = f"the upstream said: {form} (and more)"
    out = redact(text, [KEY])
    assert REDACTED in out
    assert out.startswith("the upstream said: ")
    assert out.endswith(" (and more)")
    assert form.strip("\"'") not in out


def test_html_escaped_and_non_ascii_keys_are_redacted() -> None:
    secret = "clé-secrète-<42>&x"
    for form in (html.escape(secret), json.dumps(secret)[1:-1], quote(secret, safe="")):
        assert redact(f"[{form}]", [secret]) == f"[{REDACTED}]", form


@pytest.mark.parametrize("user", ["", "u", "us", "use", "client-id-1234"])
def test_basic_auth_base64_of_user_and_key_is_redacted_at_any_offset(user: str) -> None:
    for secret_is_user in (False, True):
        pair = f"{KEY}:password" if secret_is_user else f"{user}:{KEY}"
        encoded = base64.b64encode(pair.encode()).decode()
        out = redact(f"Authorization: Basic {encoded}", [KEY])
        assert REDACTED in out
        # What is left around the redaction encodes at most the two bytes next to it.
        left = out.removeprefix("Authorization: Basic ").replace(REDACTED, "")
        assert len(left) <= len(encoded) - len(KEY) * 4 // 3 + 8


def test_short_secrets_redact_nothing_and_forms_are_never_shorter_than_four() -> None:
    assert redact("a banana and a bandana", ["a", "an", "ana"]) == "a banana and a bandana"
    assert secret_forms("abc") == frozenset()
    assert all(len(form) >= 4 for form in secret_forms("abcd"))


def test_a_secret_straddling_the_cut_leaves_nothing_behind() -> None:
    for start in range(290, 301):
        text = "x" * start + KEY + " tail"
        out = redact_then_cut(text, [KEY], 300)
        assert len(out) <= 300
        assert_no_piece(KEY, out)
        assert KEY[:4] not in out


def test_redact_then_cut_equals_redacting_everything_then_cutting() -> None:
    """Only a head of the text is redacted; the bound must never change the result, even
    when many secrets side by side shrink the text (each to len(REDACTED))."""
    rng = random.Random(17)
    secrets = [KEY, "sk_" + "z" * 60, "tok-abcd"]
    for _ in range(300):
        parts = [
            rng.choice([*secrets, quote(KEY, safe=""), "x" * rng.randint(0, 40), " "])
            for _ in range(rng.randint(1, 80))
        ]
        text = "".join(parts)
        limit = rng.choice([10, 50, 120, 300])
        assert redact_then_cut(text, secrets, limit) == redact(text, secrets)[:limit]


def test_a_huge_text_is_cut_without_redacting_all_of_it() -> None:
    text = "y" * 295 + KEY + "z" * 20_000_000
    out = redact_then_cut(text, [KEY], 300)
    assert out == "y" * 295 + REDACTED[:5]


# --- what a sync stores ---------------------------------------------------------------


class Answer:
    """What the answering server sends to every request: a status, a type and a body."""

    def __init__(self) -> None:
        self.status = 400
        self.content_type = "text/html"
        self.body = b""


@pytest.fixture
def answering_server() -> Iterator[tuple[str, Answer]]:
    answer = Answer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", answer
    finally:
        server.shutdown()
        server.server_close()


def klaviyo_account(base_url: str) -> ProviderAccount:
    account = create_account("echoing proxy", "klaviyo", {"api_key": KEY}, base_url=base_url)
    account.rate_limits = {"*": [[1000, 1]]}
    account.save(update_fields=["rate_limits"])
    return account


def stored_texts(account: ProviderAccount) -> list[str]:
    account.refresh_from_db()
    run = account.sync_runs.get()
    return [run.error, account.last_error, json.dumps(run.detail)]


@pytest.mark.django_db(transaction=True)
def test_a_key_straddling_character_300_of_an_error_body_is_not_stored(answering_server) -> None:
    base_url, answer = answering_server
    # A proxy's error page that echoes the request's key right across character 300.
    page = "<html><body><h1>400 Bad Request</h1><p>" + "." * 400
    start = 300 - 10
    answer.body = (page[:start] + KEY + page[start:]).encode()
    account = klaviyo_account(base_url)

    run = sync_account(account.pk)

    assert run.outcome in ("failed", "partial")
    assert "HTTP 400" in run.error
    for text in stored_texts(account):
        assert_no_piece(KEY, text)


@pytest.mark.django_db(transaction=True)
def test_url_encoded_and_json_escaped_keys_in_an_error_body_are_not_stored(
    answering_server,
) -> None:
    base_url, answer = answering_server
    answer.content_type = "text/plain"
    answer.body = (
        f"upstream refused GET /v1?api_key={quote(KEY, safe='')}&k2={quote_plus(KEY)} "
        f'with body {{"api_key": {json.dumps(KEY)}}}'
    ).encode()
    account = klaviyo_account(base_url)

    run = sync_account(account.pk)

    assert "upstream refused" in run.error
    assert REDACTED in run.error
    for text in stored_texts(account):
        assert_no_piece(KEY, text)
        for form in (quote(KEY, safe=""), quote_plus(KEY), json.dumps(KEY)[1:-1]):
            assert_no_piece(form, text)
