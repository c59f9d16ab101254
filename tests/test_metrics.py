"""/metrics: a scrape after a real sandbox sync parsed by prometheus_client's own parser,
who may read it, a constant number of queries, and one scrape of a node whose gunicorn
workers and qcluster worker all wrote counters (multiprocess mode)."""

from __future__ import annotations

import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest
import requests
from django.db import connection
from django.db.models import Count
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.tasks import async_task
from prometheus_client.parser import text_string_to_metric_families

from jobcenter.alerts.channels import Attempt
from jobcenter.alerts.delivery import record_attempt
from jobcenter.models import AlertDelivery, Job, SyncRun
from jobcenter.sync.engine import sync_account
from tests.factories import sandbox_account
from tests.processes import start_command, stop, wait_for
from tests.test_production import GUNICORN, free_port, production_env

# gunicorn with the hooks multiprocess mode needs, as docs/operations.md runs it.
GUNICORN_CONFIGURED = [str(GUNICORN), "-c", "python:jobcenter.observability.gunicorn"]
TOKEN = "metrics-token-for-tests-0123456789abcdef"

pytestmark = pytest.mark.django_db(transaction=True)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[set[str], Samples]:
    """The families and every sample of one scrape, through prometheus_client's parser."""
    families: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return families, samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    return sum(
        value
        for (sample, found), value in samples.items()
        if sample == name and set(labels.items()) <= set(found)
    )


def scrape(client: Client, **extra: str) -> str:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **extra)
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"].startswith("text/plain")
    return response.content.decode()


@pytest.fixture
def token(settings) -> str:
    settings.JOBCENTER_METRICS_TOKEN = TOKEN
    return TOKEN


def test_a_scrape_after_a_sandbox_sync_parses_and_counts_what_the_run_did(
    sandbox, token: str, client: Client
) -> None:
    account, described = sandbox_account(
        sandbox,
        "klaviyo",
        seed=11,
        jobs_per_kind=4,
        faults={"rate": 0.15, "mix": {"429": 1, "500": 1}, "seed": 3, "retry_after": 0},
    )
    _, before = parse(scrape(client))
    run = sync_account(account.pk)
    assert run.outcome == "succeeded", run.error
    families, after = parse(scrape(client))

    ours = {name for name in families if name.startswith("jobcenter_")}
    assert len(ours) >= 8, sorted(ours)
    assert not any(name.endswith("_created") for name in ours)  # as in multiprocess mode
    assert {
        "jobcenter_sync_runs",
        "jobcenter_sync_duration_seconds",
        "jobcenter_provider_requests",
        "jobcenter_provider_retries",
        "jobcenter_provider_rate_limited",
        "jobcenter_provider_wait_seconds",
        "jobcenter_jobs",
        "jobcenter_queue_depth",
        "jobcenter_oldest_due_sweep_lag_seconds",
        "jobcenter_alert_deliveries_waiting",
    } <= ours

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    klaviyo = {"provider": "klaviyo"}
    assert grew("jobcenter_sync_runs_total", **klaviyo, trigger="manual", outcome="succeeded") == 1
    assert grew("jobcenter_sync_duration_seconds_count", **klaviyo, trigger="manual") == 1
    assert grew("jobcenter_provider_requests_total", **klaviyo) == run.requests > 0
    assert grew("jobcenter_provider_retries_total", **klaviyo) == run.retries > 0
    listed = {a["id"]: a for a in sandbox.accounts()}
    injected = listed[described["id"]]["faults"]["injected"]
    assert grew("jobcenter_provider_rate_limited_total", **klaviyo) == injected["429"] > 0
    assert grew("jobcenter_provider_wait_seconds_total", **klaviyo) == pytest.approx(
        run.detail["waited_seconds"], abs=0.01
    )
    # The database's gauges: what the tables hold now.
    expected = Counter(
        {
            (row["provider"], row["status"]): row["n"]
            for row in Job.objects.values("provider", "status").annotate(n=Count("id"))
        }
    )
    gauges = {
        (dict(labels)["provider"], dict(labels)["status"]): value
        for (name, labels), value in after.items()
        if name == "jobcenter_jobs"
    }
    assert gauges == expected and sum(gauges.values()) > 0
    assert total(after, "jobcenter_accounts", provider="klaviyo", status="ok") >= 1
    assert total(after, "jobcenter_oldest_due_sweep_lag_seconds") == 0  # just synced
    assert total(after, "jobcenter_scrape_part_up") == 5


def test_deliveries_and_web_answers_are_counted(token: str, client: Client) -> None:
    _, before = parse(scrape(client))
    delivery = AlertDelivery.objects.create(channel_kind="webhook", subject="s", text="t")
    delivery.attempts = 1
    record_attempt(delivery, Attempt(ok=False, retryable=True, error="503"), timezone.now(), 0.1)
    delivery.attempts = 2
    record_attempt(delivery, Attempt(ok=True, response_code=204), timezone.now(), 0.1)
    assert client.get("/admin/login/").status_code == 200
    assert client.get("/api/v1/jobs/").status_code in (401, 403)
    _, after = parse(scrape(client))

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    deliveries = "jobcenter_alert_deliveries_total"
    assert grew(deliveries, channel_kind="webhook", status="retrying") == 1
    assert grew(deliveries, channel_kind="webhook", status="sent") == 1
    assert grew("jobcenter_http_responses_total", area="admin", status="200") == 1
    assert grew("jobcenter_http_responses_total", area="api") == 1
    assert grew("jobcenter_http_responses_total") == 2  # scrapes are not counted


