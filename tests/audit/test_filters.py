"""EventFilter: the one filter definition the page, the export and the API share."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.filters import EventFilter
from audit.selectors import cursor_make, event_json, event_page
from audit.services import Actor, event_record, item, user_item
from orgs.models import Organization, Plan

from ..conftest import make_user

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def record(org, action="group_created", ago=timedelta(hours=1), **kw):
    kw.setdefault("context", [item("group", 1, "engineering")])
    return event_record(organization=org, action=action, occurred_at=NOW - ago, **kw).event


def ids(f):
    return [e.pk for e in f.qs]


def test_it_defaults_to_the_last_7_days_newest_first(org):
    recent = record(org, ago=timedelta(days=1))
    newest = record(org, ago=timedelta(minutes=5))
    record(org, ago=timedelta(days=8))
    f = EventFilter({}, org=org, now=NOW)
    assert f.is_valid()
    assert ids(f) == [newest.pk, recent.pk]
    assert f.summary() == ["Last 7 days", "All activities"]


def test_it_searches_an_exact_term_case_insensitively(org, admin):
    carol = make_user("carol@acme.test", org, name="Carol Jones")
    hit = record(org, "group_member_added", context=[user_item(carol), item("group", 1, "eng")])
    record(org, "group_member_added", context=[user_item(admin), item("group", 1, "eng")])
    for q in ("carol@acme.test", "  CAROL@acme.test ", "carol jones"):
        f = EventFilter({"q": q}, org=org, now=NOW)
        assert ids(f) == [hit.pk], q
    assert ids(EventFilter({"q": "carol"}, org=org, now=NOW)) == []
    assert EventFilter({"q": "Carol@acme.test"}, org=org, now=NOW).summary()[0] == (
        "Search: carol@acme.test"
    )


def test_the_search_never_uses_like(org):
    f = EventFilter({"q": "carol@acme.test"}, org=org, now=NOW)
    sql = str(f.qs.query).upper()
    assert " LIKE " not in sql


def test_it_filters_by_activity(org):
    created = record(org, "group_created")
    deleted = record(org, "group_deleted", ago=timedelta(hours=2))
    record(org, "group_renamed", ago=timedelta(hours=3))
    f = EventFilter({"action": ["group_created", "group_deleted"]}, org=org, now=NOW)
    assert ids(f) == [created.pk, deleted.pk]
    assert f.summary()[-1] == "Activity: Created group, Deleted group"


def test_it_refuses_activities_the_plan_does_not_cover(db):
    standard = Organization.objects.create(name="S", plan=Plan.objects.get(key="guard-standard"))
    f = EventFilter({"action": ["page_viewed"]}, org=standard, now=NOW)
    assert not f.is_valid()
    assert "Unknown activity" in str(f.errors["action"])


@pytest.mark.parametrize(
    "range_,hours", [("24h", 24), ("7d", 168), ("30d", 720), ("90d", 2160), ("180d", 4320)]
)
def test_presets(org, range_, hours):
    f = EventFilter({"range": range_}, org=org, now=NOW)
    assert f.is_valid()
    assert f.window.start == NOW - timedelta(hours=hours)


def test_custom_dates_are_read_in_the_viewers_time_zone(org):
    sydney = ZoneInfo("Australia/Sydney")
    inside = record(org, ago=NOW - datetime(2026, 11, 9, 13, 30, tzinfo=UTC))  # 10th, 00:30 AEDT
    record(org, ago=NOW - datetime(2026, 11, 9, 12, 30, tzinfo=UTC))  # 9th, 23:30 AEDT
    f = EventFilter({"from": "2026-11-10", "to": "2026-11-10"}, org=org, tz=sydney, now=NOW)
    assert f.is_valid()
    assert ids(f) == [inside.pk]
    assert f.range_label() == "10 Nov 2026 – 10 Nov 2026 (Australia/Sydney)"


def test_the_window_never_reaches_past_retention(org):
    record(org, ago=timedelta(days=181))
    kept = record(org, ago=timedelta(days=179))
    f = EventFilter({"range": "custom", "from": "2020-01-01"}, org=org, now=NOW)
    assert f.is_valid()
    assert f.window.clipped
    assert ids(f) == [kept.pk]


@pytest.mark.parametrize(
    "data,field",
    [
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-11-10", "to": "2026-11-01"}, "to"),
        ({"q": "x" * 201}, "q"),
        ({"range": "forever"}, "range"),
        ({"action": ["nope"]}, "action"),
        ({"to": "9999-12-31"}, "to"),
    ],
)
def test_bad_input_is_a_form_error(org, data, field):
    f = EventFilter(data, org=org, now=NOW)
    assert not f.is_valid()
    assert field in f.errors
    assert list(f.qs) == []


def test_params_rebuild_the_same_filter_with_an_absolute_window(org):
    f = EventFilter({"q": "Eng", "range": "30d", "action": ["group_created"]}, org=org, now=NOW)
    assert f.is_valid()
    params = f.params()
    assert params == {
        "range": "custom",
        "from": "2026-10-21T12:00:00Z",
        "to": "2026-11-20T12:00:00Z",
        "q": "eng",
        "action": ["group_created"],
    }
    again = EventFilter(params, org=org, now=NOW + timedelta(hours=5))
    assert again.is_valid(), again.errors
    assert again.window.start == f.window.start
    assert again.window.end == NOW
    assert str(again.qs.query) == str(
        EventFilter(params, org=org, now=NOW + timedelta(hours=5)).qs.query
    )


def test_paging_has_no_gaps_or_repeats_when_times_are_shared(org):
    same = timedelta(hours=2)
    events = [record(org, ago=same) for _ in range(7)] + [record(org, ago=timedelta(hours=1))]
    expected = [e.pk for e in sorted(events, key=lambda e: (e.occurred_at, e.pk), reverse=True)]
    f = EventFilter({}, org=org, now=NOW)
    seen, cursor, pages = [], None, []
    while True:
        page = event_page(f, cursor, 3, scope=str(org.pk))
        pages.append(page)
        seen += [e.pk for e in page.events]
        cursor = page.older_cursor
        if not cursor:
            break
    assert seen == expected
    back = event_page(f, pages[-1].newer_cursor, 3, scope=str(org.pk))
    assert [e.pk for e in back.events] == [e.pk for e in pages[-2].events]
    top = event_page(f, pages[1].newer_cursor, 3, scope=str(org.pk))
    assert [e.pk for e in top.events] == [e.pk for e in pages[0].events]
    assert top.newer_cursor is None


@pytest.mark.parametrize(
    "data", [{}, {"q": "engineering"}, {"action": ["group_created", "group_deleted"]}]
)
def test_paging_works_on_every_query_path(org, data):
    for n in range(5):
        record(org, "group_created" if n % 2 else "group_deleted", ago=timedelta(minutes=n))
    f = EventFilter(data, org=org, now=NOW)
    first = event_page(f, None, 2, scope=str(org.pk))
    second = event_page(f, first.older_cursor, 2, scope=str(org.pk))
    third = event_page(f, second.older_cursor, 2, scope=str(org.pk))
    got = [e.pk for p in (first, second, third) for e in p.events]
    assert got == ids(f)
    assert third.older_cursor is None


def test_a_tampered_or_foreign_cursor_gives_the_first_page_and_a_message(org):
    event = record(org)
    f = EventFilter({}, org=org, now=NOW)
    for cursor in (
        "garbage",
        cursor_make(event, newer=False, scope="999"),
        cursor_make(event, newer=False, scope=str(org.pk))[:-2] + "xx",
    ):
        page = event_page(f, cursor, 3, scope=str(org.pk))
        assert page.cursor_error
        assert [e.pk for e in page.events] == [event.pk]


def test_the_page_query_does_not_count(org):
    record(org)
    f = EventFilter({"q": "engineering"}, org=org, now=NOW)
    with CaptureQueriesContext(connection) as queries:
        event_page(f, None, 50, scope=str(org.pk))
    sql = " ".join(q["sql"].upper() for q in queries.captured_queries)
    assert "COUNT(" not in sql and "OFFSET" not in sql


def test_event_json_has_the_api_shape(org, admin):
    event = record(
        org,
        "group_member_added",
        actor=Actor.for_user(admin),
        context=[user_item(admin), item("group", 3, "eng")],
        ip="203.0.113.9",
    )
    data = event_json(event)
    assert data["id"] == str(event.pk)
    assert data["type"] == "events"
    assert data["attributes"]["action"] == "group_member_added"
    assert data["attributes"]["actor"] == {
        "id": str(admin.pk),
        "name": "Alice Admin",
        "email": "alice@acme.test",
    }
    assert data["attributes"]["location"]["ip"] == "203.0.113.9"
    assert data["attributes"]["time"] == "2026-11-20T11:00:00.000Z"
    assert data["message"] == {"content": event.message, "format": "simple"}
    assert data["links"]["self"].endswith(f"/admin/v1/orgs/{org.pk}/events/{event.pk}")
