"""Search terms as rows of many events (audit.recording.term_rows, migration 0017): a
recording batch writes one row per term and UTC day, up to TERM_ROW_EVENTS events each,
keyed by its newest; the search walks them in time order either way and the retention
job removes a row once every event it holds is gone."""

import random
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from audit.filters import EventFilter
from audit.models import Event, EventTerm
from audit.recording import TERM_ROW_EVENTS, term_hash
from audit.retention import audit_log_purge
from audit.selectors import event_position, event_slice, event_walk
from audit.services import Actor, EventSpec, event_record, event_record_batch, item
from tests.conftest import term_events, term_hashes

GROUP = "platform"


def specs(admin, times):
    return [
        EventSpec(
            action="group_member_added",
            actor=Actor.for_user(admin),
            occurred_at=at,
            context=[item("group", 1, GROUP)],
        )
        for at in times
    ]


def rows(org):
    return list(
        EventTerm.objects.filter(organization=org, term_hash=term_hash(GROUP)).order_by(
            "occurred_at", "event_id"
        )
    )


def ids_of(row) -> list[int]:
    return row.event_ids if row.event_ids is not None else [row.event_id]


def test_a_batch_writes_a_row_per_term_and_day_of_at_most_the_row_size(org, admin):
    day = datetime(2026, 11, 20, tzinfo=UTC)
    times = [day + timedelta(minutes=5 * n) for n in range(TERM_ROW_EVENTS + 10)]
    times += [day + timedelta(days=1, hours=1)]  # the next UTC day: a row of its own
    random.Random(1).shuffle(times)
    ids = event_record_batch(organization=org, specs=specs(admin, times)).event_ids
    found = rows(org)
    assert [len(ids_of(r)) for r in found] == [TERM_ROW_EVENTS, 10, 1]
    assert (found[-1].oldest_at, found[-1].event_ids) == (None, None)  # one event: its own
    assert sorted(term_events(EventTerm.objects.filter(term_hash=term_hash(GROUP)))) == ids
    events = {e.pk: e.occurred_at for e in Event.objects.filter(pk__in=ids)}
    for r in found:
        held = [(events[pk], pk) for pk in ids_of(r)]
        assert held == sorted(held)  # oldest first
        oldest = r.oldest_at or r.occurred_at
        assert (r.occurred_at, r.event_id) == held[-1] and oldest == held[0][0]
        assert oldest.date() == r.occurred_at.date()  # one UTC day
    # Every event's terms are found from it, as before.
    assert all(term_hash(GROUP) in term_hashes(pk) for pk in ids)


@pytest.fixture
def overlapping(org, admin):
    """Events of the group over three days from several batches that overlap in time,
    some at the same instant, and single events among them; and other events."""
    now = timezone.now().replace(microsecond=0)
    rng = random.Random(7)
    times = [now - timedelta(minutes=rng.randrange(3 * 24 * 60)) for _ in range(400)]
    times += [times[0]] * 5 + [times[1]] * 3  # ties, broken by id
    rng.shuffle(times)
    for start in range(0, 300, 100):
        event_record_batch(organization=org, specs=specs(admin, times[start : start + 100]))
    for spec in specs(admin, times[300:]):
        event_record(organization=org, **vars(spec))
    event_record_batch(
        organization=org,
        specs=[EventSpec(action="group_created", occurred_at=t) for t in times[:50]],
    )
    events = Event.objects.filter(organization=org, action__key="group_member_added")
    return [(e.occurred_at, e.pk) for e in events.order_by("-occurred_at", "-id")]


@pytest.mark.parametrize("chunk", [1, 7, 128, 1000])
def test_a_search_walks_every_row_newest_first(org, overlapping, chunk):
    search = EventFilter({"q": GROUP, "range": "7d"}, org=org)
    assert search.is_valid()
    walked = [event_position(e) for e in event_walk(search, limit=10_000, chunk=chunk)]
    assert walked == overlapping


@pytest.mark.parametrize("size", [3, 13, 200])
def test_a_search_pages_oldest_first_too(org, overlapping, size):
    search = EventFilter({"q": GROUP, "range": "7d"}, org=org)
    assert search.is_valid()
    position = (overlapping[-1][0] - timedelta(seconds=1), 0)
    seen = []
    while True:
        page = event_slice(search, position, newer=True, limit=size)
        seen += [event_position(e) for e in page]
        if len(page) < size:
            break
        position = event_position(page[-1])
    assert seen == overlapping[::-1]


