"""orgs.ratelimit: a fixed window counted where every process sees it (the database,
or Redis when RATE_LIMIT_REDIS_URL is set)."""

import os
import subprocess
import sys
import time
import uuid

import pytest
from django.conf import settings

from orgs import ratelimit
from orgs.models import RateLimitCounter
from orgs.ratelimit import rate_limit_hit, rate_limit_purge
from tests.conftest import database_url, in_threads

REDIS_URL = os.getenv("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(autouse=True)
def _window_not_ending_soon():
    """A window that ends mid-test would reset the count: start in a fresh second
    well inside a 60 s window."""
    while int(time.time()) % 60 > 50:
        time.sleep(0.5)


def test_it_allows_up_to_the_limit_then_refuses(db):
    results = [rate_limit_hit("key:a", 3, 60) for _ in range(5)]
    assert [r.allowed for r in results] == [True, True, True, False, False]
    assert [r.remaining for r in results] == [2, 1, 0, 0, 0]
    now = int(time.time())
    assert {r.reset_epoch for r in results} == {now - now % 60 + 60}


def test_keys_are_counted_apart(db):
    assert rate_limit_hit("key:a", 1, 60).allowed
    assert rate_limit_hit("key:b", 1, 60).allowed
    assert rate_limit_hit("key:a", 1, 60).allowed is False


def test_a_new_window_starts_over(db, monkeypatch):
    start = 1_700_000_000 - 1_700_000_000 % 60
    monkeypatch.setattr(ratelimit.time, "time", lambda: start + 59.5)
    assert rate_limit_hit("k", 1, 60).allowed
    assert not rate_limit_hit("k", 1, 60).allowed
    monkeypatch.setattr(ratelimit.time, "time", lambda: start + 60.0)
    hit = rate_limit_hit("k", 1, 60)
    assert hit.allowed and hit.reset_epoch == start + 120


def test_finished_windows_are_removed(db, monkeypatch):
    rate_limit_hit("old", 5, 60)
    assert rate_limit_purge(now=int(time.time()) + 61) == 1
    assert not RateLimitCounter.objects.exists()


def test_bad_arguments_are_refused(db):
    with pytest.raises(ValueError):
        rate_limit_hit("k", 5, 0)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_limit_holds_across_connections():
    results = in_threads(lambda: [rate_limit_hit("shared", 10, 60).allowed for _ in range(5)], 4)
    allowed = sum(sum(r) for r in results)
    assert allowed == 10
    assert RateLimitCounter.objects.get(key="shared").count == 20


SUBPROCESS = (
    "from orgs.ratelimit import rate_limit_hit; "
    "print(sum(rate_limit_hit('{key}', 10, 60).allowed for _ in range(8)))"
)


def _in_subprocess(key: str, **env) -> int:
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SUBPROCESS.format(key=key)],
        env={**os.environ, "DATABASE_URL": database_url(), "LOG_LEVEL": "ERROR", **env},
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip().splitlines()[-1])


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_limit_holds_across_processes():
    assert [rate_limit_hit("proc", 10, 60).allowed for _ in range(7)].count(True) == 7
    assert _in_subprocess("proc") == 3  # 7 here + 3 there = the limit
    assert rate_limit_hit("proc", 10, 60).allowed is False


# -- Redis ----------------------------------------------------------------------------


@pytest.fixture
def redis_url(settings):
    redis = pytest.importorskip("redis", reason="the redis extra is not installed")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        if os.getenv("REQUIRE_REDIS"):  # CI (.ci/run): a missing server is a failure
            raise
        pytest.skip(f"no Redis server at {REDIS_URL}")
    settings.RATE_LIMIT_REDIS_URL = REDIS_URL
    return REDIS_URL


def test_redis_counts_without_touching_the_database(redis_url, db):
    key = f"t:{uuid.uuid4()}"
    results = [rate_limit_hit(key, 2, 60) for _ in range(3)]
    assert [r.allowed for r in results] == [True, True, False]
    assert not RateLimitCounter.objects.exists()
    import redis

    client = redis.Redis.from_url(redis_url)
    (name,) = client.keys(f"ratelimit:{key}:*")
    assert 0 < client.ttl(name) <= 61


def test_redis_limit_holds_across_threads_and_processes(redis_url, db):
    key = f"t:{uuid.uuid4()}"
    results = in_threads(lambda: [rate_limit_hit(key, 10, 60).allowed for _ in range(3)], 2)
    assert sum(sum(r) for r in results) == 6
    assert _in_subprocess(key, RATE_LIMIT_REDIS_URL=redis_url) == 4


def test_an_unreachable_redis_falls_back_to_the_database(settings, db):
    pytest.importorskip("redis", reason="the redis extra is not installed")
    settings.RATE_LIMIT_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    assert rate_limit_hit("fallback", 5, 60).allowed
    assert RateLimitCounter.objects.get(key="fallback").count == 1
