"""The activity chart counts per day of the viewer's time zone, DST days included."""

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from audit.charts import activity_chart, daily_counts
from audit.filters import EventFilter
from audit.services import event_record, item

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def at(org, *when: datetime, action="group_created"):
    for moment in when:
        event_record(
            organization=org,
            action=action,
            occurred_at=moment,
            context=[item("group", 1, "engineering")],
        )


def counts(org, tz: str, **data) -> dict:
    events = EventFilter({"range": "30d", **data}, org=org, tz=ZoneInfo(tz), now=NOW)
    assert events.is_valid()
    return {day: n for day, n in daily_counts(events).items() if n}


def test_days_follow_the_viewers_time_zone(org):
    at(org, datetime(2026, 11, 9, 13, 30, tzinfo=UTC), datetime(2026, 11, 9, 12, 30, tzinfo=UTC))
    assert counts(org, "UTC") == {date(2026, 11, 9): 2}
    assert counts(org, "Australia/Sydney") == {date(2026, 11, 9): 1, date(2026, 11, 10): 1}
    # A search counts its term index rows instead of the hourly counts: same answer.
    assert counts(org, "Australia/Sydney", q="engineering") == {
        date(2026, 11, 9): 1,
        date(2026, 11, 10): 1,
    }


def test_the_day_daylight_saving_time_ends(org):
    # New York leaves EDT (UTC-4) for EST (UTC-5) at 06:00 UTC on 1 November 2026.
    at(
        org,
        datetime(2026, 11, 1, 3, 30, tzinfo=UTC),  # 31 Oct 23:30 EDT
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC),  # 1 Nov 01:30 EDT
        datetime(2026, 11, 2, 4, 30, tzinfo=UTC),  # 1 Nov 23:30 EST
    )
    assert counts(org, "America/New_York") == {date(2026, 10, 31): 1, date(2026, 11, 1): 2}


def test_the_chart_has_one_bar_per_day_of_the_range(org):
    at(org, datetime(2026, 11, 19, 10, 0, tzinfo=UTC), action="group_deleted")
    events = EventFilter({"range": "7d"}, org=org, now=NOW)
    events.is_valid()
    chart = activity_chart(events)
    assert [bar.day for bar in chart.bars][0] == date(2026, 11, 13)
    assert chart.bars[-1].day == date(2026, 11, 20)
    assert chart.total == 1
    assert chart.busiest.label == "Thu 19 Nov 2026: 1 activity"
    assert "<title>Thu 19 Nov 2026: 1 activity</title>" in chart.bars_svg()


def test_a_half_hour_zone_splits_its_days_where_its_midnight_falls(org):
    # Kolkata is UTC+5:30 all year: SQLite sums per local day itself (one fixed offset).
    at(
        org,
        datetime(2026, 11, 9, 18, 10, tzinfo=UTC),  # 9 Nov 23:40 IST
        datetime(2026, 11, 9, 19, 10, tzinfo=UTC),  # 10 Nov 00:40 IST
        datetime(2026, 11, 10, 2, 0, tzinfo=UTC),  # 10 Nov 07:30 IST
    )
    expected = {date(2026, 11, 9): 1, date(2026, 11, 10): 2}
    assert counts(org, "Asia/Kolkata") == expected
    assert counts(org, "Asia/Kolkata", action=["group_created"]) == expected
    assert counts(org, "Asia/Kolkata", q="engineering") == expected


def test_an_activity_filter_counts_across_a_clock_change(org):
    at(
        org,
        datetime(2026, 11, 1, 3, 30, tzinfo=UTC),  # 31 Oct 23:30 EDT
        datetime(2026, 11, 2, 4, 30, tzinfo=UTC),  # 1 Nov 23:30 EST
        action="group_deleted",
    )
    at(org, datetime(2026, 11, 1, 5, 30, tzinfo=UTC))  # another activity: not counted
    assert counts(org, "America/New_York", action=["group_deleted"]) == {
        date(2026, 10, 31): 1,
        date(2026, 11, 1): 1,
    }
