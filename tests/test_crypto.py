"""Credentials at rest: encryption, wrong keys, rotation, and start-up without keys."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from jobcenter import crypto
from jobcenter.models import AlertChannel, ProviderAccount

ROOT = Path(__file__).resolve().parent.parent


def test_round_trip_and_ciphertext_hides_the_value() -> None:
    token = crypto.encrypt_json({"api_key": "pk_secret_value_1234"})
    assert "pk_secret_value_1234" not in token
    assert crypto.decrypt_json(token) == {"api_key": "pk_secret_value_1234"}


def test_wrong_key_gives_a_clear_error_not_ciphertext() -> None:
    token = crypto.encrypt_json({"api_key": "abc"})
    with (
        override_settings(JOBCENTER_FERNET_KEYS=[Fernet.generate_key().decode()]),
        pytest.raises(crypto.CredentialsUnreadable, match="JOBCENTER_FERNET_KEYS"),
    ):
        crypto.decrypt_json(token)


def test_hint_shows_only_the_last_four_characters() -> None:
    assert crypto.hint("pk_abcdefgh1234") == "…1234"
    assert crypto.hint("short") == "…"


@pytest.mark.django_db
def test_rotate_command_re_encrypts_under_the_newest_key() -> None:
    old_key = Fernet.generate_key().decode()
    new_key = Fernet.generate_key().decode()
    with override_settings(JOBCENTER_FERNET_KEYS=[old_key]):
        account = ProviderAccount(name="a", provider="klaviyo")
        account.set_credentials({"api_key": "pk_rotate_me_0001"})
        account.save()
        channel = AlertChannel(name="hook", kind="webhook", url="https://hooks.example.com/x")
        channel.set_secret("whsec_rotate_me_0001")
        channel.save()
    out = io.StringIO()
    with override_settings(JOBCENTER_FERNET_KEYS=[new_key, old_key]):
        call_command("rotate_credential_keys", stdout=out)
    assert "1 account(s), 1 alert channel(s)" in out.getvalue()
    account.refresh_from_db()
    channel.refresh_from_db()
    # The old key can be dropped: every secret reads with the new key alone.
    with override_settings(JOBCENTER_FERNET_KEYS=[new_key]):
        assert account.get_credentials() == {"api_key": "pk_rotate_me_0001"}
        assert channel.get_secret() == "whsec_rotate_me_0001"


@pytest.mark.django_db
def test_rotate_refuses_when_a_key_is_missing_and_changes_nothing() -> None:
    account = ProviderAccount(name="b", provider="klaviyo")
    account.set_credentials({"api_key": "pk_rotate_me_0002"})
    account.save()
    before = account.credentials_encrypted
    with (
        override_settings(JOBCENTER_FERNET_KEYS=[Fernet.generate_key().decode()]),
        pytest.raises(CommandError, match="add back the key"),
    ):
        call_command("rotate_credential_keys")
    account.refresh_from_db()
    assert account.credentials_encrypted == before


def _import_settings(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("JOBCENTER_", "DEBUG"))}
    clean.pop("SECRET_KEY", None)
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import jobcenter.settings as s; print(len(s.JOBCENTER_FERNET_KEYS))",
        ],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_start_without_keys_fails_and_says_what_to_set() -> None:
    result = _import_settings({"DEBUG": "0", "SECRET_KEY": "x" * 50})
    assert result.returncode != 0
    assert "JOBCENTER_FERNET_KEYS is not set" in result.stderr


def test_production_start_without_secret_key_fails_and_says_so() -> None:
    result = _import_settings({"DEBUG": "0"})
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_debug_start_without_keys_creates_a_development_key_once(tmp_path: Path) -> None:
    key_file = tmp_path / "dev-key"
    first = _import_settings({"DEBUG": "1", "JOBCENTER_DEV_KEY_FILE": str(key_file)})
    assert first.returncode == 0, first.stderr
    assert "created a development key" in first.stderr
    key = key_file.read_text()
    second = _import_settings({"DEBUG": "1", "JOBCENTER_DEV_KEY_FILE": str(key_file)})
    assert second.returncode == 0
    assert "created a development key" not in second.stderr
    assert key_file.read_text() == key