def test_who_may_read_it(settings, client: Client) -> None:
    settings.JOBCENTER_METRICS_TOKEN = ""
    settings.DEBUG = False
    # Off: no token and DEBUG off, loopback or not (the test client is 127.0.0.1).
    assert client.get("/metrics").status_code == 404
    # DEBUG: loopback only, never a forwarded address.
    settings.DEBUG = True
    assert client.get("/metrics").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.0.0.8").status_code == 404
    assert (
        client.get("/metrics", REMOTE_ADDR="10.0.0.8", HTTP_X_FORWARDED_FOR="127.0.0.1")
    ).status_code == 404
    # A token: the right bearer from anywhere; a wrong or missing one is a 404.
    settings.DEBUG = False
    settings.JOBCENTER_METRICS_TOKEN = TOKEN
    remote = {"REMOTE_ADDR": "10.0.0.8"}
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **remote).status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"bearer {TOKEN}", **remote).status_code == 200
    for wrong in (f"Bearer {TOKEN}x", f"Token {TOKEN}", TOKEN, "Bearer ", ""):
        assert client.get("/metrics", HTTP_AUTHORIZATION=wrong, **remote).status_code == 404
    assert client.get("/metrics", **remote).status_code == 404
    # Ahead of the Host check (a scraper comes by address) and of the HTTPS redirect.
    settings.ALLOWED_HOSTS = ["jobcenter.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    answer = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", HTTP_HOST="10.1.2.3")
    assert answer.status_code == 200
    assert client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


def test_a_scrape_costs_the_same_queries_whatever_the_number_of_accounts(
    sandbox, token: str, client: Client
) -> None:
    sandbox_account(sandbox, "klaviyo", seed=12, jobs_per_kind=1)
    scrape(client)
    with CaptureQueriesContext(connection) as one:
        scrape(client)
    for seed, provider in ((13, "elasticpath"), (14, "klaviyo"), (15, "elasticpath")):
        account, _ = sandbox_account(sandbox, provider, seed=seed, jobs_per_kind=2)
        sync_account(account.pk)
    with CaptureQueriesContext(connection) as four:
        text = scrape(client)
    # Five parts, one query each; with the Redis broker the queue depth is asked of Redis.
    assert len(four) == len(one) <= 5, [q["sql"] for q in four]
    assert {"elasticpath", "klaviyo"} <= {
        dict(labels).get("provider")
        for (name, labels) in parse(text)[1]
        if name == "jobcenter_jobs"
    }


def children_of(pid: int) -> set[int]:
    """The live child processes of `pid` (from /proc: no psutil needed)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it exited while we looked
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def test_two_gunicorn_workers_and_a_qcluster_report_into_one_scrape(
    sandbox, tmp_path: Path
) -> None:
    account, _ = sandbox_account(sandbox, "klaviyo", seed=21, jobs_per_kind=3)
    shared = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    cluster = start_command("qcluster", JOBCENTER_Q_WORKERS="2", **shared)
    url = f"http://127.0.0.1:{free_port()}"
    web = subprocess.Popen(
        [*GUNICORN_CONFIGURED, "jobcenter.wsgi", "--bind", url[7:], "--workers", "2"],
        env=production_env(JOBCENTER_METRICS_TOKEN=TOKEN, **shared),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    folder = tmp_path / "metrics"

    def scrape_node() -> Samples:
        answer = requests.get(
            f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )
        assert answer.status_code == 200, answer.text[:500]
        return parse(answer.text)[1]

    def web_up() -> bool:
        try:
            return requests.get(f"{url}/healthz", timeout=10).status_code == 200
        except requests.ConnectionError:
            return web.poll() is not None  # died: stop waiting, the asserts say why

    sent = 0
    lock = threading.Lock()

    def api_request() -> None:
        nonlocal sent
        requests.get(f"{url}/api/v1/jobs/", allow_redirects=False, timeout=30)
        with lock:
            sent += 1

    def both_workers_counted() -> bool:
        threads = [threading.Thread(target=api_request) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        workers = children_of(web.pid)
        return len(workers) == 2 and all((folder / f"counter_{pid}.db").exists() for pid in workers)

    try:
        wait_for(web_up, timeout=60, what="gunicorn to answer")
        assert web.poll() is None
        async_task("jobcenter.tasks.run_sync", account.pk, "manual", sync=False)
        wait_for(
            lambda: SyncRun.objects.filter(account=account, outcome="succeeded").exists(),
            timeout=90,
            what="the cluster's sync",
        )
        wait_for(both_workers_counted, timeout=60, what="both gunicorn workers to answer")
        run = SyncRun.objects.get(account=account)
        assert (folder / f"counter_{run.detail['pid']}.db").exists()

        samples = scrape_node()  # one scrape, served by one of the two workers
        klaviyo = {"provider": "klaviyo"}
        assert total(samples, "jobcenter_sync_runs_total", **klaviyo, outcome="succeeded") == 1
        assert total(samples, "jobcenter_provider_requests_total", **klaviyo) == run.requests > 0
        assert total(samples, "jobcenter_http_responses_total", area="api") == sent
        assert total(samples, "jobcenter_jobs", **klaviyo) == Job.objects.count() > 0

        # The cluster stops: its worker's counts stay, folded into the archive.
        stop(cluster)
        samples = scrape_node()
        assert total(samples, "jobcenter_sync_runs_total", **klaviyo, outcome="succeeded") == 1
        assert total(samples, "jobcenter_provider_requests_total", **klaviyo) == run.requests
        assert not (folder / f"counter_{run.detail['pid']}.db").exists()
        assert (folder / "counter_archive.db").exists()
    finally:
        stop(cluster)
        output = stop(web)  # type: ignore[arg-type]
    assert "Traceback" not in output, output[-3000:]
