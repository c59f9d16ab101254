"""The token-bucket store handed to providers/http.py, shared by every worker.

Buckets live where every `qcluster` process sees them: a database row by default (one
short write transaction per take; on SQLite the IMMEDIATE transaction serializes the
takes of all processes), or a Redis hash updated by one Lua script when REDIS_URL is
set. Either way two workers syncing accounts of the same provider share one budget and
together never exceed the provider's limit. Times are wall-clock seconds, so workers on
several machines agree (Redis uses its own clock).
"""

from __future__ import annotations

import time
from functools import cache

from django.conf import settings
from django.db import transaction

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
def _store(redis_url: str) -> TokenBucketStore:
    if redis_url:
        return RedisTokenBucketStore(redis_url)
    return DatabaseTokenBucketStore()


def bucket_store() -> TokenBucketStore:
    """The shared store: Redis when REDIS_URL is set, else the database."""
    return _store(settings.REDIS_URL)
