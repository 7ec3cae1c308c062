"""Many processes, one truth (scale issue): two gunicorn instances and two `qcluster`
clusters against one PostgreSQL and one Redis (the django-q2 broker and the rate
limiter's counters), as a deployment with N web hosts and M worker hosts runs.

One test, because the processes take seconds to start and the scheduler fires only
every 30 seconds: it shows that each scheduled job runs once per period, an export is
built once and mailed once, the API rate limit holds across both web instances, and
the stream delivers every event recorded through either instance in order and without
a gap after the worker delivering it is killed mid-task (the other takes the stream
over when its lease lapses; at-least-once: the batch in flight may come again)."""

import json
import os
import signal
import time
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import Schedule, Task

from audit.models import Event, Stream
from audit.streams import Author, stream_create
from exports.models import ExportRequest
from orgs.services import api_key_create, ingest_key_create

from ..api.conftest import live_api_start, live_api_stop
from ..conftest import qcluster_running, redis_broker

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

QUEUE_REDIS_URL = os.getenv("TEST_SCALE_Q_REDIS_URL", "redis://127.0.0.1:6379/9")
COUNTER_REDIS_URL = os.getenv("TEST_SCALE_RATE_REDIS_URL", "redis://127.0.0.1:6379/10")
RATE_LIMIT = 10
SCHEDULER_TICK = 30  # django-q2's scheduler runs every 30 s in each cluster


