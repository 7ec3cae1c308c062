"""Activity per day for the current filters, drawn server-side as an SVG bar chart.

One aggregate query, grouped by day in the viewer's time zone: by PostgreSQL itself, or
on SQLite (which knows no time zones) by hour in the database and by day here. Without
a search it sums the counts kept at write time (EventHourlyTotal, or EventHourlyCount
for an Activity filter), so its cost depends on the number of hours in the range, never
on the number of events; those counts are whole UTC hours, so the first bar may include
activity from up to 59 minutes before the range starts. With a search it counts the
term index rows in the window, and with the API's row filters (actor, ip, product,
location) the events themselves, which is exact.
"""

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property

from django.db import connection
from django.db.models import CharField, Count, Func, IntegerField, Sum
from django.db.models.functions import TruncDate
from django.utils.safestring import SafeString, mark_safe

from .filters import EventFilter
from .models import EventHourlyCount, EventHourlyTotal
from .selectors import event_list, event_term_rows

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
CHART_WIDTH = 1000  # viewBox units; the SVG stretches to its container
CHART_HEIGHT = 160


class HourBucket(Func):
    """SQLite: the UTC hour of a datetime column as 'YYYY-MM-DD HH' text, a prefix of
    the UTC text SQLite keeps (PostgreSQL groups by the local day itself, below)."""

    output_field = CharField()
    template = "substr(%(expressions)s, 1, 13)"


class EventCount(Func):
    """How many events a term row holds (EventTerm.event_ids; NULL: one)."""

    output_field = IntegerField()
    template = "coalesce(cardinality(%(expressions)s), 1)"

    def as_sqlite(self, compiler, connection, **extra):
        template = "coalesce(json_array_length(%(expressions)s), 1)"
        return self.as_sql(compiler, connection, template=template, **extra)


