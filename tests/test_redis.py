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
# what it is told to wait, and prints, for each take, the time just before it, the wait
# it was told, and the time it was allowed to send. The two wait for each other (a Redis
# counter) before the first take and again after it, so their takes overlap whatever
# the machine's load.
TAKER = """
import json, time
from jobcenter.sync.ratelimit import RedisTokenBucketStore, bucket_store
store = bucket_store()
assert isinstance(store, RedisTokenBucketStore), store

def meet(name):
    store.redis.incr(name)
    deadline = time.monotonic() + 60
    while int(store.redis.get(name)) < 2:
        assert time.monotonic() < deadline, "the other process never came"
        time.sleep(0.005)

takes = []
meet({key!r} + ":ready")
for n in range({count}):
    before = time.time()
    wait = store.take({key!r}, {rate}, {capacity})
    time.sleep(wait)
    takes.append((before, wait, time.time()))
    if n == 0:
        meet({key!r} + ":first")
print(json.dumps(takes))
"""


@pytest.mark.django_db(transaction=True)
def test_two_processes_sharing_the_redis_bucket_never_exceed_the_limit_together(
    redis_db,
) -> None:
    rate, capacity, count = 20.0, 5, 30
    key = f"test:{uuid.uuid4().hex}"
    script = TAKER.format(count=count, key=key, rate=rate, capacity=capacity)
    takers = [start_command("shell", "-c", script, REDIS_URL=TEST_REDIS_URL) for _ in range(2)]
    for taker in takers:
        taker.wait(timeout=120)
    outputs = [stop(taker) for taker in takers]
    for taker, output in zip(takers, outputs, strict=True):
        assert taker.returncode == 0, output
    per_process = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
    redis_db.delete(key + ":ready", key + ":first")

    # They really ran side by side: each took its first token before the other's last.
    assert max(p[0][0] for p in per_process) < min(p[-1][2] for p in per_process)
    # A token's slot (when the bucket let it go) lies between the time before the take
    # plus the wait and the time the process sent: load only widens that interval. Any
    # window holding whole intervals holds at most the burst plus the rate times its length.
    slots = sorted((before + wait, sent) for p in per_process for before, wait, sent in p)
    for start, _ in slots:
        for _, end in slots:
            if end <= start:
                continue
            inside = sum(1 for low, high in slots if low >= start and high <= end)
            assert inside <= capacity + rate * (end - start) + 1, (end - start, inside)
    # One budget: 60 tokens at 5 up front and 20 a second take at least 2.75 s from the
    # first take; two budgets would let them go in 1.25 s.
    first = min(before for p in per_process for before, _, _ in p)
    last = max(sent for p in per_process for _, _, sent in p)
    assert last - first >= (2 * count - capacity) / rate - 0.01


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
    started = time.time()
    waits = [store.take("k", 10.0, 3) for _ in range(5)]
    # The bucket refills while the takes run: on a busy machine a wait comes out shorter
    # by up to the time they took, never longer.
    refilled = time.time() - started
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert 0.1 - refilled <= waits[3] <= 0.1 + 1e-9, (waits, refilled)
    assert 0.2 - refilled <= waits[4] <= 0.2 + 1e-9, (waits, refilled)
    time.sleep(0.5)  # five tokens' worth: the debt of two is paid, the bucket is full
    started = time.time()
    assert [store.take("k", 10.0, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = store.take("k", 10.0, 3)
    refilled = time.time() - started
    assert 0.1 - refilled <= wait <= 0.1 + 1e-9, (wait, refilled)
