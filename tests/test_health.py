"""GET /healthz: database, broker and sync age, for a load balancer that knows no hosts."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from jobcenter.models import ProviderAccount
from tests.processes import ROOT, process_env

pytestmark = pytest.mark.django_db


def account(name: str, *, enabled: bool = True, **fields: object) -> ProviderAccount:
    created = ProviderAccount.objects.create(name=name, provider="klaviyo", enabled=enabled)
    if fields:
        ProviderAccount.objects.filter(pk=created.pk).update(**fields)
    return created


def get_health(client: Client, **extra: str) -> tuple[int, dict]:
    response = client.get("/healthz", **extra)
    assert response["Content-Type"] == "application/json"
    return response.status_code, response.json()


@override_settings(REDIS_URL="")
def test_healthy_node_answers_200_with_every_check(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker", "sync"}
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["broker"]["broker"] == "orm"
    assert body["checks"]["broker"]["queued"] == 0
    assert body["checks"]["sync"]["enabled_accounts"] == 0


@override_settings(ALLOWED_HOSTS=["jobs.example.com"], SECURE_SSL_REDIRECT=True)
def test_load_balancer_probe_by_ip_over_http_is_neither_rejected_nor_redirected(
    client: Client,
) -> None:
    # The same request to any other page is refused (unknown host) or redirected to
    # https: the health check is the one exception.
    assert client.get("/admin/login/", HTTP_HOST="10.0.0.7").status_code == 400
    assert client.get("/admin/login/", HTTP_HOST="jobs.example.com").status_code == 301
    assert client.get("/healthz", HTTP_HOST="10.0.0.7").status_code == 200
    assert client.get("/healthz/", HTTP_HOST="10.0.0.7").status_code == 200


def test_only_get_and_head(client: Client) -> None:
    assert client.head("/healthz").status_code == 200
    response = client.post("/healthz")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"


@override_settings(JOBCENTER_HEALTH_MAX_SYNC_AGE_MINUTES=60)
def test_stale_syncs_fail_the_sync_check_only(client: Client) -> None:
    now = timezone.now()
    stale = account("stale", last_success_at=now - timedelta(minutes=90))
    account("disabled but fresh", enabled=False, last_success_at=now)
    status, body = get_health(client)
    assert status == 503
    assert body["status"] == "fail"
    assert body["failing"] == ["sync"]
    assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]
    # 90 minutes, plus however long the request took to come (a whole second at most
    # of rounding either way).
    waited = (timezone.now() - now).total_seconds()
    assert 5400 - 1 <= body["checks"]["sync"]["last_success_age_seconds"] <= 5400 + waited + 1
    assert body["checks"]["sync"]["max_age_seconds"] == 3600

    # One enabled account synced recently is enough: the clusters are working.
    ProviderAccount.objects.filter(pk=stale.pk).update(last_success_at=now - timedelta(minutes=5))
    status, body = get_health(client)
    assert status == 200, body
    waited = (timezone.now() - now).total_seconds()
    assert 300 - 1 <= body["checks"]["sync"]["last_success_age_seconds"] <= 300 + waited + 1


@override_settings(JOBCENTER_HEALTH_MAX_SYNC_AGE_MINUTES=60)
def test_accounts_never_synced_fail_once_they_had_the_time(client: Client) -> None:
    new = account("new")
    status, body = get_health(client)
    assert status == 200, body
    assert body["checks"]["sync"]["last_success_age_seconds"] is None

    ProviderAccount.objects.filter(pk=new.pk).update(created_at=timezone.now() - timedelta(hours=2))
    status, body = get_health(client)
    assert status == 503
    assert body["failing"] == ["sync"]


@override_settings(JOBCENTER_HEALTH_MAX_SYNC_AGE_MINUTES=0)
def test_sync_age_is_reported_but_never_fails_when_the_limit_is_off(client: Client) -> None:
    account("stale", last_success_at=timezone.now() - timedelta(days=3))
    status, body = get_health(client)
    assert status == 200
    assert body["checks"]["sync"]["last_success_age_seconds"] >= 3 * 86400 - 10
    assert body["checks"]["sync"]["max_age_seconds"] is None


@override_settings(REDIS_URL="redis://:hunter2-secret@127.0.0.1:1/0")
def test_unreachable_broker_fails_without_telling_its_address(client: Client) -> None:
    status, body = get_health(client)
    assert status == 503
    assert body["failing"] == ["broker"]
    assert body["checks"]["broker"]["error"] == "ConnectionError"
    text = json.dumps(body)
    assert "hunter2" not in text
    assert "127.0.0.1" not in text


def test_unreachable_database_fails_every_check_that_needs_it() -> None:
    """A real process whose database refuses connections (nothing listens on port 1)."""
    script = (
        "import json; from django.test import Client;"
        "r = Client().get('/healthz', HTTP_HOST='10.0.0.7');"
        "print(json.dumps([r.status_code, r.content.decode()]))"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=process_env(
            DATABASE_URL="postgres://jobcenter:db-secret-pw@127.0.0.1:1/jobcenter",
            ALLOWED_HOSTS="jobs.example.com",
            REDIS_URL="",  # the ORM broker, which needs the database too
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    status, content = json.loads(result.stdout.strip().splitlines()[-1])
    assert status == 503
    body = json.loads(content)
    assert body["failing"] == ["database", "broker", "sync"]
    assert body["checks"]["database"]["error"] == "OperationalError"
    assert "db-secret-pw" not in content