def test_a_window_cuts_rows_in_the_middle(org, overlapping):
    start, end = overlapping[300][0], overlapping[100][0]
    search = EventFilter({"q": GROUP, "from": start.isoformat(), "to": end.isoformat()}, org=org)
    assert search.is_valid(), search.errors
    walked = [event_position(e) for e in event_walk(search, limit=10_000, chunk=50)]
    assert walked == [p for p in overlapping if start <= p[0] < end]


def test_the_purge_keeps_a_row_until_its_last_event_goes(org, admin, settings):
    now = timezone.now()
    old = now - timedelta(days=org.plan.retention_days + 2)
    start = old.replace(hour=3, minute=0, second=0, microsecond=0)
    times = [start + timedelta(minutes=n) for n in range(10)]
    ids = event_record_batch(organization=org, specs=specs(admin, times)).event_ids
    keep = event_record(organization=org, **vars(specs(admin, [now - timedelta(days=1)])[0])).event
    assert len(rows(org)) == 2
    taken = []
    audit_log_purge(now=now, batch_size=4, pause=0, on_batch=lambda p: taken.append(p.events))
    assert taken == [4, 8, 10]
    assert [ids_of(r) for r in rows(org)] == [[keep.pk]]
    assert not Event.objects.filter(pk__in=ids).exists()


def test_a_partly_purged_row_shows_only_the_events_left(org, admin):
    now = timezone.now()
    old = now - timedelta(days=org.plan.retention_days)
    times = [old - timedelta(minutes=30)] * 3 + [old + timedelta(minutes=30)] * 2
    ids = event_record_batch(organization=org, specs=specs(admin, times)).event_ids
    audit_log_purge(now=now, batch_size=2, pause=0)
    assert len(rows(org)) == 1 and len(ids_of(rows(org)[0])) == 5  # two events left in it
    search = EventFilter({"q": GROUP, "range": "180d"}, org=org, now=now + timedelta(minutes=1))
    assert search.is_valid(), search.errors
    assert sorted(e.pk for e in event_walk(search, limit=100)) == sorted(ids[3:])


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_migration_0017_groups_the_terms_of_each_day_and_back(org, admin):
    from django.core.management import call_command
    from django.db import connection

    day = datetime(2026, 11, 20, tzinfo=UTC)
    times = [day + timedelta(minutes=7 * n) for n in range(TERM_ROW_EVENTS + 5)]
    times += [day + timedelta(days=1, hours=2)] * 2  # the next day, the same instant
    ids = []
    for start in range(0, len(times), 40):  # several batches: several rows a day
        batch = specs(admin, times[start : start + 40])
        ids += event_record_batch(organization=org, specs=batch).event_ids
    terms = {pk: term_hashes(pk) for pk in ids}
    try:
        call_command("migrate", "audit", "0016", verbosity=0)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT event_id, occurred_at FROM audit_eventterm WHERE term_hash = %s",
                [term_hash(GROUP)],
            )
            old = {pk: at if at.tzinfo else at.replace(tzinfo=UTC) for pk, at in cursor}
        events = dict(Event.objects.filter(pk__in=ids).values_list("pk", "occurred_at"))
        assert old == events  # one row per term and event, at the event's time
    finally:
        call_command("migrate", verbosity=0)
    assert {pk: term_hashes(pk) for pk in ids} == terms
    found = rows(org)
    assert [len(ids_of(r)) for r in found] == [TERM_ROW_EVENTS, 5, 2]
    assert [(r.occurred_at, r.event_id) for r in found] == sorted(
        max((events[pk], pk) for pk in ids_of(r)) for r in found
    )
    search = EventFilter(
        {"q": GROUP, "from": "2026-11-19", "to": "2026-11-22"},
        org=org,
        now=datetime(2026, 11, 25, tzinfo=UTC),
    )
    assert search.is_valid(), search.errors
    walked = [e.pk for e in event_walk(search, limit=1000, chunk=100)]
    assert walked == [pk for _, pk in sorted(((events[pk], pk) for pk in ids), reverse=True)]
