"""Production mode: check --deploy, gunicorn with DEBUG off serving the admin and its static
files through whitenoise, JSON logs, and the development defaults left as they were."""

from __future__ import annotations

import json
import logging
import re
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from jobcenter.logformat import JsonFormatter
from tests.processes import ROOT, process_env, stop, wait_for

GUNICORN = Path(sys.executable).with_name("gunicorn")


def production_env(**extra: str) -> dict[str, str]:
    """What a deployment sets: DEBUG off, real-looking keys, its host name, the test DB."""
    return process_env(
        **{
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "127.0.0.1",
            # Blank: the production defaults apply, whatever the developer's shell says.
            "SECURE_SSL_REDIRECT": "",
            "SESSION_COOKIE_SECURE": "",
            "CSRF_COOKIE_SECURE": "",
            "SECURE_HSTS_SECONDS": "",
            "JOBCENTER_BEHIND_TLS_PROXY": "",
            "LOG_FORMAT": "",
            **extra,
        }
    )


def run_manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_passes_with_production_settings() -> None:
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_fails_when_a_safety_is_turned_off() -> None:
    """The check above could not pass by accident: turning one safety off fails it."""
    result = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env=production_env(SECURE_SSL_REDIRECT="0", SESSION_COOKIE_SECURE="0"),
    )
    assert result.returncode != 0
    assert "security.W008" in result.stderr and "security.W012" in result.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """A gunicorn process on a free port; `stop()` returns everything it printed."""

    def __init__(self, env: dict[str, str]) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.process = subprocess.Popen(
            [str(GUNICORN), "jobcenter.wsgi", "--bind", self.url[7:], "--workers", "2"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.output: str | None = None

    def answers(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", timeout=10).status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            return self.process.poll() is not None  # died: stop waiting, stop() says why

    def stop(self) -> str:
        if self.output is None:
            self.output = stop(self.process)
        return self.output


@pytest.fixture
def gunicorn(transactional_db: None, tmp_path: Path) -> Iterator[Gunicorn]:
    """`collectstatic` into a temporary STATIC_ROOT, then gunicorn with JSON logs."""
    env = production_env(STATIC_ROOT=str(tmp_path / "static"), LOG_FORMAT="json")
    collected = run_manage("collectstatic", "--noinput", env=env)
    assert collected.returncode == 0, collected.stderr[-2000:]
    server = Gunicorn(env)
    try:
        wait_for(server.answers, timeout=30, what="gunicorn to answer /healthz")
        assert server.process.poll() is None, server.stop()
        yield server
    finally:
        server.stop()


def test_gunicorn_serves_the_admin_and_its_static_files_with_debug_off(
    gunicorn: Gunicorn,
) -> None:
    url = gunicorn.url
    https = {"X-Forwarded-Proto": "https"}  # as the TLS-terminating load balancer sends

    # Plain HTTP is sent to HTTPS; behind the proxy the login page is served, hardened.
    plain = requests.get(f"{url}/admin/login/", allow_redirects=False, timeout=10)
    assert plain.status_code == 301
    assert plain.headers["Location"] == f"https://{url[7:]}/admin/login/"
    page = requests.get(f"{url}/admin/login/", headers=https, timeout=10)
    assert page.status_code == 200
    assert page.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert "secure" in page.headers["Set-Cookie"].lower()  # the CSRF cookie
    assert "csrfmiddlewaretoken" in page.text
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]

    # Static files: hashed names (manifest storage) served by whitenoise, cached forever.
    stylesheets = re.findall(r'href="(/static/[^"]+\.css)"', page.text)
    assert stylesheets, page.text[:2000]
    assert all(re.search(r"\.[0-9a-f]{12}\.css$", href) for href in stylesheets), stylesheets
    css = requests.get(f"{url}{stylesheets[0]}", headers=https, timeout=10)
    assert css.status_code == 200
    assert css.headers["Content-Type"].startswith("text/css")
    assert "immutable" in css.headers["Cache-Control"]
    assert "default-src 'self'" in css.headers["Content-Security-Policy"]  # whitenoise's too
    assert len(css.content) > 100
    gzipped = requests.get(
        f"{url}{stylesheets[0]}", headers={**https, "Accept-Encoding": "gzip"}, timeout=10
    )
    assert gzipped.headers.get("Content-Encoding") == "gzip"

    # DEBUG is off: an unknown page is a plain 404, not Django's debug page.
    missing = requests.get(f"{url}/no-such-page/", headers=https, timeout=10)
    assert missing.status_code == 404
    assert "URLconf" not in missing.text and "DEBUG" not in missing.text

    # The 404 was logged by django.request as one JSON object per line.
    output = gunicorn.stop()
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    not_found = [r for r in records if r.get("logger") == "django.request"]
    assert not_found, output[-2000:]
    assert not_found[0]["level"] == "WARNING"
    assert "/no-such-page/" in not_found[0]["message"]
    assert not_found[0]["status_code"] == 404  # an `extra` field Django passes


def test_development_defaults_are_kept_with_debug_on() -> None:
    env = {
        **process_env(DEBUG="1"),
        "SECRET_KEY": "",
        "SECURE_SSL_REDIRECT": "",
        "SESSION_COOKIE_SECURE": "",
    }
    script = (
        "import json; from django.conf import settings as s;"
        "print(json.dumps([s.DEBUG, s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE,"
        "s.SECURE_HSTS_SECONDS, s.SECURE_PROXY_SSL_HEADER, s.STORAGES['staticfiles']['BACKEND'],"
        "s.ALLOWED_HOSTS]))"
    )
    result = run_manage("shell", "-c", script, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [
        True,
        False,
        False,
        0,
        None,
        "django.contrib.staticfiles.storage.StaticFilesStorage",
        ["127.0.0.1", "localhost"],
    ]


def test_log_format_must_be_plain_or_json() -> None:
    result = run_manage("check", env=production_env(LOG_FORMAT="xml"))
    assert result.returncode != 0
    assert "LOG_FORMAT must be plain or json" in result.stderr


def test_json_formatter_writes_one_object_with_extras_and_the_exception() -> None:
    logger = logging.getLogger("jobcenter.test")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logger.makeRecord(
            logger.name,
            logging.ERROR,
            __file__,
            1,
            "sync of %s failed",
            ("Main Klaviyo",),
            sys.exc_info(),
            extra={"account_id": 7},
        )
    line = JsonFormatter().format(record)
    assert "\n" not in line.replace("\\n", "")
    entry = json.loads(line)
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "jobcenter.test"
    assert entry["message"] == "sync of Main Klaviyo failed"
    assert entry["account_id"] == 7
    assert "ValueError: boom" in entry["exception"]
    assert entry["time"].endswith("+00:00")
