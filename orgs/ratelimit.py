"""A fixed-window rate limit shared by every web worker and host.

`rate_limit_hit(key, limit, window_seconds)` counts one request against `key` in the
current window (epoch seconds rounded down to a multiple of `window_seconds`) and says
whether it is within `limit`. The count lives in the database (orgs.RateLimitCounter,
one atomic upsert per request) unless RATE_LIMIT_REDIS_URL names a Redis server (INCR
and EXPIRE in one round trip). Either way every process sees the same count.

Refused requests are counted too: a client that keeps hammering stays refused until
the window ends, and no longer."""

import logging
import random
import time
from functools import cache
from typing import NamedTuple

from django.conf import settings
from django.db import connection, transaction

from .models import RateLimitCounter

logger = logging.getLogger(__name__)

# Share of database hits that also remove finished windows (the hourly job does too).
PURGE_CHANCE = 0.01


class RateLimit(NamedTuple):
    allowed: bool
    remaining: int
    reset_epoch: int  # when the window ends (epoch seconds): Retry-After, X-RateLimit-Reset


def rate_limit_hit(key: str, limit: int, window_seconds: int) -> RateLimit:
    """Counts a request against `key`; (allowed, requests left in the window, the
    window's end in epoch seconds)."""
    if limit < 0 or window_seconds < 1:
        raise ValueError("limit must be >= 0 and window_seconds >= 1")
    now = int(time.time())
    window_start = now - now % window_seconds
    reset = window_start + window_seconds
    url = settings.RATE_LIMIT_REDIS_URL
    count = _redis_hit(url, key, window_start, reset) if url else _db_hit(key, window_start, reset)
    return RateLimit(count <= limit, max(0, limit - count), reset)


_UPSERT = (
    "INSERT INTO {table} (key, window_start, reset_at, count) VALUES (%s, %s, %s, 1) "
    "ON CONFLICT (key, window_start) DO UPDATE SET count = {table}.count + 1 "
    "RETURNING count"
)


def _db_hit(key: str, window_start: int, reset: int) -> int:
    table = RateLimitCounter._meta.db_table
    # PostgreSQL: a counter's own transaction need not wait for its WAL to reach the disk
    # (a crash may lose the last counts, as an evicted Redis key would); that wait was
    # 3 of the 4 ms of each API and ingest request's hit. Only when the transaction is
    # its own: it must not make a caller's enclosing transaction's commit asynchronous.
    relaxed = connection.vendor == "postgresql" and not connection.in_atomic_block
    with transaction.atomic():
        with connection.cursor() as cursor:
            if relaxed:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
            cursor.execute(_UPSERT.format(table=table), [key[:200], window_start, reset])
            (count,) = cursor.fetchone()
    if random.random() < PURGE_CHANCE:  # noqa: S311 - not security
        rate_limit_purge(now=window_start)
    return count


def rate_limit_purge(*, now: int | None = None) -> int:
    """Removes the database's finished windows; returns how many."""
    now = int(time.time()) if now is None else now
    return RateLimitCounter.objects.filter(reset_at__lte=now).delete()[0]


@cache
def _redis_client(url: str):
    import redis  # the optional extra: pip install .[redis]

    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)


def _redis_hit(url: str, key: str, window_start: int, reset: int) -> int:
    import redis

    name = f"ratelimit:{key}:{window_start}"
    try:
        pipe = _redis_client(url).pipeline(transaction=True)
        pipe.incr(name)
        pipe.expireat(name, reset + 1)
        count, _ = pipe.execute()
    except (redis.RedisError, OSError):
        # An unreachable Redis must not take the API down with it: count in the
        # database for now (every process falls back alike, so the limit still holds).
        logger.warning("rate limit: Redis unavailable, counting in the database", exc_info=True)
        return _db_hit(key, window_start, reset)
    return int(count)
