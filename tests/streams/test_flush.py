"""Delivery writes its cursor and delivery log at most every STREAM_FLUSH_SECONDS (and
always when it stops cleanly or a batch fails); a worker that dies in between has
those batches sent again, never skipped. Leases are renewed once half has run. The
fast batch reader serializes exactly as the REST API does."""

import json
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from audit.delivery import Sender
from audit.models import Event, Stream, StreamAttempt
from audit.selectors import event_json
from audit.streams import Delivery, batches_read, leases_take, stream_deliver_burst

from .conftest import deliver, make_stream, settled
from .test_delivery import record_many

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def fresh(stream: Stream) -> Stream:
    return Stream.objects.select_related("organization__plan").get(pk=stream.pk)


def cursor_seen_by_receiver(receiver, stream: Stream) -> list[int]:
    """Makes the receiver note the stream's written cursor as each batch arrives."""
    seen: list[int] = []

    def note(request):
        seen.append(Stream.objects.values_list("cursor_id", flat=True).get(pk=stream.pk))
        connections.close_all()  # the receiver's thread's connection

    receiver.on_request = note
    return seen


def test_the_cursor_is_written_at_most_once_an_interval_and_on_a_clean_stop(
    org, receiver, settings
):
    settings.STREAM_FLUSH_SECONDS = 3600
    stream, _ = make_stream(org, receiver.url)
    start = stream.cursor_id
    ids = record_many(org, 350)
    seen = cursor_seen_by_receiver(receiver, stream)
    settled()
    leases_take("t")
    assert stream_deliver_burst(stream.pk, "t") == "idle"
    assert len(receiver.requests) == 4
    assert seen == [start] * 4, "nothing written while batches went out"
    stream.refresh_from_db()
    assert stream.cursor_id == ids[-1], "written when the burst stopped"
    assert StreamAttempt.objects.filter(stream=stream).count() == 4
    assert stream.last_success_at is not None and stream.failures == 0


def test_with_a_zero_interval_the_cursor_is_written_after_every_batch(org, receiver, settings):
    settings.STREAM_FLUSH_SECONDS = 0
    stream, _ = make_stream(org, receiver.url)
    ids = record_many(org, 250)
    seen = cursor_seen_by_receiver(receiver, stream)
    deliver(stream)
    # The first batch carries the stream's own "added" event and 99 of ours.
    assert seen[1:] == [ids[98], ids[198]]


def test_after_a_crash_delivery_resumes_from_the_written_cursor_duplicates_but_no_gaps(
    org, receiver, settings
):
    settings.STREAM_FLUSH_SECONDS = 3600
    stream, _ = make_stream(org, receiver.url)
    first = record_many(org, 250)
    settled()
    leases_take("dead")
    one = Delivery(fresh(stream), Sender(stream.url), "dead")
    assert one.run(30) == "idle"
    assert one.flush()  # a clean stop
    second = record_many(org, 150)
    settled()
    two = Delivery(fresh(stream), Sender(stream.url), "dead")
    assert two.run(30) == "idle"
    # The worker dies here: what `two` sent was never written.
    stream.refresh_from_db()
    assert stream.cursor_id == first[-1]
    Stream.objects.update(lease_until=timezone.now() - timedelta(seconds=1))  # lapses

    assert deliver(stream) == "idle"
    got = receiver.accepted_ids()
    assert list(dict.fromkeys(got)) == first + second, "all, in order, after dedupe"
    counts = Counter(got)
    assert {counts[i] for i in first} == {1}
    assert {counts[i] for i in second} == {2}, "what the dead worker sent, sent again"
    # The batches sent again carry the same idempotency keys.
    keys = [r.headers["Idempotency-Key"] for r in receiver.requests]
    assert keys[-2:] == keys[-4:-2]


def test_a_lost_lease_stops_delivery_at_the_next_write(org, receiver, settings):
    settings.STREAM_FLUSH_SECONDS = 0
    stream, _ = make_stream(org, receiver.url)
    record_many(org, 250)
    settled()
    leases_take("mine")
    delivery = Delivery(fresh(stream), Sender(stream.url), "mine")
    Stream.objects.update(lease_owner="theirs")  # another loop took over
    assert delivery.run(30) == "lost"
    assert len(receiver.requests) == 1, "stopped after the first batch"
    assert not delivery.flush()
    assert fresh(stream).cursor_id == stream.cursor_id, "nothing written"
    assert not StreamAttempt.objects.filter(stream=stream).exists()


def test_a_failure_writes_what_was_accepted_before_it(org, receiver, settings):
    settings.STREAM_FLUSH_SECONDS, settings.STREAM_RETRY_MAX_SECONDS = 3600, 0
    stream, _ = make_stream(org, receiver.url)
    ids = record_many(org, 250)
    receiver.statuses = [204, 500]
    assert deliver(stream) == "failed"
    stream.refresh_from_db()
    assert stream.cursor_id == ids[98] and stream.failures == 1
    codes = StreamAttempt.objects.filter(stream=stream).order_by("id")
    assert list(codes.values_list("status_code", flat=True)) == [204, 500]


def test_retries_wait_at_most_ten_seconds_by_default(org, receiver, settings):
    assert settings.STREAM_RETRY_MAX_SECONDS == 10
    stream, _ = make_stream(org, receiver.url)
    record_many(org, 1)
    receiver.status = 500
    Stream.objects.update(failures=20)  # 2**20 s uncapped
    deliver(stream)
    stream.refresh_from_db()
    wait = stream.next_attempt_at - timezone.now()
    assert timedelta(seconds=4) < wait <= timedelta(seconds=10)


def test_a_held_lease_is_renewed_only_once_half_has_run(org, receiver, settings):
    settings.STREAM_LEASE_SECONDS = 30
    stream, _ = make_stream(org, receiver.url)
    assert leases_take("one") == [stream.pk]
    until = Stream.objects.get().lease_until
    assert leases_take("one") == [stream.pk]
    assert Stream.objects.get().lease_until == until, "not written again"
    Stream.objects.update(lease_until=timezone.now() + timedelta(seconds=10))
    assert leases_take("one") == [stream.pk]
    assert Stream.objects.get().lease_until > timezone.now() + timedelta(seconds=25)
    assert leases_take("two") == []


def test_batches_carry_the_rest_apis_event_json_and_filters_move_past_the_rest(
    org, jira, confluence, receiver
):
    stream, _ = make_stream(org, receiver.url, product_kinds=["confluence"])
    wanted = record_many(org, 120, action="page_viewed", product=confluence)
    record_many(org, 30, action="issue_viewed", product=jira)
    settled()
    stream = fresh(stream)
    batches, full = batches_read(stream, (stream.cursor_txid, stream.cursor_id), None)
    assert not full
    assert [b.size for b in batches] == [100, 20, 0], "the last: only passed-over events"
    events = Event.objects.select_related("action").in_bulk(wanted)
    sent = [e for b in batches if b.size for e in json.loads(b.body)["data"]]
    assert sent == [event_json(events[pk]) for pk in wanted]
    newest = Event.objects.order_by("-id").first()
    assert batches[-1].position == (newest.txid or 0, newest.pk)
