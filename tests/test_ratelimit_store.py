"""The rate-limit bucket store on SQLite, and the WAL checkpoints a sync leaves to a helper."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from django.db import connection, connections, transaction

from jobcenter.models import ProviderAccount
from jobcenter.sqlite_engine.checkpoints import background_checkpoints
from jobcenter.sync.ratelimit import SqliteFileTokenBucketStore, bucket_store

sqlite_only = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="SQLite's single write lock and its WAL"
)


@sqlite_only
def test_sqlite_buckets_live_in_their_own_file_beside_the_database(settings) -> None:
    settings.REDIS_URL = ""
    store = bucket_store()
    assert isinstance(store, SqliteFileTokenBucketStore)
    assert store.path == f"{connection.settings_dict['NAME']}-ratelimit"


@sqlite_only
def test_a_bucket_refills_at_its_rate_and_tells_how_long_to_wait(tmp_path) -> None:
    store = SqliteFileTokenBucketStore(str(tmp_path / "buckets"))
    other = SqliteFileTokenBucketStore(str(tmp_path / "buckets"))  # another process's view
    started = time.time()
    waits = [store.take("k", rate_per_second=1.0, capacity=3.0) for _ in range(5)]
    waits.append(other.take("k", rate_per_second=1.0, capacity=3.0))
    # The bucket refilled for as long as the takes took (at one token a second): on a
    # busy machine the waits come out shorter by that much, never longer.
    refilled = time.time() - started
    assert waits[:3] == [0.0, 0.0, 0.0]  # the burst
    for n, expected in ((3, 1.0), (4, 2.0), (5, 3.0)):  # then one a second, shared
        assert expected - refilled <= waits[n] <= expected, (n, waits, refilled)
    assert other.take("another key", rate_per_second=1.0, capacity=3.0) == 0.0


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_a_take_never_waits_for_a_write_to_the_database(settings) -> None:
    # A sync holds the database's write lock while it writes a page; its prefetch thread
    # takes tokens meanwhile. Were the buckets in the database, the take would wait.
    settings.REDIS_URL = ""
    holding, release = threading.Event(), threading.Event()

    def write_a_page() -> None:
        try:
            with transaction.atomic():  # IMMEDIATE: the write lock from BEGIN on
                ProviderAccount.objects.update(last_error="writing")
                holding.set()
                release.wait(120)
        finally:
            connections.close_all()

    writer = threading.Thread(target=write_a_page)
    writer.start()
    try:
        assert holding.wait(60)
        taken: list[float] = []
        taker = threading.Thread(
            target=lambda: taken.append(bucket_store().take("test-lock", 10.0, 10.0))
        )
        taker.start()
        # The writer holds the lock until released (up to 120 s): a take that waited for
        # it would still be waiting after 60 s, or fail on the 30 s busy timeout.
        taker.join(60)
        assert taken == [0.0], "the take waited for the database's write lock"
    finally:
        release.set()
        writer.join()


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_during_a_long_write_commits_only_append_and_a_helper_checkpoints() -> None:
    def autocheckpoint() -> int:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_autocheckpoint")
            return cursor.fetchone()[0]

    seen_in_new_connections: list[int] = []

    def open_a_connection() -> None:  # as the prefetch thread does, mid-sync
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute("PRAGMA wal_autocheckpoint")
                seen_in_new_connections.append(cursor.fetchone()[0])
        finally:
            connections.close_all()

    database_file = Path(connection.settings_dict["NAME"])
    before = autocheckpoint()
    with background_checkpoints():
        assert autocheckpoint() == 0
        thread = threading.Thread(target=open_a_connection)
        thread.start()
        thread.join()
        # In WAL mode commits write the log; only a checkpoint writes the database file.
        time.sleep(0.5)  # any checkpoint of earlier writes is done
        written = database_file.stat().st_mtime_ns
        for n in range(50):
            ProviderAccount.objects.create(name=f"account {n}", provider="klaviyo")
        deadline = time.monotonic() + 60  # polling: on time, it returns at once
        while database_file.stat().st_mtime_ns == written and time.monotonic() < deadline:
            time.sleep(0.05)
        assert database_file.stat().st_mtime_ns > written, "nothing checkpointed the log"
    assert seen_in_new_connections == [0]
    assert autocheckpoint() == before


@sqlite_only
@pytest.mark.django_db
def test_inside_a_transaction_nothing_changes() -> None:
    with transaction.atomic(), background_checkpoints(), connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_autocheckpoint")
        assert cursor.fetchone()[0] > 0
