"""Where credentials may go, and adding accounts from the command line."""

from __future__ import annotations

import io

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from jobcenter.accounts import validate_base_url
from jobcenter.models import ProviderAccount


@pytest.mark.parametrize(
    ("provider", "url", "expected"),
    [
        ("klaviyo", "", ""),
        ("klaviyo", "https://a.klaviyo.com/", "https://a.klaviyo.com"),
        ("elasticpath", "https://useast.api.elasticpath.com", "https://useast.api.elasticpath.com"),
        ("fullstory", "https://api.eu1.fullstory.com", "https://api.eu1.fullstory.com"),
        ("klaviyo", "http://127.0.0.1:8765/klaviyo", "http://127.0.0.1:8765/klaviyo"),
    ],
)
def test_allowed_base_urls(provider: str, url: str, expected: str) -> None:
    assert validate_base_url(provider, url) == expected


@pytest.mark.parametrize(
    ("provider", "url", "why"),
    [
        ("klaviyo", "https://evil.example.com", "not a Klaviyo host"),
        ("klaviyo", "http://a.klaviyo.com", "https"),
        ("klaviyo", "https://user:pw@a.klaviyo.com", "must not carry credentials"),
        ("klaviyo", "ftp://a.klaviyo.com", "full URL"),
        ("elasticpath", "https://a.klaviyo.com", "not a Elastic Path host"),
    ],
)
def test_refused_base_urls(provider: str, url: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        validate_base_url(provider, url)


def test_loopback_only_in_development() -> None:
    with (
        override_settings(JOBCENTER_ALLOW_LOOPBACK_PROVIDERS=False),
        pytest.raises(ValidationError, match="only in development"),
    ):
        validate_base_url("klaviyo", "http://127.0.0.1:8765/klaviyo")


def test_extra_hosts_setting_allows_a_proxy() -> None:
    with override_settings(JOBCENTER_EXTRA_PROVIDER_HOSTS=["klaviyo-proxy.internal"]):
        assert validate_base_url("klaviyo", "https://klaviyo-proxy.internal") == (
            "https://klaviyo-proxy.internal"
        )


@pytest.mark.django_db
def test_add_account_reads_credentials_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO('{"api_key": "pk_from_stdin_00001234"}'))
    out = io.StringIO()
    call_command("add_account", "Main Klaviyo", "--provider", "klaviyo", stdout=out)
    account = ProviderAccount.objects.get(name="Main Klaviyo")
    assert account.get_credentials() == {"api_key": "pk_from_stdin_00001234"}
    assert account.credentials_hint == "…1234"
    assert "pk_from_stdin" not in out.getvalue()
    assert "pk_from_stdin" not in account.credentials_encrypted


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("stdin", "args", "message"),
    [
        ("not json", [], "not JSON"),
        ("[1]", [], "JSON object"),
        ("{}", [], "api_key: Private API key is required"),
        ('{"api_key": "k", "extra": 1}', [], "no credential named 'extra'"),
        (
            '{"api_key": "pk_1234567890"}',
            ["--base-url", "https://evil.example.com"],
            "not a Klaviyo host",
        ),
    ],
)
def test_add_account_refuses_bad_input_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, stdin: str, args: list[str], message: str
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    with pytest.raises(CommandError, match=message):
        call_command("add_account", "x", "--provider", "klaviyo", *args)
    assert not ProviderAccount.objects.exists()
