"""Every log line of a sync carries its ids; provider requests are logged at DEBUG.

Real syncs against the sandbox over HTTP with pytest's caplog at DEBUG: every record
made while a sync runs (any logger, the prefetch thread's too) carries the SyncRun's id
(jobcenter/logcontext.py), the HTTP client's request lines carry method, path, status,
milliseconds and attempt (providers/http.py), no secret the client knew shows in any
form, and the formatters of settings.LOGGING show the ids. A hot pass's lines carry the
pass's id, and the run's id once its row exists. In a real process,
JOBCENTER_PROVIDER_REQUEST_LOG_LEVEL=DEBUG turns the request lines on alone.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

from jobcenter.logcontext import FIELDS
from jobcenter.models import Job, SyncRun
from jobcenter.sync import hot
from jobcenter.sync.engine import sync_account
from jobcenter.sync.hot import hot_pass
from jobcenter.sync.tracking import track_job
from providers import get_provider, provider_choices
from providers.http import HttpClient, RetryPolicy
from providers.outbound import OutboundPolicy
from providers.redaction import secret_forms
from providers.sandbox.client import SandboxClient, free_port
from tests.factories import create_fullstory_batch, sandbox_account, users
from tests.leaks import assert_secret_nowhere
from tests.processes import ROOT, process_env

pytestmark = pytest.mark.django_db(transaction=True)

REQUEST_FIELDS = ("http_method", "http_path", "http_ms", "http_attempt")


@pytest.fixture
def client_secrets(monkeypatch: pytest.MonkeyPatch) -> list[HttpClient]:
    """Every HttpClient made meanwhile: their `secrets` are what must stay out of logs
    (the credentials, and tokens issued during the run)."""
    made: list[HttpClient] = []
    real_init = HttpClient.__init__

    def recording_init(self: HttpClient, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(HttpClient, "__init__", recording_init)
    return made


def records_of(caplog: pytest.LogCaptureFixture, action: Callable[[], Any]) -> tuple[Any, list]:
    """What `action` returns, and the records made while it ran."""
    before = len(caplog.records)
    result = action()
    return result, caplog.records[before:]


def formatters() -> dict[str, logging.Formatter]:
    """The formatters settings.LOGGING configures, made as dictConfig makes them."""
    made = {}
    for name, spec in settings.LOGGING["formatters"].items():
        options = {k: v for k, v in spec.items() if k != "()"}
        made[name] = import_string(spec["()"])(**options)
    return made


def assert_no_secret(texts: list[str], clients: list[HttpClient]) -> None:
    """No form (URL-encoded, base64 in a Basic header, JSON-escaped...) of any secret."""
    secrets = {secret for client in clients for secret in client.secrets}
    assert secrets, "the clients knew no secret: nothing was checked"
    for text in texts:
        for secret in secrets:
            for form in secret_forms(secret):
                assert form.lower() not in text.lower(), "a secret reached the log"


@pytest.mark.parametrize("slug", [slug for slug, _ in provider_choices()])
def test_every_line_of_a_sync_carries_its_run_and_requests_are_logged_without_secrets(
    sandbox: SandboxClient,
    admin_client: Any,
    caplog: pytest.LogCaptureFixture,
    client_secrets: list[HttpClient],
    slug: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    account, described = sandbox_account(sandbox, slug, seed=3, jobs_per_kind=5)
    if slug == "fullstory":  # no listing: only the jobs tracked are fetched, by id
        failing = create_fullstory_batch(sandbox, described, "users-batch-import", users(3, {1}))
        track_job(account, "users-batch-import", failing)
        sandbox.clock(described["id"], advance=3600)  # done, failed: its errors are fetched

    run, records = records_of(caplog, lambda: sync_account(account.pk))

    assert run.outcome in ("succeeded", "partial"), run.error
    assert records
    for record in records:
        assert (record.sync_run, record.sync_account, record.sync_provider) == (
            run.pk,
            account.pk,
            slug,
        ), (record.name, record.getMessage())
        assert not hasattr(record, "sync_pass")
    requests = [r for r in records if r.name == "providers.http" and hasattr(r, "http_method")]
    run.refresh_from_db()
    assert len(requests) == run.requests > 0
    for record in requests:
        assert record.levelno == logging.DEBUG
        assert record.http_method in ("GET", "POST")
        assert record.http_path.startswith("/") and "://" not in record.http_path
        assert 200 <= record.http_status < 300 and record.http_ms >= 0
        assert record.http_attempt == 1
        message = record.getMessage()
        assert message.startswith(f"{record.http_method} {record.http_path} -> ")
        assert f" in {record.http_ms:.0f}ms (attempt 1)" in message
    # Pages and error records are fetched in the prefetch thread: its lines belong to the
    # run too.
    assert any(r.threadName == "page-prefetch" for r in requests)
    # urllib3's request lines repeat the URL unredacted: they stay off (settings.LOGGING).
    assert not [r for r in records if r.name.startswith("urllib3") and r.levelno < logging.INFO]

    made = formatters()
    plain = [made["plain"].format(r) for r in records]
    lines = [made["json"].format(r) for r in records]
    ids = f"[sync_run={run.pk} sync_account={account.pk} sync_provider={slug}]: "
    assert all(f" {r.name} {ids}" in text for r, text in zip(records, plain, strict=True))
    for record, line in zip(records, lines, strict=True):
        entry = json.loads(line)
        assert (entry["sync_run"], entry["sync_account"], entry["sync_provider"]) == (
            run.pk,
            account.pk,
            slug,
        )
        if record in requests:
            assert {*REQUEST_FIELDS, "http_status"} <= entry.keys()
            assert entry["http_status"] == record.http_status
    assert_no_secret([caplog.text, *plain, *lines], client_secrets)
    for secret in get_provider(slug).secret_values(account.get_credentials()):
        assert_secret_nowhere(
            secret, client=admin_client, account=account, run=run, log_text=caplog.text
        )


def test_two_syncs_carry_their_own_ids_and_lines_after_carry_none(
    sandbox: SandboxClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    account, _ = sandbox_account(sandbox, "klaviyo", seed=4, jobs_per_kind=3)
    other = logging.getLogger("jobcenter.tests")

    first, first_records = records_of(caplog, lambda: sync_account(account.pk))
    second, second_records = records_of(caplog, lambda: sync_account(account.pk))
    other.warning("after the syncs")
    in_thread = threading.Thread(target=other.warning, args=("a thread after the syncs",))
    in_thread.start()
    in_thread.join()

    assert first.pk != second.pk
    assert {r.sync_run for r in first_records} == {first.pk}
    assert {r.sync_run for r in second_records} == {second.pk}
    after = caplog.records[-2:]
    assert [r.getMessage() for r in after] == ["after the syncs", "a thread after the syncs"]
    for record in after:
        assert not any(hasattr(record, name) for name in FIELDS)
        assert "sync_run" not in json.loads(formatters()["json"].format(record))
        assert "[sync_run=" not in formatters()["plain"].format(record)


def aged_unfinished_jobs(sandbox: SandboxClient, sid: str, count: int = 3) -> None:
    """Unfinished jobs a sweep just stored, last checked ten minutes ago: due for a pass."""
    sandbox.control(
        sid,
        "create_jobs",
        kind="profile-bulk-import-job",
        count=count,
        queued_seconds=10,
        processing_seconds=600,
    )
    sandbox.clock(sid, advance=0.001)


def age_checks(account: Any) -> None:
    Job.objects.filter(account=account).update(
        last_checked_at=timezone.now() - timedelta(seconds=600)
    )


def test_a_hot_pass_carries_its_pass_id_and_its_run_once_recorded(
    sandbox: SandboxClient,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    client_secrets: list[HttpClient],
) -> None:
    account, described = sandbox_account(sandbox, "klaviyo", jobs_per_kind=0)
    sid = described["id"]
    aged_unfinished_jobs(sandbox, sid)
    assert sync_account(account.pk).outcome == "succeeded"
    evaluated = logging.getLogger("jobcenter.alerts")
    real_evaluate = hot.evaluate_after_sync

    def evaluate_and_say_so(run: SyncRun) -> None:
        evaluated.info("alerts evaluated after a hot pass")
        real_evaluate(run)

    monkeypatch.setattr(hot, "evaluate_after_sync", evaluate_and_say_so)
    caplog.set_level(logging.DEBUG)
    sandbox.clock(sid, advance=60)  # queued -> processing: the pass changes them
    age_checks(account)

    run, records = records_of(caplog, lambda: hot_pass(account.pk))

    assert run is not None and run.pk is not None, "the pass changed jobs: it has a row"
    pass_id = run.detail["sync_pass"]
    assert pass_id and SyncRun.objects.get(pk=run.pk).detail["sync_pass"] == pass_id
    for record in records:
        assert (record.sync_pass, record.sync_account, record.sync_provider) == (
            pass_id,
            account.pk,
            "klaviyo",
        ), (record.name, record.getMessage())
    requests = [r for r in records if hasattr(r, "http_method")]
    assert requests and not any(hasattr(r, "sync_run") for r in requests)
    said = [r for r in records if r.getMessage() == "alerts evaluated after a hot pass"]
    assert [r.sync_run for r in said] == [run.pk]
    assert f"[sync_run={run.pk} sync_pass={pass_id} " in formatters()["plain"].format(said[0])

    # A pass that finds nothing leaves no row: its lines carry its own id, no run.
    age_checks(account)
    nothing, quiet_records = records_of(caplog, lambda: hot_pass(account.pk))
    assert nothing is None
    assert [r for r in quiet_records if hasattr(r, "http_method")]
    (quiet_pass,) = {r.sync_pass for r in quiet_records}
    assert quiet_pass != pass_id
    assert not any(hasattr(r, "sync_run") for r in quiet_records)
    assert_no_secret([caplog.text], client_secrets)


def test_a_query_string_secret_is_masked_and_failures_name_their_exception(
    sandbox: SandboxClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = "tok/en+with=signs&" + "9f" * 12  # changes when URL-encoded
    client = HttpClient(
        sandbox.base_url("klaviyo"), secrets=[token], policy=OutboundPolicy.development()
    )
    _, records = records_of(
        caplog,
        lambda: client.request(
            "GET",
            "/api/profile-bulk-import-jobs",
            params={"api_key": token, "page[size]": 5},
            authenticated=False,
            expect=(401,),
        ),
    )
    (line,) = [r for r in records if hasattr(r, "http_method")]
    path = "/klaviyo/api/profile-bulk-import-jobs?api_key=[redacted]&page%5Bsize%5D=5"
    assert line.http_path == path
    assert (line.http_status, line.http_attempt) == (401, 1)
    assert not any(hasattr(r, "sync_run") for r in records), "no sync runs here"

    closed = HttpClient(
        f"http://127.0.0.1:{free_port()}",
        secrets=[token],
        policy=OutboundPolicy.development(),
        retry=RetryPolicy(max_attempts=3, backoff_base=0.001),
        sleep=lambda seconds: None,
    )
    failed = []
    try:
        closed.request("GET", "/jobs", params={"signature": token})
    except Exception as exc:  # the client's TransientError after its last attempt
        failed.append(type(exc).__name__)
    assert failed == ["TransientError"]
    attempts = [r for r in caplog.records if hasattr(r, "http_error")]
    assert [(r.http_error, r.http_attempt) for r in attempts] == [
        ("ConnectionError", 1),
        ("ConnectionError", 2),
        ("ConnectionError", 3),
    ]
    assert all(r.http_path == "/jobs?signature=[redacted]" for r in attempts)
    assert "ConnectionError in " in attempts[0].getMessage()
    for form in secret_forms(token):
        assert form.lower() not in caplog.text.lower()


def run_command(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=process_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def json_lines(text: str) -> Iterator[dict[str, Any]]:
    for line in text.splitlines():
        if line.startswith("{"):
            yield json.loads(line)


def test_the_setting_turns_on_request_lines_alone_in_a_real_process(
    sandbox: SandboxClient,
) -> None:
    account, _ = sandbox_account(sandbox, "klaviyo", seed=5, jobs_per_kind=3)
    result = run_command(
        "sync_jobs",
        "--account",
        account.name,
        LOG_LEVEL="WARNING",
        LOG_FORMAT="json",
        JOBCENTER_PROVIDER_REQUEST_LOG_LEVEL="debug",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run = SyncRun.objects.get(account=account)
    entries = list(json_lines(result.stderr))
    requests = [e for e in entries if e["logger"] == "providers.http" and "http_method" in e]
    assert len(requests) == run.requests > 0
    assert {e["sync_run"] for e in requests} == {run.pk}
    assert {e["level"] for e in requests} == {"DEBUG"}
    # The root stays at WARNING: no other logger's DEBUG or INFO lines.
    assert all(e["level"] not in ("DEBUG", "INFO") for e in entries if e not in requests)

    refused = run_command("check", JOBCENTER_PROVIDER_REQUEST_LOG_LEVEL="loud")
    assert refused.returncode != 0
    assert "JOBCENTER_PROVIDER_REQUEST_LOG_LEVEL must be" in refused.stderr
