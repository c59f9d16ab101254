"""The token-bucket store handed to providers/http.py, shared by every worker.

Buckets live where every `qcluster` process sees them: a Redis hash updated by one Lua
script when REDIS_URL is set; else, on PostgreSQL, a database row (one short write
transaction per take, the row locked); on SQLite, a row in a small SQLite file beside
the database. SQLite has one write lock per file: in the database itself every take
waited for the page a sync was writing, so a sync's prefetching of the next page
stalled behind its own writes (a third of a first sync's time). Either way two workers
syncing accounts of the same provider share one budget and together never exceed the
provider's limit. Times are wall-clock seconds, so workers on
several machines agree (Redis uses its own clock).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from functools import cache

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction

from jobcenter.models import RateLimitBucket
from providers.http import TokenBucketStore


def _refill(tokens: float, updated: float, now: float, rate: float, capacity: float) -> float:
    """Tokens left after refilling since `updated` and taking one (may go below zero)."""
    return min(capacity, tokens + max(0.0, now - updated) * rate) - 1.0


def _wait(tokens: float, rate: float) -> float:
    return 0.0 if tokens >= 0 else -tokens / rate


class DatabaseTokenBucketStore:
    """Buckets as rows; each take is one short transaction with the row locked."""

    def take(self, key: str, rate_per_second: float, capacity: float) -> float:
        with transaction.atomic():
            bucket, created = RateLimitBucket.objects.select_for_update().get_or_create(
                key=key, defaults={"tokens": capacity - 1.0, "updated": time.time()}
            )
            if created:
                return 0.0
            now = time.time()
            bucket.tokens = _refill(bucket.tokens, bucket.updated, now, rate_per_second, capacity)
            bucket.updated = now
            bucket.save(update_fields=["tokens", "updated"])
        return _wait(bucket.tokens, rate_per_second)


class SqliteFileTokenBucketStore:
    """Buckets as rows of their own SQLite file; each take one IMMEDIATE transaction.

    The IMMEDIATE transaction serializes the takes of every process on the machine (the
    only place a SQLite-backed Job Center runs), and its lock is this file's, never the
    database's. One connection per thread, as sqlite3 wants.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.local = threading.local()

    def connection(self) -> sqlite3.Connection:
        connection = getattr(self.local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS bucket"
                " (key TEXT PRIMARY KEY, tokens REAL NOT NULL, updated REAL NOT NULL)"
            )
            self.local.connection = connection
        return connection

    def take(self, key: str, rate_per_second: float, capacity: float) -> float:
        connection = self.connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            now = time.time()
            row = connection.execute(
                "SELECT tokens, updated FROM bucket WHERE key = ?", (key,)
            ).fetchone()
            tokens = (
                capacity - 1.0
                if row is None
                else _refill(row[0], row[1], now, rate_per_second, capacity)
            )
            connection.execute(
                "INSERT INTO bucket (key, tokens, updated) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens,"
                " updated = excluded.updated",
                (key, tokens, now),
            )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return _wait(tokens, rate_per_second)


def sqlite_bucket_file(alias: str = DEFAULT_DB_ALIAS) -> str | None:
    """The bucket file beside a file-backed SQLite database; None for other databases."""
    connection = connections[alias]
    if connection.vendor != "sqlite" or connection.is_in_memory_db():
        return None
    return f"{connection.settings_dict['NAME']}-ratelimit"


# KEYS[1] bucket; ARGV rate, capacity. Returns the tokens left as a string (Lua floats
# would be truncated to integers on the way out).
TAKE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local data = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(data[1]) or capacity
local updated = tonumber(data[2]) or now
local elapsed = now - updated
if elapsed < 0 then elapsed = 0 end
tokens = math.min(capacity, tokens + elapsed * rate) - 1
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 60)
return tostring(tokens)
"""


class RedisTokenBucketStore:
    """Buckets as Redis hashes, updated atomically by one script per take."""

    def __init__(self, url: str, prefix: str = "jobcenter:bucket:") -> None:
        import redis

        self.redis = redis.Redis.from_url(url)
        self.prefix = prefix
        self.script = self.redis.register_script(TAKE_SCRIPT)

    def take(self, key: str, rate_per_second: float, capacity: float) -> float:
        tokens = float(self.script(keys=[self.prefix + key], args=[rate_per_second, capacity]))
        return _wait(tokens, rate_per_second)


@cache
def _store(redis_url: str, sqlite_file: str | None) -> TokenBucketStore:
    if redis_url:
        return RedisTokenBucketStore(redis_url)
    if sqlite_file:
        return SqliteFileTokenBucketStore(sqlite_file)
    return DatabaseTokenBucketStore()


def bucket_store() -> TokenBucketStore:
    """The shared store: Redis when REDIS_URL is set, else the database (or its side file)."""
    return _store(settings.REDIS_URL, sqlite_bucket_file())
