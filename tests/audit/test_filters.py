"""EventFilter: the one filter definition the page, the export and the API share."""

from datetime import UTC, datetime, timedelta
from functools import partial
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.charts import daily_counts
from audit.filters import EventFilter
from audit.models import Event
from audit.selectors import (
    cursor_make,
    cursor_read,
    event_json,
    event_list,
    event_page,
    event_page_at,
    event_position,
    event_slice,
)
from audit.services import SYSTEM, Actor, Location, item, user_item
from orgs.models import Organization, Plan

from ..conftest import event_matches, make_user
from ..conftest import record as shared_record

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


record = partial(shared_record, now=NOW)


def ids(f):
    return [e.pk for e in event_list(filters=f)]


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
    sql = str(event_list(filters=f).query).upper()
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
    assert list(event_list(filters=f)) == []


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
    assert str(event_list(filters=again).query) == str(
        event_list(filters=EventFilter(params, org=org, now=NOW + timedelta(hours=5))).query
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
        cursor_make(event_position(event), newer=False, scope="999"),
        cursor_make(event_position(event), newer=False, scope=str(org.pk))[:-2] + "xx",
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
        "links": {},
    }
    assert data["attributes"]["context"] == [
        {
            "id": str(admin.pk),
            "type": "user",
            "attributes": {"name": "Alice Admin", "email": "alice@acme.test"},
            "links": {},
        },
        {"id": "3", "type": "group", "attributes": {"name": "eng"}, "links": {}},
    ]
    assert data["attributes"]["location"]["ip"] == "203.0.113.9"
    assert data["attributes"]["time"] == "2026-11-20T11:00:00.000Z"
    assert data["message"] == {"content": event.message, "format": "simple"}
    assert data["links"]["self"].endswith(f"/admin/v1/orgs/{org.pk}/events/{event.pk}")


# -- the API's filters: actor, ip, product, location, epoch milliseconds ----------------

PLACES = [
    Location("Germany", "Berlin", "Berlin"),
    Location("Germany", "Bavaria", "Munich"),
    Location("France", "", "Paris"),
    None,
]
PATHS = [{}, {"q": "engineering"}, {"action": ["group_created", "group_deleted"]}]


