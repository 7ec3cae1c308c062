"""The events stream: every event once, in the order it was recorded, with processedAt;
a cursor on the last page too, which later returns only what was recorded since; never
a skip or a repeat, even when recording transactions commit out of order.

On PostgreSQL the stream serves only events whose transaction is older than every one
still running, so these tests commit for real (transactional database)."""

import random
import threading
import time
from datetime import UTC, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection, connections, transaction
from django.db.models import Max
from django.utils import timezone

from audit.models import Event

from ..conftest import in_threads
from .conftest import record
from .test_endpoints import ISO_Z, assert_event_shape

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
VERSIONS = ["v1", "v2"]


def recording_order(org) -> list[int]:
    keys = ("txid", "id") if connection.vendor == "postgresql" else ("id",)
    return list(Event.objects.filter(organization=org).order_by(*keys).values_list("pk", flat=True))


def settle(org, timeout: float = 60) -> None:
    """PostgreSQL: waits until every committed event of `org` is past the stream's
    horizon (the oldest transaction still running on the whole server, any database).
    A long transaction elsewhere holds the stream back, by design; if one outlasts
    `timeout` the test cannot say anything and skips, naming it."""
    if connection.vendor != "postgresql":
        return
    newest = Event.objects.filter(organization=org).aggregate(m=Max("txid"))["m"] or 0
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            if cursor.fetchone()[0] > newest:
                return
            if time.monotonic() > deadline:
                cursor.execute(
                    "SELECT pid, datname, now() - xact_start, left(query, 80) FROM "
                    "pg_stat_activity WHERE backend_xid IS NOT NULL OR backend_xmin IS NOT NULL"
                )
                pytest.skip(f"another transaction holds the stream back: {cursor.fetchall()}")
            time.sleep(0.2)


def poll(
    api, org, cursor=None, *, limit=200, version="v1", wait=True, **params
) -> tuple[list[dict], str]:
    """Every page from `cursor` until an empty one: (events, the cursor to go on from).
    `wait`: first let every committed event reach the stream (settle)."""
    if wait:
        settle(org)
    seen = []
    for _ in range(200):
        body = api.json(
            f"/admin/{version}/orgs/{org.pk}/events-stream",
            {"limit": limit, **params, **({"cursor": cursor} if cursor else {})},
        )
        assert body["meta"]["next"], "a cursor on every page, the last one too"
        next_query = parse_qs(urlsplit(body["links"]["next"]).query)
        assert next_query["cursor"] == [body["meta"]["next"]]
        seen += body["data"]
        cursor = body["meta"]["next"]
        if not body["data"]:
            return seen, cursor
    raise AssertionError("the stream never ran dry")


@pytest.mark.parametrize("version", VERSIONS)
def test_it_gives_every_event_once_in_recording_order(api, org, version):
    api.json("/admin/v1/orgs")  # the key's first use is an event: record it first
    now = timezone.now()
    for n in range(12):  # occurred_at out of order: the stream follows recording
        record(org, occurred_at=now - timedelta(hours=(n * 7) % 12))
    seen, cursor = poll(api, org, limit=5, version=version)
    assert [int(e["id"]) for e in seen] == recording_order(org)
    assert len(seen) == 14
    for one in seen:
        assert_event_shape(one)
        assert ISO_Z.match(one["attributes"]["processedAt"])
    processed = [one["attributes"]["processedAt"] for one in seen]
    assert processed == sorted(processed)
    event = Event.objects.get(pk=seen[-1]["id"])
    assert processed[-1] == event.recorded_at.astimezone(UTC).isoformat(
        timespec="milliseconds"
    ).replace("+00:00", "Z")
    without = {k: v for k, v in seen[-1]["attributes"].items() if k != "processedAt"}
    one = api.json(f"/admin/{version}/orgs/{org.pk}/events/{event.pk}")["data"]
    assert {**seen[-1], "attributes": without} == one

    # Calling again with the last cursor: only what was recorded since.
    again, same = poll(api, org, cursor, version=version)
    assert again == []
    late = [record(org, ago=timedelta(days=3)).pk, record(org).pk]
    again, _ = poll(api, org, same, version=version)
    assert [int(e["id"]) for e in again] == late


def test_the_last_page_has_a_cursor_and_exact_fits_page_on(api, org):
    api.json("/admin/v1/orgs")
    for _ in range(4):
        record(org)
    settle(org)
    body = api.json(f"/admin/v1/orgs/{org.pk}/events-stream", {"limit": 6})
    assert body["meta"]["page_size"] == 6 and body["meta"]["next"]
    assert set(body["links"]) == {"self", "next"}
    rest = api.json(
        f"/admin/v1/orgs/{org.pk}/events-stream", {"limit": 6, "cursor": body["meta"]["next"]}
    )
    assert rest["data"] == [] and rest["meta"] == {"next": body["meta"]["next"], "page_size": 0}


def test_sort_order_desc_pages_newest_first(api, org):
    api.json("/admin/v1/orgs")
    for _ in range(9):
        record(org)
    ascending = [int(e["id"]) for e in poll(api, org, limit=4)[0]]
    descending, cursor = poll(api, org, limit=4, sortOrder="desc")
    assert [int(e["id"]) for e in descending] == ascending[::-1]
    body = api.json(
        f"/admin/v1/orgs/{org.pk}/events-stream", {"sortOrder": "desc", "cursor": cursor}
    )
    assert body["data"] == []


