"""The pieces of providers/http.py that need no server: redaction, Retry-After, buckets."""

from __future__ import annotations

import email.utils
import time

import pytest

from providers.errors import BadResponse
from providers.http import HttpClient, LocalTokenBucketStore, RateLimit, parse_retry_after, redact


def test_redact_replaces_every_secret_longest_first() -> None:
    text = "key pk_abc123456 and pk_abc123456789 in a message"
    out = redact(text, ["pk_abc123456", "pk_abc123456789"])
    assert "pk_abc" not in out
    assert out.count("[redacted]") == 2


def test_retry_after_in_seconds_and_as_http_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 2.5 ") == 2.5
    now = time.time()  # the date is read against this moment, not whenever the line runs
    future = email.utils.formatdate(now + 30, usegmt=True)  # whole seconds
    assert 29 < parse_retry_after(future, now=now) <= 30
    assert parse_retry_after("not a date") is None
    assert parse_retry_after(None) is None


def test_links_to_another_host_are_refused_before_sending() -> None:
    client = HttpClient("https://a.klaviyo.com", secrets=["pk_x1234567"])
    assert client.url_for("/api/x") == "https://a.klaviyo.com/api/x"
    assert (
        client.url_for("https://a.klaviyo.com/api/x?page=2") == "https://a.klaviyo.com/api/x?page=2"
    )
    with pytest.raises(BadResponse, match="another host"):
        client.url_for("https://evil.example.com/api/x")
    with pytest.raises(BadResponse):
        client.url_for("http://a.klaviyo.com/api/x")  # another scheme is another origin
    assert client.counters.requests == 0


def test_token_bucket_never_breaks_any_stated_window() -> None:
    limit = RateLimit(((75, 1), (750, 60)))
    rate, capacity = limit.token_bucket()
    # At most capacity + rate * T in any span T: within every window's limit.
    for count, seconds in limit.windows:
        assert capacity + rate * seconds <= count
    assert rate * 60 >= 0.8 * 750  # and it keeps at least 80% of the steady rate


def test_local_bucket_queues_callers_in_order() -> None:
    now = [0.0]
    store = LocalTokenBucketStore(clock=lambda: now[0])
    waits = [store.take("k", rate_per_second=2.0, capacity=2.0) for _ in range(4)]
    assert waits == [0.0, 0.0, 0.5, 1.0]
    now[0] = 10.0
    assert store.take("k", 2.0, 2.0) == 0.0