class _LocalDays:
    """Maps UTC hours, as SQLite text ('YYYY-MM-DD HH...'), to dates in `tz`, working
    out the zone's offset once per UTC day (per hour only on the days it changes)."""

    def __init__(self, tz):
        self.tz = tz
        self.offsets: dict[date, int | None] = {}  # minutes east of UTC on that UTC day

    def __call__(self, hour_text: str) -> date:
        day, hour = date.fromisoformat(hour_text[:10]), int(hour_text[11:13])
        offset = self.offsets.get(day, 0)
        if offset == 0 and day not in self.offsets:
            midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
            first = midnight.astimezone(self.tz).utcoffset()
            last = (midnight + timedelta(hours=23)).astimezone(self.tz).utcoffset()
            offset = self.offsets[day] = int(first.total_seconds() // 60) if first == last else None
        if offset is None:
            return (
                datetime(day.year, day.month, day.day, hour, tzinfo=UTC).astimezone(self.tz).date()
            )
        return day + timedelta(days=(hour * 60 + offset) // 1440)


@dataclass(frozen=True)
class Bar:
    day: date
    count: int
    x: float
    y: float
    width: float
    height: float

    @property
    def count_display(self) -> str:
        return f"{self.count:,}"

    @property
    def center_percent(self) -> str:
        return f"{(self.x + self.width / 2) / CHART_WIDTH * 100:.2f}"

    @property
    def day_display(self) -> str:
        day = self.day  # by hand: strftime per bar showed in profiles of 180-day charts
        return f"{DAY_NAMES[day.weekday()]} {day.day} {MONTH_NAMES[day.month - 1]} {day.year}"

    @property
    def label(self) -> str:
        noun = "activity" if self.count == 1 else "activities"
        return f"{self.day_display}: {self.count:,} {noun}"


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    total: int
    peak: int
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT

    @property
    def total_display(self) -> str:
        return f"{self.total:,} activit{'y' if self.total == 1 else 'ies'}"

    @property
    def peak_display(self) -> str:
        return f"{self.peak:,}"

    @cached_property
    def busiest(self) -> Bar | None:
        return max(self.bars, key=lambda b: b.count) if self.total else None

    @property
    def busiest_day(self) -> str:
        """The busiest day as the heading names it: "Thu 19 Nov"."""
        day = self.busiest.day if self.busiest else None
        return f"{DAY_NAMES[day.weekday()]} {day.day} {MONTH_NAMES[day.month - 1]}" if day else ""

    @property
    def description(self) -> str:
        if not self.bars:
            return "No days in range."
        first, last = self.bars[0].day, self.bars[-1].day
        text = (
            f"{self.total:,} activities from {first.day} {first:%b %Y} to {last.day} {last:%b %Y}"
        )
        if self.busiest:
            text += f"; busiest day {self.busiest.label}"
        return text + "."

    # The three below are built here rather than in the template (180 bars through
    # template tags cost ~10 ms, the axis's seven labels ~0.5 ms), and without
    # escaping: every value is a number or a date this module formatted, never user
    # input.

    def bars_svg(self) -> SafeString:
        """The bars as SVG rects, each with a <title> tooltip; empty days draw nothing."""
        return mark_safe(
            "".join(
                f'<rect x="{b.x:.2f}" y="{b.y:.2f}" width="{b.width:.2f}" '
                f'height="{b.height:.2f}"><title>{b.label}</title></rect>'
                for b in self.bars
                if b.count
            )
        )

    def rows_html(self) -> SafeString:
        return mark_safe(
            "".join(f"<tr><td>{b.day_display}</td><td>{b.count:,}</td></tr>" for b in self.bars)
        )

    def axis_svg(self) -> SafeString:
        """The x axis's date labels (ticks) as SVG text: the first and last at the
        edges, the others centred under their bars."""
        ticks, parts = self.ticks, []
        for n, bar in enumerate(ticks):
            if n == 0:
                x, anchor = "0", "start"
            elif n == len(ticks) - 1:
                x, anchor = "100", "end"
            else:
                x, anchor = bar.center_percent, "middle"
            label = f"{bar.day.day} {MONTH_NAMES[bar.day.month - 1]}"
            parts.append(f'<text x="{x}%" y="1em" text-anchor="{anchor}">{label}</text>')
        return mark_safe("".join(parts))

    @property
    def ticks(self) -> list[Bar]:
        """Up to 7 evenly spaced bars whose dates label the x axis."""
        n = len(self.bars)
        if n <= 10:
            return self.bars
        step = (n - 1) / 6
        return [self.bars[round(i * step)] for i in range(7)]


def daily_counts(events: EventFilter) -> dict[date, int]:
    """Activities per day of the viewer's time zone, over the filter's window."""
    if not events.is_valid() or not events.org.plan.audit_log:
        return {}
    window = events.window
    postgres = connection.vendor == "postgresql"
    if events.cleaned_data["q"] or events.has_row_filters:
        # Rows the hourly counts cannot tell apart: counted one by one, exactly.
        # A search alone: its term rows, each row's events counted at its newest's time
        # (a row holds one UTC day of a term's events: audit.recording.term_rows).
        by_rows = events.cleaned_data["q"] and not (events.has_row_filters or events.action_ids)
        rows = event_term_rows(events) if by_rows else event_list(filters=events)
        rows = rows.order_by()
        total = Sum(EventCount("event_ids")) if by_rows else Count("*")
        if postgres:
            return _per_local_day(rows, "occurred_at", total, events.tz)
        rows = rows.annotate(bucket=HourBucket("occurred_at")).values("bucket")
        rows = rows.annotate(n=total).values_list("bucket", "n").order_by()
    else:
        first_hour = window.start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        # Without an Activity filter the per-hour totals (24 rows a day); with one, the
        # hourly counts of those activities along index hourly_org_action_hour.
        model = EventHourlyCount if events.action_ids else EventHourlyTotal
        return _hours_per_day(model, events, first_hour)
    local_day = _LocalDays(events.tz)
    per_day: Counter[date] = Counter()
    for bucket, n in rows:
        per_day[local_day(bucket)] += n
    return per_day


def _per_local_day(qs, column: str, total, tz) -> dict[date, int]:
    """PostgreSQL groups by the viewer's day itself (`AT TIME ZONE`): a few hundred rows
    back instead of thousands of hours to convert here."""
    rows = qs.annotate(day=TruncDate(column, tzinfo=tz)).values("day").annotate(n=total)
    return dict(rows.values_list("day", "n").order_by())


def _hours_per_day(model, events: EventFilter, first_hour: datetime) -> dict[date, int]:
    """The hourly counts in the window summed per day of the viewer's zone, by a
    written-out query: built through the ORM it cost more than it ran (on PostgreSQL
    0.6 of the 0.9 ms the page's chart took).

    PostgreSQL groups by the local day itself (`AT TIME ZONE`). On SQLite, when the
    zone keeps one UTC offset over the whole window (always for UTC; for most zones
    outside the weeks around a clock change) SQLite shifts each hour by it and sums per
    local day itself: a few rows back instead of 24 a day. Otherwise the hours come
    back as SQLite's UTC text, each mapped to its local day here (_LocalDays)."""
    window, quote = events.window, connection.ops.quote_name
    adapt = connection.ops.adapt_datetimefield_value
    where, params = "organization_id = %s AND hour >= %s", [events.org.pk, adapt(first_hour)]
    if window.end is not None:
        where += " AND hour < %s"
        params.append(adapt(window.end))
    if events.action_ids:
        where += f" AND action_id IN ({', '.join(['%s'] * len(events.action_ids))})"
        params += events.action_ids
    table = quote(model._meta.db_table)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT (hour AT TIME ZONE %s)::date, SUM(count) FROM {table}"
                f" WHERE {where} GROUP BY 1",
                [_zone_name(events.tz), *params],
            )
            return dict(cursor.fetchall())
    offset = _fixed_offset_minutes(events.tz, first_hour, window.end or events.now)
    with connection.cursor() as cursor:
        if offset is not None:
            cursor.execute(
                f"SELECT date(hour, '{offset:+d} minutes'), SUM(count) FROM {table}"
                f" WHERE {where} GROUP BY 1",
                params,
            )
            return {date.fromisoformat(day): n for day, n in cursor.fetchall()}
        # Grouped by the column itself, which the primary key index already orders.
        cursor.execute(
            f"SELECT hour || '', SUM(count) FROM {table} WHERE {where} GROUP BY hour", params
        )
        rows = cursor.fetchall()
    local_day = _LocalDays(events.tz)
    per_day: Counter[date] = Counter()
    for bucket, n in rows:
        per_day[local_day(bucket)] += n
    return per_day


def _zone_name(tz) -> str:
    """The zone's name as PostgreSQL's AT TIME ZONE takes it (a zoneinfo key)."""
    return "UTC" if tz is UTC else str(getattr(tz, "key", tz))


def _fixed_offset_minutes(tz, start: datetime, end: datetime) -> int | None:
    """The UTC offset of `tz` in whole minutes if it is the same from `start` to `end`
    (looked at every 12 hours: no zone changes its clocks twice within a day), else
    None."""
    if getattr(tz, "key", None) in ("UTC", "Etc/UTC") or tz is UTC:
        return 0
    offsets = set()
    moment = start
    while moment < end:
        offsets.add(moment.astimezone(tz).utcoffset())
        moment += timedelta(hours=12)
    offsets.add(end.astimezone(tz).utcoffset())
    if len(offsets) != 1:
        return None
    offset = offsets.pop().total_seconds()
    return int(offset // 60) if offset % 60 == 0 else None


def activity_chart(events: EventFilter) -> Chart:
    counts = daily_counts(events)
    window = events.window
    end = window.end or events.now
    first = window.start.astimezone(events.tz).date()
    last = (end - timedelta(microseconds=1)).astimezone(events.tz).date()
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    peak = max((counts.get(d, 0) for d in days), default=0)
    slot = CHART_WIDTH / max(len(days), 1)
    gap = min(slot * 0.2, 6)
    bars = []
    for n, day in enumerate(days):
        count = counts.get(day, 0)
        height = (count / peak * (CHART_HEIGHT - 4)) if peak else 0
        if count and height < 2:
            height = 2  # a day with any activity stays visible
        bars.append(Bar(day, count, n * slot + gap / 2, CHART_HEIGHT - height, slot - gap, height))
    return Chart(bars, sum(b.count for b in bars), peak)