@pytest.mark.parametrize("value", ["up", "ASC", "", "descending"])
def test_a_bad_sort_order_is_400(api, org, value):
    response = api.get(f"/admin/v1/orgs/{org.pk}/events-stream", {"sortOrder": value})
    assert response.status_code == 400, response.content
    (error,) = response.json()["errors"]
    assert error["status"] == "400" and "sortOrder" in error["detail"]


def test_from_and_to_bound_the_processing_time(api, org):
    api.json("/admin/v1/orgs")
    before = [record(org).pk for _ in range(3)]
    time.sleep(0.01)
    start = timezone.now()
    time.sleep(0.01)
    during = [record(org, ago=timedelta(days=5)).pk for _ in range(3)]
    time.sleep(0.01)
    end = timezone.now()
    time.sleep(0.01)
    after = [record(org).pk for _ in range(2)]
    iso = {"from": start.isoformat(), "to": end.isoformat()}
    assert [int(e["id"]) for e in poll(api, org, **iso)[0]] == during
    ms = {"from": str(int(start.timestamp() * 1000) + 1), "to": str(int(end.timestamp() * 1000))}
    assert [int(e["id"]) for e in poll(api, org, **ms)[0]] == during
    assert [int(e["id"]) for e in poll(api, org, **{"to": end.isoformat()})[0]][-3:] == during
    assert [int(e["id"]) for e in poll(api, org, **{"from": end.isoformat()})[0]] == after
    assert before[0] in [int(e["id"]) for e in poll(api, org)[0]]


def test_another_orgs_events_never_show(api, org, other_org):
    api.json("/admin/v1/orgs")
    mine = record(org).pk
    record(other_org)
    assert [int(e["id"]) for e in poll(api, org)[0]][-1] == mine
    assert all(Event.objects.get(pk=e["id"]).organization_id == org.pk for e in poll(api, org)[0])


def test_an_out_of_order_commit_is_neither_skipped_nor_repeated(api, org):
    """Transaction A records first and stays open; B records after and commits; the
    poller must not move past A's place. Then A commits: A and B come once each."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time: commits cannot come out of order")
    api.json("/admin/v1/orgs")
    seen, cursor = poll(api, org)
    recorded, release = threading.Event(), threading.Event()
    ids: dict[str, int] = {}

    def writer_a():
        try:
            with transaction.atomic():
                # Another hour than B's: recording the same organization and hour takes
                # one row lock (the hourly totals), which would make B wait for A.
                ids["a"] = record(org, ago=timedelta(hours=5)).pk
                recorded.set()
                release.wait(30)
        finally:
            connections.close_all()

    def writer_b():
        try:
            ids["b"] = record(org, ago=timedelta(minutes=1)).pk  # autocommit
        finally:
            connections.close_all()

    thread = threading.Thread(target=writer_a)
    thread.start()
    try:
        assert recorded.wait(30)
        b = threading.Thread(target=writer_b)  # B: written after A, committed first
        b.start()
        b.join(15)
        assert not b.is_alive(), "B waited for A's transaction"
        assert ids["a"] < ids["b"]
        assert Event.objects.filter(pk=ids["b"]).exists()
        assert not Event.objects.filter(pk=ids["a"]).exists()  # not committed yet
        while_open, cursor = poll(api, org, cursor, wait=False)
        got = [int(e["id"]) for e in while_open]
        assert ids["b"] not in got, "B is ordered after A's open transaction: not yet"
        seen += while_open
    finally:
        release.set()
        thread.join(30)
    after, cursor = poll(api, org, cursor)
    seen += after
    got = [int(e["id"]) for e in after]
    assert ids["a"] in got and ids["b"] in got
    assert got.index(ids["a"]) < got.index(ids["b"])
    every = [int(e["id"]) for e in seen]
    assert len(every) == len(set(every)), "an event came twice"
    assert sorted(every) == sorted(
        Event.objects.filter(organization=org).values_list("pk", flat=True)
    )
    assert poll(api, org, cursor)[0] == []


def test_many_writers_and_a_poller_see_every_event_exactly_once(api, org):
    """Four writers, some holding their transactions open a while, and a poller that
    keeps reading: in the end every event came once, none twice."""
    api.json("/admin/v1/orgs")
    seen, cursor = poll(api, org)
    stop = threading.Event()
    polled: list[dict] = []
    failures: list[BaseException] = []

    def poller():
        nonlocal cursor
        try:
            while not stop.is_set():
                more, cursor = poll(api, org, cursor, limit=7, wait=False)
                polled.extend(more)
                time.sleep(0.005)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)
        finally:
            connections.close_all()

    def writer():
        rng = random.Random()
        for _ in range(12):
            with transaction.atomic():
                record(org, ago=timedelta(minutes=rng.randint(1, 600)))
                time.sleep(rng.choice([0, 0, 0.002, 0.02]))
        return True

    reader = threading.Thread(target=poller)
    reader.start()
    try:
        in_threads(writer, 4)
    finally:
        stop.set()
        reader.join(60)
    assert not failures, failures
    rest, cursor = poll(api, org, cursor)
    every = [int(e["id"]) for e in seen + polled + rest]
    assert len(every) == len(set(every)), "an event came twice"
    assert sorted(every) == sorted(
        Event.objects.filter(organization=org).values_list("pk", flat=True)
    )
    assert len(every) == 4 * 12 + 2
