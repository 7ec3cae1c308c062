"""Delivery to a real local receiver: signed, ordered batches of at most 100, filters,
retries until accepted, pause (failures, 410) with an email and an event, resume
replays, out-of-order commits, leases, SSRF at send time.

Transactional: on PostgreSQL delivery sees only committed events below the horizon."""

import json
import threading
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from audit.models import Event, Stream, StreamAttempt
from audit.services import EventSpec, event_record_batch, item
from audit.streams import Author, leases_take, stream_resume, streams_deliver_loop

from ..conftest import record
from .conftest import deliver, make_stream, verified

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def record_many(org, n: int, action="group_created", **kw) -> list[int]:
    specs = [
        EventSpec(action=action, context=[item("group", i, f"group-{i}")], **kw) for i in range(n)
    ]
    return event_record_batch(organization=org, specs=specs).event_ids


@pytest.fixture(autouse=True)
def fast_retries(settings):
    settings.STREAM_RETRY_MAX_SECONDS = 0  # retry at once: the tests drive the clock


def test_it_sends_signed_ordered_batches_of_at_most_100(org, receiver):
    stream, secret = make_stream(org, receiver.url, authorization="Splunk abc123")
    ids = record_many(org, 250)
    assert deliver(stream) == "idle"
    assert [len(r.events) for r in receiver.requests] == [100, 100, 51]  # + added stream
    assert receiver.accepted_ids() == ids
    first = receiver.requests[0]
    assert first.path == "/hook?x=1"
    assert first.headers["Authorization"] == "Splunk abc123"
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["User-Agent"].startswith("AuditLog-Streams/")
    assert first.headers["Idempotency-Key"] == json.loads(first.body)["meta"]["batch"]
    assert verified(first, secret)
    changed = first.body.replace(b"group-0", b"group-X")
    assert changed != first.body
    assert not verified(type(first)(first.path, first.headers, changed, 204), secret)
    assert not verified(first, "whsec_wrong")
    event = first.events[1]
    assert set(event) == {"id", "type", "attributes", "message", "links"}
    assert event["attributes"]["action"] == "group_created"
    stream.refresh_from_db()
    assert stream.health == "healthy" and stream.last_success_at is not None
    assert StreamAttempt.objects.filter(stream=stream).count() == 3


def test_a_new_stream_gets_only_what_is_recorded_after_it(org, receiver):
    before = record_many(org, 3)
    stream, _ = make_stream(org, receiver.url)
    after = record_many(org, 2)
    deliver(stream)
    got = receiver.accepted_ids()
    assert not set(before) & set(got)
    assert set(after) <= set(got)  # and the stream's own "added" event


def test_filters_are_honoured(org, jira, confluence, receiver):
    stream, _ = make_stream(
        org, receiver.url, categories=["user_created"], product_kinds=["confluence"]
    )
    wanted = record_many(org, 3, action="page_viewed", product=confluence)
    record_many(org, 3, action="issue_viewed", product=jira)
    record_many(org, 3)  # groups: another category
    deliver(stream)
    assert receiver.accepted_ids() == wanted
    stream.refresh_from_db()
    assert (
        stream.cursor_id >= max(Event.objects.values_list("id", flat=True))
        or connection.vendor == "postgresql"
    )


def test_failures_are_retried_until_accepted_in_order_none_lost(org, receiver):
    stream, _ = make_stream(org, receiver.url)
    ids = record_many(org, 230)
    receiver.statuses = [500, 503, 500, 200, 500, 200]
    for _ in range(20):
        if deliver(stream) == "idle":
            break
    stream.refresh_from_db()
    delivered = list(dict.fromkeys(receiver.accepted_ids()))  # dedupe by id
    assert delivered == ids
    assert len(receiver.all_ids()) > len(delivered), "failed batches were sent again"
    assert stream.failures == 0 and stream.enabled
    outcomes = list(
        StreamAttempt.objects.filter(stream=stream)
        .order_by("id")
        .values_list("status_code", flat=True)
    )
    assert outcomes[:4] == [500, 503, 500, 200]
    # A batch sent again carries the same idempotency key.
    keys = [r.headers["Idempotency-Key"] for r in receiver.requests]
    assert keys[0] == keys[1] == keys[2] == keys[3]


def test_a_receiver_down_past_the_threshold_pauses_emails_records_and_resume_replays(
    org, admin, receiver, smtp_inbox, settings
):
    inbox, port = smtp_inbox
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.STREAM_PAUSE_AFTER_FAILURES, settings.STREAM_PAUSE_AFTER_MINUTES = 3, 30
    stream, _ = make_stream(org, receiver.url)
    ids = record_many(org, 5)
    receiver.status = 500
    for _ in range(4):
        deliver(stream)
    stream.refresh_from_db()
    assert stream.enabled and stream.failures == 4, "not before M minutes have passed"
    Stream.objects.filter(pk=stream.pk).update(
        first_failure_at=timezone.now() - timedelta(minutes=31)
    )
    assert deliver(stream) == "paused"
    stream.refresh_from_db()
    assert not stream.enabled and stream.health == "paused"
    assert "5 deliveries in a row failed" in stream.paused_reason
    paused = Event.objects.get(action__key="audit_log_webhook_paused")
    assert paused.message.startswith("Streaming to SIEM was paused: 5 deliveries")
    (message,) = inbox.messages
    assert message["To"] == admin.email
    assert message["Subject"] == "Streaming to SIEM was paused"
    assert f"/audit-log/streams/{stream.pk}/" in message.get_body().get_content()
    sent = len(receiver.requests)
    assert deliver(stream) == "not leased", "a paused stream is not delivered"
    assert len(receiver.requests) == sent

    later = record_many(org, 120)
    receiver.status = 200
    assert stream_resume(stream=stream, by=Author())
    deliver(stream)
    delivered = list(dict.fromkeys(receiver.accepted_ids()))
    assert delivered == ids + later, "the backlog, in order, once after dedupe"