@pytest.fixture
def varied(org, admin, jira, confluence):
    """Events of every combination the API's filters tell apart, on all three paths."""
    actors = [
        Actor.for_user(admin),
        Actor(Event.ActorType.USER, "ext-42", "Ext", "Mixed.Case@Example.COM"),
        Actor.for_token(7, "ci-token"),
        SYSTEM,
    ]
    ips = ["203.0.113.9", "2001:db8::1", None]
    products = [jira, confluence, None]
    actions = ["group_created", "group_deleted", "group_renamed"]
    for n in range(36):
        record(
            org,
            actions[n % 3],
            ago=timedelta(minutes=n + 1),
            actor=actors[n % 4],
            ip=ips[n % 3],
            product=products[(n // 3) % 3],
            location=PLACES[(n // 2) % 4],
            context=[item("group", 1, "engineering" if n % 7 != 3 else "marketing")],
        )
    return {"admin": admin, "jira": jira}


def api_cases(varied) -> list[dict]:
    admin, jira = varied["admin"], varied["jira"]
    return [
        {"actor": [str(admin.pk)]},
        {"actor": ["ALICE@acme.test", "mixed.case@example.com"]},
        {"actor": ["7", "nobody@acme.test"]},
        {"ip": ["203.0.113.9"]},
        {"ip": ["2001:DB8:0::1", "203.0.113.9"]},
        {"product": ["jira"]},
        {"product": [str(jira.pk), "confluence"]},
        {"location": '[{"city": "Berlin", "countryName": "Germany"}]'},
        {"location": '[{"countryName": "Germany"}, {"city": "Paris"}]'},
        {"location": '[{"regionName": "Bavaria", "city": "Berlin"}]'},
        {"actor": [str(admin.pk)], "ip": ["203.0.113.9"], "product": ["jira"]},
        {"location": '[{"countryName": "Germany"}]', "actor": ["7"]},
    ]


@pytest.mark.parametrize("path", PATHS)
def test_the_api_filters_return_every_match_and_only_matches(org, varied, path):
    for case in api_cases(varied):
        data = {**path, **case}
        f = EventFilter(data, org=org, now=NOW)
        assert f.is_valid(), (data, f.errors)
        everything = EventFilter(path, org=org, now=NOW)
        expected = [e.pk for e in event_list(filters=everything) if event_matches(e, case)]
        assert ids(f) == expected, data
        assert expected or "Bavaria" in case.get("location", ""), data  # no vacuous pass
        paged, cursor = [], None
        while True:
            page = event_page(f, cursor, 4, scope=str(org.pk))
            paged += [e.pk for e in page.events]
            if not (cursor := page.older_cursor):
                break
        assert paged == expected, data


def test_the_api_filters_survive_params_and_links(org, varied):
    data = {"actor": ["7"], "ip": ["2001:db8::1"], "product": ["jira"]}
    data["location"] = '[{"city": "Berlin"}]'
    f = EventFilter(data, org=org, now=NOW)
    assert f.is_valid(), f.errors
    again = EventFilter(f.params(), org=org, now=NOW + timedelta(hours=1))
    assert again.is_valid(), again.errors
    assert ids(again) == ids(f)
    assert ("location", '[{"city": "Berlin"}]') in f.query_items()
    assert "IP address: 2001:db8::1" in f.summary()


def test_the_chart_counts_what_the_api_filters_select(org, varied):
    f = EventFilter({"actor": ["7"], "range": "30d"}, org=org, now=NOW)
    assert f.is_valid()
    assert sum(daily_counts(f).values()) == len(ids(f)) > 0


@pytest.mark.parametrize(
    "location",
    [
        "Berlin",
        '{"city": "Berlin"}',
        "[]",
        "[{}]",
        '[{"town": "Berlin"}]',
        '[{"city": 3}]',
        '["Berlin"]',
        "[" * 5000,
    ],
)
def test_a_bad_location_is_a_clear_error(org, location):
    f = EventFilter({"location": location}, org=org, now=NOW)
    assert not f.is_valid()
    assert f.errors["location"], location
    assert list(event_list(filters=f)) == []


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("ip", "203.0.113", "is not an IPv4 or IPv6 address"),
        ("product", "x" * 41, "is not a product"),
        ("product", "9" * 20, "is not a product"),
        ("actor", "x" * 255, "too long"),
    ],
)
def test_bad_api_values_are_form_errors(org, field, value, message):
    f = EventFilter({field: [value]}, org=org, now=NOW)
    assert not f.is_valid()
    assert message in str(f.errors[field])


def test_from_and_to_may_be_epoch_milliseconds(org):
    inside = record(org, ago=timedelta(hours=3))
    record(org, ago=timedelta(hours=30))
    start = int((NOW - timedelta(hours=4)).timestamp() * 1000)
    end = int((NOW - timedelta(hours=2)).timestamp() * 1000)
    f = EventFilter({"from": str(start), "to": str(end)}, org=org, now=NOW)
    assert f.is_valid(), f.errors
    assert f.window.start == NOW - timedelta(hours=4)
    assert f.window.end == NOW - timedelta(hours=2)
    assert ids(f) == [inside.pk]
    for bad in ("1700000000", "99999999999999"):  # 1970; 14 digits is not milliseconds
        assert not EventFilter({"from": bad}, org=org, now=NOW).is_valid(), bad


def test_a_page_either_way_from_a_position(org):
    events = [record(org, ago=timedelta(minutes=n)) for n in range(1, 6)]
    f = EventFilter({}, org=org, now=NOW)
    middle = event_position(events[2])
    older = event_page_at(f, middle, size=2)
    assert [e.pk for e in older.events] == [events[3].pk, events[4].pk]
    assert older.newer_position == event_position(events[3]) and older.older_position is None
    newer = event_slice(f, middle, newer=True, limit=2)
    assert [e.pk for e in newer] == [events[1].pk, events[0].pk]
    signed = cursor_make(middle, newer=True, scope="api", salt="api")
    assert cursor_read(signed, scope="api", salt="api") == (middle, True)


def test_a_page_holds_its_columns_and_reads_the_rest_only_when_asked(org):
    from audit.selectors import PAGE_COLUMNS

    record(org, "group_created", context=[item("group", 1, "engineering")])
    f = EventFilter({}, org=org, now=NOW)
    assert f.is_valid()
    (event,) = event_page(f, None, scope=str(org.pk)).events
    stored = Event.objects.get(pk=event.pk)
    for column in PAGE_COLUMNS:
        assert getattr(event, column) == getattr(stored, column)
    assert event.action.key == "group_created" and event.occurred_at.tzinfo is not None
    assert "context" in event.get_deferred_fields()
    assert event.context == stored.context  # deferred: read on demand, still right
    assert event == stored and not event._state.adding
