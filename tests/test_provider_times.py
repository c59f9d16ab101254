"""`providers.times.parse_time`: one policy for every provider's times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from providers import PROVIDER_CLASSES, get_provider
from providers.errors import BadResponse, BadTime
from providers.times import parse_time

MAY_FIRST = datetime(2024, 5, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize("value", [None, ""])
def test_a_missing_time_is_none(value: object) -> None:
    assert parse_time(value, "x") is None
    assert parse_time(value, "x", naive_is_utc=True) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00Z", MAY_FIRST),
        ("2024-05-01T10:00:00z", MAY_FIRST),  # RFC 3339 allows a lower-case z
        ("2024-05-01 10:00:00+00:00", MAY_FIRST),
        ("2024-05-01T12:00:00+02:00", MAY_FIRST),
        ("  2024-05-01T10:00:00Z ", MAY_FIRST),
        ("2024-01-05T13:46:42.07Z", datetime(2024, 1, 5, 13, 46, 42, 70000, tzinfo=UTC)),
        # protobuf JSON writes nanoseconds: cut to microseconds, never rounded into a second
        ("2024-05-01T10:00:00.999999999Z", MAY_FIRST + timedelta(microseconds=999999)),
        ("2022-11-08T00:00:00.123456+00:00", datetime(2022, 11, 8, 0, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_an_iso_8601_time_with_an_offset_is_read_as_utc(text: str, expected: datetime) -> None:
    parsed = parse_time(text, "x")
    assert parsed == expected
    assert parsed is not None and parsed.tzinfo is UTC


def test_an_offset_is_kept_in_the_instant_not_the_zone() -> None:
    parsed = parse_time("2024-05-01T05:30:00-04:30", "x")
    assert parsed == datetime(2024, 5, 1, 5, 30, tzinfo=timezone(timedelta(hours=-4.5)))
    assert parsed is not None and parsed.tzinfo is UTC


def test_a_naive_time_is_utc_only_where_the_provider_documents_it() -> None:
    assert parse_time("2024-05-01T10:00:00", "x", naive_is_utc=True) == MAY_FIRST
    with pytest.raises(BadTime, match="Klaviyo's created_at has no UTC offset"):
        parse_time("2024-05-01T10:00:00", "Klaviyo's created_at")


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01T10:00:00Z", "10:00", 1714557600, {}])
def test_anything_else_is_a_bad_time_a_kind_of_bad_response(value: object) -> None:
    for naive_is_utc in (False, True):
        with pytest.raises(BadTime, match=r"^the job's created is not") as raised:
            parse_time(value, "the job's created", naive_is_utc=naive_is_utc)
        assert isinstance(raised.value, BadResponse)  # the sync reports it as one
        assert raised.value.excerpt


def test_every_provider_reads_its_times_by_the_one_policy() -> None:
    """Each provider says whether its naive times are UTC; read_time names it in errors."""
    documented_utc = {slug: get_provider(slug).naive_times_are_utc for slug in PROVIDER_CLASSES}
    assert documented_utc == {
        "klaviyo": True,
        "elasticpath": True,
        "fullstory": False,
        # The declared ones: their documented times all carry an offset (Z, +00:00, +0000).
        "hubspot": False,
        "mailchimp": False,
        "salesforce": False,
    }
    for slug in PROVIDER_CLASSES:
        provider = get_provider(slug)
        assert provider.read_time("2024-05-01T12:00:00+02:00", "created") == MAY_FIRST
        with pytest.raises(BadTime, match=f"^{provider.label}'s created is not"):
            provider.read_time("soon", "created")