def test_410_gone_pauses_at_once(org, receiver):
    stream, _ = make_stream(org, receiver.url)
    record_many(org, 2)
    receiver.status = 410
    assert deliver(stream) == "paused"
    stream.refresh_from_db()
    assert not stream.enabled and stream.failures == 1
    assert stream.paused_reason == "Paused: the receiver answered 410 Gone."
    assert Event.objects.filter(action__key="audit_log_webhook_paused").count() == 1


def test_an_event_committed_late_is_still_delivered_in_order(org, receiver):
    """A records first and stays open; B records after and commits; a delivery runs.
    Then A commits: both arrive, A before B, none twice."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time: commits cannot come out of order")
    stream, _ = make_stream(org, receiver.url)
    deliver(stream)
    opened, release, ids = threading.Event(), threading.Event(), {}

    def writer_a():
        try:
            with transaction.atomic():
                ids["a"] = record(org, ago=timedelta(hours=5)).pk
                opened.set()
                release.wait(30)
        finally:
            connections.close_all()

    thread = threading.Thread(target=writer_a)
    thread.start()
    try:
        assert opened.wait(30)
        ids["b"] = record(org, ago=timedelta(minutes=1)).pk
        assert ids["a"] < ids["b"]
        # Not settled: the horizon is held by A, on purpose.
        token = "t"
        leases_take(token)
        from audit.streams import stream_deliver_burst

        stream_deliver_burst(stream.pk, token)
        assert ids["b"] not in receiver.accepted_ids(), "B waits behind A's open transaction"
    finally:
        release.set()
        thread.join(30)
    Stream.objects.update(lease_owner="", lease_until=None)
    deliver(stream)
    got = receiver.accepted_ids()
    assert ids["a"] in got and ids["b"] in got
    assert got.index(ids["a"]) < got.index(ids["b"])
    assert len(got) == len(set(got))


def test_a_transaction_in_another_database_does_not_hold_the_stream_back(org, receiver):
    """The horizon is this database's oldest running transaction, not the server's:
    a long transaction elsewhere on the server cannot write an event here."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's horizon")
    import psycopg

    from audit.selectors import stream_horizon

    db = connection.settings_dict
    params = {"host": db["HOST"], "port": db["PORT"], "user": db["USER"]}
    other = psycopg.connect(dbname="postgres", password=db["PASSWORD"] or None, **params)
    try:
        (xid,) = other.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
        stream, _ = make_stream(org, receiver.url)
        ids = record_many(org, 3)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            assert cursor.fetchone()[0] <= xid, "the server's oldest is the other one"
        assert stream_horizon() > max(Event.objects.values_list("txid", flat=True))
        leases_take("t")
        from audit.streams import stream_deliver_burst

        stream_deliver_burst(stream.pk, "t")
        assert receiver.accepted_ids() == ids, "delivered while the other one runs"
    finally:
        other.rollback()
        other.close()


def test_only_one_loop_holds_a_stream(org, receiver):
    stream, _ = make_stream(org, receiver.url)
    assert leases_take("one") == [stream.pk]
    assert leases_take("two") == []
    assert leases_take("one") == [stream.pk]  # renewal
    Stream.objects.update(lease_until=timezone.now() - timedelta(seconds=1))
    assert leases_take("two") == [stream.pk]  # a lapsed lease is taken over


def test_the_loop_delivers_and_stops_when_nothing_is_enabled(org, receiver, settings):
    stream, _ = make_stream(org, receiver.url)
    ids = record_many(org, 3)
    from .conftest import settled

    settled()
    result = streams_deliver_loop(seconds=1.5, poll=0.1)
    assert set(ids) <= set(receiver.accepted_ids())
    assert result["rounds"] > 1 and result["handover"]
    Stream.objects.update(enabled=False)
    assert streams_deliver_loop(seconds=5, poll=0.1) == {"rounds": 0, "handover": False}


def test_a_rotated_secret_and_the_previous_one_both_sign_during_the_grace(org, receiver):
    from audit.streams import stream_secret_rotate

    stream, old = make_stream(org, receiver.url)
    new = stream_secret_rotate(stream=stream, by=Author())
    record_many(org, 1)
    deliver(stream)
    last = receiver.requests[-1]
    assert last.headers["X-Audit-Signature"].count("v1=") == 2
    assert verified(last, old) and verified(last, new)
    Stream.objects.update(previous_secret_until=timezone.now() - timedelta(seconds=1))
    record_many(org, 1)
    deliver(stream)
    last = receiver.requests[-1]
    assert last.headers["X-Audit-Signature"].count("v1=") == 1
    assert verified(last, new) and not verified(last, old)


def test_a_destination_that_turned_private_is_refused_at_send_time(org, receiver, settings):
    stream, _ = make_stream(org, receiver.url)
    record_many(org, 2)
    settings.STREAM_ALLOW_PRIVATE_HOSTS = False
    assert deliver(stream) == "failed"
    assert receiver.requests == []
    attempt = StreamAttempt.objects.get(stream=stream)
    assert attempt.status_code is None
    assert attempt.error.startswith("Refused: 127.0.0.1 resolves to 127.0.0.1, a loopback address")