def until(predicate, timeout: float, what: str, logs=()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    tails = "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in logs)
    pytest.fail(f"timed out waiting for {what}\n{tails}")


def ingest(server, secret: str, events: list[dict]) -> list[int]:
    """Event ids of `events` pushed through `server`'s ingest endpoint."""
    request = urllib.request.Request(
        f"{server.url}/ingest/v1/events",
        data=json.dumps({"events": events}).encode(),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        results = json.loads(response.read())["results"]
    assert {r["status"] for r in results} == {"recorded"}, results[:3]
    return [int(r["eventId"]) for r in results]


def api_status(server, path: str, secret: str) -> int:
    request = urllib.request.Request(
        server.url + path, headers={"Authorization": f"Bearer {secret}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def in_order_once(ids: list[int]) -> list[int]:
    seen: set[int] = set()
    return [i for i in ids if not (i in seen or seen.add(i))]


@pytest.fixture
def redis_counters():
    redis = pytest.importorskip("redis")
    counters = redis.Redis.from_url(COUNTER_REDIS_URL, socket_connect_timeout=1)
    try:
        counters.flushdb()
    except redis.RedisError:
        if os.getenv("REQUIRE_REDIS"):
            raise
        pytest.skip(f"no Redis server at {COUNTER_REDIS_URL}")
    yield
    counters.flushdb()


def test_two_web_instances_and_two_workers_share_one_database_and_one_redis(
    org, admin, jira, client, receiver, smtp_inbox, redis_counters, tmp_path, settings, monkeypatch
):
    if connection.vendor != "postgresql":
        pytest.skip("one PostgreSQL shared by every process: the production layout")
    inbox, smtp_port = smtp_inbox
    settings.SITE_URL = "http://testserver"
    settings.PRIVATE_STORAGE_DIR = tmp_path / "private"
    monkeypatch.setattr(Conf, "SYNC", False)  # this process enqueues; the workers run
    broker = redis_broker(monkeypatch, QUEUE_REDIS_URL)
    shared = {
        **broker,
        "RATE_LIMIT_REDIS_URL": COUNTER_REDIS_URL,
        "API_RATE_LIMIT": str(RATE_LIMIT),
        "API_RATE_WINDOW": "3600",
        "INGEST_RATE_LIMIT": "1000",
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp_port),
        "SITE_URL": settings.SITE_URL,
        "PRIVATE_STORAGE_DIR": str(settings.PRIVATE_STORAGE_DIR),
        "STREAM_ALLOW_PRIVATE_HOSTS": "true",
        "STREAM_LEASE_SECONDS": "3",
        "Q_WORKERS": "3",  # the sealing and delivery loops hold one each
        "AUDIT_SIGNING_KEY": settings.AUDIT_SIGNING_KEY,  # sealing runs too
    }
    # Every schedule is due now: the first scheduler tick of either cluster takes it.
    started = timezone.now()
    Schedule.objects.update(next_run=started - timedelta(seconds=1))
    periods = {Schedule.MINUTES: None, Schedule.HOURLY: 60, Schedule.DAILY: 24 * 60}
    schedules = {
        name: timedelta(minutes=periods[kind] or minutes)
        for name, kind, minutes in Schedule.objects.values_list("name", "schedule_type", "minutes")
    }
    assert "audit: deliver streams" in schedules and len(schedules) >= 5, schedules
    _, ingest_secret = ingest_key_create(product=jira, name="scale", by=None)
    _, api_secret = api_key_create(organization=org, name="scale", days=1, by=None)
    batches = iter(range(100))

    def batch() -> list[dict]:
        n, now = next(batches), timezone.now().isoformat()
        return [
            {
                "id": f"scale-{n}-{i}",
                "time": now,
                "action": "group_created",
                "actor": {
                    "type": "user",
                    "id": "u-7",
                    "name": "Dana Dev",
                    "email": "dana@acme.test",
                },
                "context": [{"type": "group", "id": f"g{n}-{i}", "name": f"team {n}-{i}"}],
            }
            for i in range(50)
        ]

    dirs = {name: tmp_path / name for name in ("web-a", "web-b", "worker-a", "worker-b")}
    for path in dirs.values():
        path.mkdir()
    webs = []
    with (
        qcluster_running(dirs["worker-a"], **shared) as (worker_a, log_a),
        qcluster_running(dirs["worker-b"], **shared) as (worker_b, log_b),
    ):
        try:
            clusters_started = time.monotonic()
            webs = [live_api_start(dirs[name], **shared) for name in ("web-a", "web-b")]
            logs = [dirs[n] / "qcluster.log" for n in ("worker-a", "worker-b")]
            logs += [w.log for w in webs]
            stream, _ = stream_create(organization=org, name="SIEM", url=receiver.url, by=Author())
            until(lambda: receiver.accepted_ids(own=True), 120, "the first delivery", logs)

            # Events through both web instances, interleaved.
            recorded = []
            for n in range(6):
                recorded += ingest(webs[n % 2], ingest_secret, batch())

            # One count across both instances (Redis): exactly RATE_LIMIT answers.
            path = f"/admin/v1/orgs/{org.pk}/events?limit=5"
            statuses = [api_status(webs[n % 2], path, api_secret) for n in range(RATE_LIMIT + 4)]
            assert statuses == [200] * RATE_LIMIT + [429] * 4

            # An export: built by one worker, mailed once.
            client.force_login(admin)
            response = client.post(
                reverse("exports:export-create", args=[org.pk]), {"range": "24h"}
            )
            assert response.status_code == 302
            until(lambda: inbox.messages, 60, "the export's email", logs)

            # Each schedule once per period: both clusters have passed their first tick.
            wait = SCHEDULER_TICK + 5 - (time.monotonic() - clusters_started)
            time.sleep(max(0.0, wait))
            until(
                lambda: (
                    set(
                        Task.objects.filter(group__in=schedules, started__gte=started).values_list(
                            "group", flat=True
                        )
                    )
                    == set(schedules)
                ),
                30,
                "every schedule to have run",
                logs,
            )
            runs = Task.objects.filter(group__in=schedules, started__gte=started)
            for name, period in schedules.items():
                times = sorted(runs.filter(group=name).values_list("started", flat=True))
                close = [b - a for a, b in zip(times, times[1:]) if b - a < period / 2]  # noqa: B905
                assert not close, f"{name} ran twice within one period: {times}"

            # Kill (SIGKILL, the whole cluster) the worker delivering the stream, mid-task;
            # events keep coming through both instances.
            owner_pid = int(Stream.objects.get(pk=stream.pk).lease_owner.split(":")[1])
            holder = worker_a if os.getpgid(owner_pid) == worker_a.pid else worker_b
            survivor = worker_b if holder is worker_a else worker_a
            assert os.getpgid(owner_pid) == holder.pid
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait()
            for n in range(4):
                recorded += ingest(webs[n % 2], ingest_secret, batch())

            expected = list(
                Event.objects.filter(organization=org, id__gte=receiver.accepted_ids(own=True)[0])
                .order_by("txid", "id")
                .values_list("id", flat=True)
            )
            assert set(recorded) <= set(expected)
            until(
                lambda: set(expected) <= set(receiver.accepted_ids(own=True)),
                SCHEDULER_TICK * 2 + 15,
                "the surviving worker to deliver the rest",
                logs,
            )
            assert survivor.poll() is None
        finally:
            for web in webs:
                live_api_stop(web)

    delivered = receiver.accepted_ids(own=True)
    assert in_order_once(delivered)[: len(expected)] == expected, "in order, no gap"
    repeated = len(delivered) - len(in_order_once(delivered))
    assert repeated <= 1000, "only the batch in flight when the worker died comes again"

    (message,) = inbox.messages  # still one
    export = ExportRequest.objects.get()
    assert export.status == "ready" and export.attempts == 1
    assert message["Subject"] == "Your audit log is ready to download"
