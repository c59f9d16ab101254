"""Redis as broker and as rate-limit store, with real processes.

Skipped only when nothing answers on 127.0.0.1:6379 (CI runs Redis). The tests use their
own Redis database number, so a developer's broker queue on database 0 is left alone,
and keys unique to each run.
"""

from __future__ import annotations

import json
import socket
import time
import uuid

import pytest
from django.test import Client, override_settings

from jobcenter.models import SyncRun
from tests.factories import sandbox_account
from tests.processes import start_command, stop, wait_for


def redis_answers() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not redis_answers(), reason="no Redis on 127.0.0.1:6379")

TEST_REDIS_URL = "redis://127.0.0.1:6379/11"
QUEUE_KEY = "django_q:jobcenter:q"  # django-q2's list for the cluster named "jobcenter"


@pytest.fixture
def redis_db():  # type: ignore[no-untyped-def]
    import redis

    client = redis.Redis.from_url(TEST_REDIS_URL)
    client.delete(QUEUE_KEY)  # a task left by an interrupted run would run here
    yield client
    client.delete(QUEUE_KEY)


@pytest.mark.django_db(transaction=True)
def test_a_qcluster_on_the_redis_broker_runs_a_sync_queued_by_another_process(
    sandbox, redis_db
) -> None:
    from django_q.models import OrmQ, Success

    account, _ = sandbox_account(sandbox, "klaviyo", seed=5, jobs_per_kind=2, name="via redis")
    # The web tier's side: "sync now" in a process of its own, configured for Redis.
    enqueue = start_command(
        "shell",
        "-c",
        f"from jobcenter.tasks import enqueue_sync; print(enqueue_sync({account.pk}))",
        REDIS_URL=TEST_REDIS_URL,
    )
    enqueue.wait(timeout=60)
    output = stop(enqueue)
    assert enqueue.returncode == 0, output
    assert redis_db.llen(QUEUE_KEY) == 1, output  # on Redis, not in the database
    assert not OrmQ.objects.exists()

    cluster = start_command("qcluster", REDIS_URL=TEST_REDIS_URL, JOBCENTER_Q_WORKERS="1")
    try:
        wait_for(
            lambda: SyncRun.objects.filter(account=account, outcome="succeeded").exists(),
            timeout=60,
            what="the sync queued on Redis",
        )
        wait_for(lambda: Success.objects.exists(), timeout=20, what="the task result")
    finally:
        cluster_output = stop(cluster)
    assert redis_db.llen(QUEUE_KEY) == 0
    run = SyncRun.objects.get(account=account)
    assert run.trigger == "manual"
    assert run.jobs_created == 26, cluster_output[-2000:]
    assert Success.objects.get().func == "jobcenter.tasks.run_sync"


# Each process takes tokens through the store jobcenter hands to the HTTP client, sleeps
# what it is told to wait, and prints the times it was allowed to send.
TAKER = """
import json, time
from jobcenter.sync.ratelimit import RedisTokenBucketStore, bucket_store
store = bucket_store()
assert isinstance(store, RedisTokenBucketStore), store
time.sleep(max(0.0, {start} - time.time()))
stamps = []
for _ in range({count}):
    time.sleep(store.take({key!r}, {rate}, {capacity}))
    stamps.append(time.time())
print(json.dumps(stamps))
"""


@pytest.mark.django_db(transaction=True)
def test_two_processes_sharing_the_redis_bucket_never_exceed_the_limit_together(
    redis_db,
) -> None:
    rate, capacity, count = 20.0, 5, 30
    key = f"test:{uuid.uuid4().hex}"
    start = time.time() + 4  # both processes have started Django by then
    script = TAKER.format(start=start, count=count, key=key, rate=rate, capacity=capacity)
    takers = [start_command("shell", "-c", script, REDIS_URL=TEST_REDIS_URL) for _ in range(2)]
    for taker in takers:
        taker.wait(timeout=60)
    outputs = [stop(taker) for taker in takers]
    for taker, output in zip(takers, outputs, strict=True):
        assert taker.returncode == 0, output
    per_process = [json.loads(output.strip().splitlines()[-1]) for output in outputs]

    # They really ran side by side...
    assert max(p[0] for p in per_process) < min(p[-1] for p in per_process)
    stamps = sorted(per_process[0] + per_process[1])
    # ...and together kept to one budget: in any window, at most the burst plus the rate.
    slack = 0.05  # clock reads and sleeps in two processes
    for i, first in enumerate(stamps):
        for window in (0.5, 1.0):
            inside = sum(1 for t in stamps[i:] if t < first + window)
            assert inside <= capacity + rate * (window + slack) + 1, (window, inside)
    # Separate budgets would send 60 requests in about 1.25 s; one budget needs 2.75 s.
    assert stamps[-1] - stamps[0] >= (2 * count - capacity) / rate - 0.1


@override_settings(REDIS_URL=TEST_REDIS_URL)
@pytest.mark.django_db
def test_health_pings_the_redis_broker_and_counts_its_queue(client: Client, redis_db) -> None:
    redis_db.rpush(QUEUE_KEY, b"one", b"two")
    response = client.get("/healthz")
    assert response.status_code == 200
    broker = response.json()["checks"]["broker"]
    assert broker["ok"] and broker["broker"] == "redis"
    assert broker["queued"] == 2


def test_redis_store_refills_at_the_rate() -> None:
    """The store alone: a burst of `capacity`, then one token per 1/rate seconds."""
    from jobcenter.sync.ratelimit import RedisTokenBucketStore

    store = RedisTokenBucketStore(TEST_REDIS_URL, prefix=f"test:{uuid.uuid4().hex}:")
    waits = [store.take("k", 10.0, 3) for _ in range(5)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == pytest.approx(0.1, abs=0.02)
    assert waits[4] == pytest.approx(0.2, abs=0.02)
    time.sleep(0.5)  # five tokens' worth: the debt of two is paid, the bucket is full
    assert [store.take("k", 10.0, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert store.take("k", 10.0, 3) == pytest.approx(0.1, abs=0.02)
