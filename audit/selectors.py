"""Reads of audit events reused by the page, the export and the API.

The filter (audit.filters.EventFilter) validates the parameters; the functions here
turn its values into queries: `event_list` (a queryset, newest first, for the chart
and the tests), `event_slice` (one keyset step in either direction, for the API),
`event_walk` (keyset steps, newest first, for the export) and `event_page` (a page
with signed Newer / Older cursors, for the page).

A search finds its events by the term's hash (EventTerm.term_hash) and keeps only
those that carry the term itself (`event_carries_term`): a hash collision never puts
a wrong row on the page, in the API or in an export.

Paging is by keyset over (occurred_at, id), newest first, with cursors signed by
django.core.signing so they are opaque and cannot be forged; nothing here COUNTs or
OFFSETs the events table. `event_json` is the event in the REST API's shape."""

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core import signing
from django.db import connection
from django.db.models import BooleanField, Min, Q, QuerySet, Value
from django.db.models.base import ModelState
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce, Lower
from django.db.models.lookups import Exact
from django.http import Http404, HttpRequest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from orgs.models import Organization
from orgs.sqlrows import ModelColumns, table

from .models import Activity, Event, EventTerm
from .recording import activity_by_id, event_terms, term_hash

if TYPE_CHECKING:
    from .filters import EventFilter

CURSOR_SALT = "audit.event-page"
# The API's location keys and the Event columns they compare with.
LOCATION_KEYS = {"city": "city", "countryName": "country", "regionName": "region"}
Position = tuple[datetime, int]


def viewer_time_zone(user) -> ZoneInfo:
    """The zone the account shows times in (its setting; UTC if unset or unknown)."""
    try:
        return ZoneInfo(getattr(user, "time_zone", "") or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


class CursorError(ValueError):
    """A cursor that was altered, belongs elsewhere or cannot be read."""


def event_position(event: Event | dict) -> Position:
    """Where `event` (an Event, or a dict of event_slice's `values`) stands in the keyset
    order: (occurred_at, id)."""
    if isinstance(event, dict):
        return (event["occurred_at"], event["id"])
    return (event.occurred_at, event.pk)


def cursor_make(position: Position, *, newer: bool, scope: str, salt: str = CURSOR_SALT) -> str:
    """An opaque, signed cursor for the page just older (or newer) than `position`.
    `scope` (e.g. the organization id) stops a cursor being replayed elsewhere; the API
    signs its own cursors with its own `salt`."""
    when, pk = position
    payload = {"s": scope, "t": when.isoformat(), "i": pk, "n": int(newer)}
    return signing.dumps(payload, salt=salt, compress=True)


def cursor_read(cursor: str, *, scope: str, salt: str = CURSOR_SALT) -> tuple[Position, bool]:
    """The (occurred_at, id) position and direction of `cursor`, or CursorError."""
    try:
        payload = signing.loads(cursor, salt=salt)
        if payload["s"] != scope:
            raise CursorError("That page link belongs to another audit log.")
        when = parse_datetime(payload["t"])
        if when is None or timezone.is_naive(when):
            raise ValueError(payload["t"])
        return (when, int(payload["i"])), bool(payload["n"])
    except CursorError:
        raise
    except (signing.BadSignature, ValueError, TypeError, KeyError, OverflowError) as exc:
        raise CursorError("That page link is not valid: it may have been cut or changed.") from exc


def keyset_events(
    qs: QuerySet,
    position: Position | None,
    newer: bool,
    *,
    time_field: str = "occurred_at",
    id_field: str = "id",
) -> QuerySet:
    """`qs` past `position`, nearest first. The extra inclusive bound on the time lets
    both databases seek straight to the position in an index led by the time."""
    if position is not None:
        when, pk = position
        if newer:
            beyond = Q(**{f"{time_field}__gt": when}) | Q(
                **{time_field: when, f"{id_field}__gt": pk}
            )
            qs = qs.filter(beyond, **{f"{time_field}__gte": when})
        else:
            beyond = Q(**{f"{time_field}__lt": when}) | Q(
                **{time_field: when, f"{id_field}__lt": pk}
            )
            qs = qs.filter(beyond, **{f"{time_field}__lte": when})
    if newer:
        return qs.order_by(time_field, id_field)
    return qs.order_by(f"-{time_field}", f"-{id_field}")


def keyset_union_ids(
    base: QuerySet, action_ids: Sequence[int], position: Position | None, newer: bool, limit: int
) -> RawSQL:
    """The ids of the next `limit` events of any of `action_ids`, as a subquery.

    `action_id IN (...) ORDER BY time LIMIT n` makes both databases either read every
    matching row and sort (PostgreSQL, SQLite on the action index) or walk the time
    index filtering (slow for rare activities). One short walk of the
    (organization, action, occurred_at, id) index per activity, merged, costs at most
    `limit` rows per activity whatever the range."""
    parts, params = [], []
    for n, action_id in enumerate(action_ids):
        one = keyset_events(base.filter(action_id=action_id), position, newer)
        sql, one_params = one.values("id", "occurred_at")[:limit].query.sql_with_params()
        parts.append(f"SELECT * FROM ({sql}) AS a{n}")
        params += list(one_params)
    direction = "ASC" if newer else "DESC"
    sql = (
        f"SELECT id FROM ({' UNION ALL '.join(parts)}) AS merged "
        f"ORDER BY occurred_at {direction}, id {direction} LIMIT {int(limit)}"
    )
    return RawSQL(sql, params)


# -- the filter's queries ---------------------------------------------------------------


def _in_force(filters: "EventFilter") -> bool:
    return filters.is_valid() and filters.org.plan.audit_log


def _conditions(filters: "EventFilter", prefix: str = "") -> Q:
    """The API's row filters (actor, ip, product, location) on Event's columns, each
    reached through `prefix` (``"event__"`` from EventTerm). They need no index of their
    own: they are checked on the rows the organization + time walk reads."""
    d = filters.cleaned_data
    where = Q()
    if d["actor"]:
        by_email = [Exact(Lower(f"{prefix}actor_email"), Lower(Value(a))) for a in d["actor"]]
        where &= Q(**{f"{prefix}actor_id__in": d["actor"]}) | _any(by_email)
    if d["ip"]:
        where &= Q(**{f"{prefix}ip__in": d["ip"]})
    if d["product"]:
        ids = [p for p in d["product"] if isinstance(p, int)]
        kinds = [p for p in d["product"] if isinstance(p, str)]
        where &= Q(**{f"{prefix}product_id__in": ids}) | Q(**{f"{prefix}product_kind__in": kinds})
    if d["location"]:
        places = [
            Q(**{f"{prefix}{LOCATION_KEYS[key]}": value for key, value in place.items()})
            for place in d["location"]
        ]
        where &= _any(places)
    return where


def _any(conditions: Sequence) -> Q:
    where = Q(conditions[0])
    for one in conditions[1:]:
        where |= Q(one)
    return where


def _window(filters: "EventFilter") -> dict:
    lookups = {"occurred_at__gte": filters.window.start}
    if filters.window.end is not None:
        lookups["occurred_at__lt"] = filters.window.end
    return lookups


def _events(filters: "EventFilter") -> QuerySet:
    """The organization's events in the window that the row filters let through."""
    return Event.objects.filter(_conditions(filters), organization=filters.org, **_window(filters))


def event_list(*, filters: "EventFilter") -> QuerySet:
    """The events `filters` selects, newest first (-occurred_at, -id); none when the
    filter is invalid or the plan has no audit log. Never COUNT it. A search matches
    by the term's hash here: what shows events re-checks them (event_slice)."""
    if not _in_force(filters):
        return Event.objects.none()
    qs = _events(filters)
    if filters.action_ids:
        qs = qs.filter(action_id__in=filters.action_ids)
    if filters.cleaned_data["q"]:
        qs = qs.filter(id__in=term_event_ids(event_term_rows(filters)))
    return qs.order_by("-occurred_at", "-id")


def event_term_rows(filters: "EventFilter") -> QuerySet:
    """The term rows (EventTerm) of the search's hash that may hold events of the
    window: a row lies within one UTC day (audit.recording.term_rows). A row may hold
    events of another term with the same hash (event_carries_term)."""
    window = filters.window
    rows = EventTerm.objects.filter(
        organization=filters.org,
        term_hash=term_hash(filters.cleaned_data["q"]),
        occurred_at__gte=window.start,
    )
    if window.end is not None:
        rows = rows.filter(_starts(lt=window.end), occurred_at__lt=_day_end(window.end))
    return rows


def _starts(**lookup) -> Q:
    """The rows whose oldest event's time satisfies `lookup` (e.g. lt=moment): a row of
    one event leaves oldest_at NULL, its time being occurred_at."""
    ((op, moment),) = lookup.items()
    return Q(**{f"oldest_at__{op}": moment}) | Q(
        oldest_at__isnull=True, **{f"occurred_at__{op}": moment}
    )


# A row's event ids and oldest time, its own for a row of one event (EventTerm).
_ROW_IDS = {
    "postgresql": "coalesce(t.event_ids, ARRAY[t.event_id])",
    "sqlite": "coalesce(t.event_ids, json_array(t.event_id))",
}


def _day_end(moment: datetime) -> datetime:
    """The UTC midnight that ends `moment`'s day."""
    utc = moment.astimezone(UTC)
    return datetime(utc.year, utc.month, utc.day, tzinfo=UTC) + timedelta(days=1)


def term_event_ids(rows: QuerySet) -> RawSQL:
    """The ids of the events the term rows `rows` hold, as a subquery (id__in=)."""
    sql, params = rows.values("event_id", "event_ids").order_by().query.sql_with_params()
    ids = _ROW_IDS[connection.vendor]
    if connection.vendor == "postgresql":
        return RawSQL(f"SELECT unnest({ids}) FROM ({sql}) AS t", params)
    return RawSQL(f"SELECT u.value FROM ({sql}) AS t, json_each({ids}) AS u", params)


def _id_in(ids: Sequence[int]) -> Q:
    """Event.id among `ids`. PostgreSQL: as one array, whatever their number. SQLite:
    as a list, which its planner counts (a JSON array it cannot, and would then walk
    the organization's time index instead of looking each id up)."""
    if connection.vendor != "postgresql":
        return Q(id__in=ids)
    sql = f'"{Event._meta.db_table}"."id" = ANY(%s::bigint[])'
    return Q(RawSQL(sql, [list(ids)], output_field=BooleanField()))


# The columns the audit log page shows (audit.tables.event_rows) and pages by: the page
# reads only these, not the JSON context, details and hash it never shows.
PAGE_COLUMNS = (
    "id",
    "organization_id",
    "occurred_at",
    "action_id",
    "actor_type",
    "actor_name",
    "actor_email",
    "product_kind",
    "site_name",
    "message",
    "ip",
    "country",
    "region",
    "city",
)


def event_slice(
    filters: "EventFilter",
    position: Position | None,
    *,
    newer: bool,
    limit: int,
    values: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
) -> list:
    """Up to `limit` events strictly older (or, with `newer`, newer) than `position` =
    (occurred_at, id), nearest first; from the newest without a position. Events with
    their `action`; or, given `values` (field names, e.g. "action__label"), dicts of
    those (with "occurred_at" and "id"), which a long read such as the export makes
    several times faster than model instances.

    With `columns`, only those are read (any other is deferred: reading it would cost a
    query per event), and each event's activity comes from the process's catalogue
    (audit.recording.activity_by_id) instead of a join.

    Each shape of filter takes the path its index serves: the events index for the
    plain list and one activity, the term index for a search, and one index walk per
    activity merged for several activities."""
    if not _in_force(filters):
        return []
    if values is not None:
        values = list(dict.fromkeys(("occurred_at", "id", *values)))
    if filters.cleaned_data["q"]:
        return _term_slice(
            filters, position, newer=newer, limit=limit, values=values, columns=columns
        )
    if columns is not None and values is None and len(filters.action_ids) <= 1:
        if not filters.has_row_filters:  # the page's two commonest shapes
            sql, params, read = page_sql(
                filters, position, newer=newer, limit=limit, columns=columns
            )
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                rows = cursor.fetchall()
            return [_event_of(read.attnames, read.converted(r), connection.alias) for r in rows]
    if len(filters.action_ids) > 1:
        ids = keyset_union_ids(_events(filters), filters.action_ids, position, newer, limit)
        qs = _in_window(filters, position, newer).filter(id__in=ids)
    else:
        qs = keyset_events(event_list(filters=filters), position, newer)
    order = ("occurred_at", "id") if newer else ("-occurred_at", "-id")
    return _fetch(qs.order_by(*order)[:limit], values, columns)


_PAGE_READS: dict[tuple, ModelColumns] = {}


def page_sql(
    filters: "EventFilter",
    position: Position | None,
    *,
    newer: bool,
    limit: int,
    columns: Sequence[str],
) -> tuple[str, list, ModelColumns]:
    """The page's query for the plain list or one activity (no search, no row filter),
    written out: (SQL, params, the columns it reads). The same SQL the ORM builds from
    event_list and keyset_events (test_query_plans checks its plan), without the ORM's
    0.5 ms of building and reading it on every page. `columns` are Event attnames."""
    read = _PAGE_READS.get(tuple(columns))
    if read is None:
        read = _PAGE_READS[tuple(columns)] = ModelColumns(Event, table(Event), tuple(columns))
    adapt = connection.ops.adapt_datetimefield_value
    window = filters.window
    where = ["organization_id = %s", "occurred_at >= %s"]
    params = [filters.org.pk, adapt(window.start)]
    if window.end is not None:
        where.append("occurred_at < %s")
        params.append(adapt(window.end))
    if filters.action_ids:
        where.append("action_id = %s")
        params.append(filters.action_ids[0])
    if position is not None:  # as keyset_events: past the position, and bounded by its time
        op = ">" if newer else "<"
        when = adapt(position[0])
        where.append(f"(occurred_at {op} %s OR (occurred_at = %s AND id {op} %s))")
        where.append(f"occurred_at {op}= %s")
        params += [when, when, position[1], when]
    order = "ASC" if newer else "DESC"
    sql = (
        f"SELECT {read.sql()} FROM {table(Event)} WHERE {' AND '.join(where)}"
        f" ORDER BY occurred_at {order}, id {order} LIMIT {int(limit)}"
    )
    return sql, params, read


def _in_window(filters: "EventFilter", position: Position | None, newer: bool) -> QuerySet:
    """The organization's events in the filter's window and past `position`: what the
    ids a search or a merge found are read from, so that on PostgreSQL, where the
    events are in monthly partitions (audit.partitions), the lookup by id probes only
    the window's months."""
    return keyset_events(
        Event.objects.filter(organization=filters.org, **_window(filters)), position, newer
    )


def _fetch(
    qs: QuerySet, values: Sequence[str] | None, columns: Sequence[str] | None = None
) -> list:
    """The rows of `qs`: dicts of `values`; or Events of only `columns` (_event_of);
    or whole Events with their activity."""
    if values is not None:
        return list(qs.values(*values))
    if columns is not None:
        rows = qs.values_list(*columns)
        return [_event_of(columns, row, rows.db) for row in rows]
    return list(qs.select_related("action"))


def _event_of(columns: Sequence[str], values: tuple, db: str) -> Event:
    """An Event of these column values, as Model.from_db makes it (the columns left out
    are deferred: absent from its __dict__) but without its per-field loop and init
    signals, which cost ten times as much for a page of fifty (Event has no init
    receivers). Its activity is the catalogue's (activity_by_id)."""
    event = Event.__new__(Event)
    state = event._state = ModelState()
    state.adding, state.db = False, db
    event.__dict__.update(zip(columns, values, strict=True))
    state.fields_cache["action"] = activity_by_id(event.action_id)
    return event


# What event_carries_term reads of an event.
_TERM_FIELDS = (
    "actor_type",
    "actor_name",
    "actor_email",
    "site_name",
    "context",
    "container",
    "details",
    "action_id",
)


def _term_slice(
    filters: "EventFilter",
    position: Position | None,
    *,
    newer: bool,
    limit: int,
    values: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
) -> list:
    """event_slice of a search: the term rows walked from `position` in time order until
    `limit` events are known to come next (event_term_step), keeping the events that
    really carry the term. Another step only when a hash collision took some of them.
    With `values` or `columns`, the fields the check reads come too."""
    term = filters.cleaned_data["q"]
    fields = None if values is None else list(dict.fromkeys((*values, *_TERM_FIELDS)))
    if columns is not None:
        columns = list(dict.fromkeys((*columns, *_TERM_FIELDS)))
    rows: list = []
    while len(rows) < limit:
        want = limit - len(rows)
        found = event_term_step(
            filters, position, newer=newer, limit=want, values=fields, columns=columns
        )
        rows += [row for row in found if event_carries_term(row, term)]
        if len(found) < want:
            break
        position = event_position(found[-1])
    return rows


# Term rows read by a step's first query of them, doubled for each further one: a row
# holds 1 to 128 events (a rare term's rows few, a common term's many). A step of at
# most _TERM_ROWS_ONCE events (a page) reads as many rows at once, which it needs at most.
_TERM_ROWS_READ = 16
_TERM_ROWS_ONCE = 64


def event_term_rows_walk(
    filters: "EventFilter", position: Position | None, *, newer: bool
) -> QuerySet:
    """The search's term rows that may hold events past `position` (occurred_at, id),
    in the order of their key from there: newest first (or, with `newer`, oldest
    first). A row lies within one UTC day and is keyed by its newest event, so a row
    with an event older than the position ends before the position's day does."""
    rows = event_term_rows(filters)
    if position is not None:
        when = position[0]
        if newer:
            rows = rows.filter(occurred_at__gte=when)
        else:
            rows = rows.filter(_starts(lte=when), occurred_at__lt=_day_end(when))
    order = ("occurred_at", "event_id") if newer else ("-occurred_at", "-event_id")
    return rows.order_by(*order)


def event_term_step(
    filters: "EventFilter",
    position: Position | None,
    *,
    newer: bool,
    limit: int,
    values: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
) -> list:
    """The next `limit` events past `position` of the search's term rows, nearest first
    (unchecked: see event_carries_term), as _fetch gives them.

    The rows are read in key order (event_term_rows_walk) a few at a time, and their
    events fetched by id, until `limit` of those are known to come before anything the
    unread rows hold: newest first, the events from the last row read's newest on (a
    row left ends before that event); oldest first, the events older than every row left
    (rows of later days start on those days, so only the rest of the last row's day is
    looked at). A step so reads about `limit` events and a row or two more, whatever
    the number of matches (no sort of every match)."""
    walk = event_term_rows_walk(filters, position, newer=newer)
    window = filters.window

    def wanted(row) -> bool:  # in the window, past the position
        at = event_position(row)
        if at[0] < window.start or (window.end is not None and at[0] >= window.end):
            return False
        return position is None or (at > position if newer else at < position)

    found: list = []  # the events read so far, nearest first once sorted
    last = None  # the key (occurred_at, event_id) of the last row read
    ahead = None  # the key of the first row not read, when a query brought it
    done = False
    size = limit if limit <= _TERM_ROWS_ONCE else _TERM_ROWS_READ
    need, known = limit, 0
    while not done:
        ids: list[int] = []
        span: list[datetime] = []
        while len(ids) < need:
            page = list(
                keyset_events(walk, last, newer, id_field="event_id").values_list(
                    "occurred_at", "event_id", "oldest_at", "event_ids"
                )[:size]
            )
            ahead = None
            for n, (at, event_id, oldest_at, event_ids) in enumerate(page):
                ids += event_ids if event_ids is not None else (event_id,)
                span += (oldest_at or at, at)
                last = (at, event_id)
                if len(ids) >= need:
                    ahead = page[n + 1][:2] if n + 1 < len(page) else None
                    break
            if len(page) < size and (not page or last == page[-1][:2]):
                done = True
                break
            size = min(size * 2, 1024)
        if ids:
            got = _fetch(events_by_id(filters, ids, (min(span), max(span))), values, columns)
            found += [row for row in got if wanted(row)]
        found.sort(key=event_position, reverse=not newer)
        if done:
            break
        before = known
        if newer:
            frontier = _term_rows_frontier(walk, last)
            known = sum(1 for row in found if event_position(row)[0] < frontier)
        elif ahead is not None:  # every unread row's events are at or before its newest
            known = sum(1 for row in found if event_position(row) > ahead)
        else:  # ... which is before the last row read's newest
            known = sum(1 for row in found if event_position(row) >= last)
        if known >= limit:
            break
        # Rows that overlap in time (batches recorded side by side) can hold the
        # frontier back: then read as much again as so far, so a step takes few rounds.
        need = limit - known if known > before else max(limit - known, len(found))
    return found[:limit]


def events_by_id(filters: "EventFilter", ids: Sequence[int], span: tuple) -> QuerySet:
    """The events of `ids` (the organization's term rows hold them: no condition on the
    organization) that the filter's row filters and activities let through, looked up
    by primary key, unordered (the window and the position are the caller's to check).
    On PostgreSQL only within the months of `span` (the rows' first and last times), so
    that only those partitions are probed. Every other index leads with the organization, so neither
    database can choose to walk the organization's events instead."""
    events = Event.objects.filter(_id_in(ids), _conditions(filters))
    if filters.action_ids:
        events = events.filter(action_id__in=filters.action_ids)
    if connection.vendor == "postgresql":
        # Whole months: the same partitions, and a planner that does not take the
        # span's share of a month for the share of the ids it will find (which once
        # made it join the activities by nested loop over every activity).
        first, last = (moment.astimezone(UTC) for moment in span)
        events = events.filter(
            occurred_at__gte=datetime(first.year, first.month, 1, tzinfo=UTC),
            occurred_at__lt=datetime(
                last.year + last.month // 12, last.month % 12 + 1, 1, tzinfo=UTC
            ),
        )
    return events.order_by()


def _term_rows_frontier(walk: QuerySet, last: Position) -> datetime:
    """Oldest first: the time before which no unread row (past `last`) holds an event,
    the oldest start of the rows left in the last row's day (later days' rows start on
    their own day)."""
    day_end = _day_end(last[0])
    left = keyset_events(walk, last, True, id_field="event_id").filter(occurred_at__lt=day_end)
    starts = left.order_by().aggregate(start=Min(Coalesce("oldest_at", "occurred_at")))["start"]
    return min(starts, day_end) if starts is not None else day_end


def event_carries_term(event: Event | dict, term: str) -> bool:
    """Whether `term` (normalized) is one of the search terms of `event` (an Event, or
    a dict of _TERM_FIELDS), derived from its stored values as recording derived them
    (audit.recording.event_terms)."""
    if isinstance(event, dict):
        return term in event_terms(
            actor_type=event["actor_type"],
            actor_name=event["actor_name"],
            actor_email=event["actor_email"],
            site_name=event["site_name"],
            items=[*event["context"], *event["container"]],
            action=_action_key_by_id(event["action_id"]),
            details=event["details"],
        )
    return term in event_terms(
        actor_type=event.actor_type,
        actor_name=event.actor_name,
        actor_email=event.actor_email,
        site_name=event.site_name,
        items=[*event.context, *event.container],
        action=_action_key(event),
        details=event.details,
    )


def event_walk(
    filters: "EventFilter",
    *,
    limit: int,
    chunk: int = 1000,
    values: Sequence[str] | None = None,
) -> Iterator:
    """Up to `limit` events `filters` selects, newest first, read `chunk` at a time by
    keyset (event_slice; `values`: as dicts of those fields): each step walks its index
    from where the last stopped and reads no more than it keeps, so a 10,000-row export
    costs the same whether the search matches 10,000 events or a million (no sort of
    every match)."""
    position, left = None, limit
    while left > 0:
        step = min(chunk, left)
        rows = event_slice(filters, position, newer=False, limit=step, values=values)
        yield from rows
        left -= len(rows)
        if len(rows) < step:
            return
        last = rows[-1]
        position = event_position(last)


# -- pages --------------------------------------------------------------------------------


@dataclass
class EventPage:
    """One page of events, newest first, with the positions of the pages either side
    (None: there is none) and, given a `scope`, their signed cursors."""

    events: list[Event]
    newer_position: Position | None = None
    older_position: Position | None = None
    cursor_error: str = ""
    cursor: str | None = None  # the cursor this page was reached by, when it was used
    scope: str = ""

    @property
    def is_first(self) -> bool:
        return self.newer_position is None

    @cached_property
    def newer_cursor(self) -> str | None:
        return self._cursor(self.newer_position, newer=True)

    @cached_property
    def older_cursor(self) -> str | None:
        return self._cursor(self.older_position, newer=False)

    def _cursor(self, position: Position | None, *, newer: bool) -> str | None:
        if position is None:
            return None
        return cursor_make(position, newer=newer, scope=self.scope)


def event_page_at(
    filters: "EventFilter",
    position: Position | None,
    *,
    newer: bool = False,
    size: int | None = None,
    scope: str = "",
    columns: Sequence[str] | None = PAGE_COLUMNS,
) -> EventPage:
    """The page of `size` events just older (or, with `newer`, newer) than `position`,
    newest first; the newest page without a position. Newer than the first page is the
    first page as it is now; a position with nothing older gives the first page and a
    message (e.g. it has fallen past the retention window). Its events hold `columns`
    only (event_slice): by default what the page shows."""
    size = size or settings.AUDIT_PAGE_SIZE
    if position is not None and newer:
        rows = event_slice(filters, position, newer=True, limit=size + 1, columns=columns)
        if len(rows) > size:
            events = rows[:size][::-1]
            return EventPage(
                events, event_position(events[0]), event_position(events[-1]), scope=scope
            )
        position = None  # back at the newest: show the first page as it is now
    error, rows = "", []
    if position is not None:
        rows = event_slice(filters, position, newer=False, limit=size + 1, columns=columns)
        if not rows:
            error = "That page of results is no longer available. Showing the newest activities."
            position = None
    if position is None:
        rows = event_slice(filters, None, newer=False, limit=size + 1, columns=columns)
    events = rows[:size]
    return EventPage(
        events,
        newer_position=event_position(events[0]) if position is not None and events else None,
        older_position=event_position(events[-1]) if len(rows) > size else None,
        cursor_error=error,
        scope=scope,
    )


def event_page(
    filters: "EventFilter", cursor: str | None, size: int | None = None, *, scope: str
) -> EventPage:
    """The page `cursor` (signed by cursor_make) leads to, as event_page_at.

    A cursor that is altered or from elsewhere yields the first page and a message."""
    position, newer, error = None, False, ""
    if cursor:
        try:
            position, newer = cursor_read(cursor, scope=scope)
        except CursorError as exc:
            error = str(exc)
    page = event_page_at(filters, position, newer=newer, size=size, scope=scope)
    page.cursor_error = error or page.cursor_error
    if not page.is_first:
        page.cursor = cursor
    return page


def event_get(org: Organization, event_id: int, *, now: datetime | None = None) -> Event:
    """One event of `org` still within its plan's retention, or 404."""
    now = now or timezone.now()
    event = (
        Event.objects.select_related("action")
        .filter(
            organization=org,
            pk=event_id,
            occurred_at__gte=now - org.plan.retention,
        )
        .first()
    )
    if event is None or not org.plan.audit_log:
        raise Http404("No such event")
    return event


_ACTION_KEYS: dict[int, str] = {}


def _action_key(event: Event) -> str:
    """The action's key without a query per event when `action` was not selected."""
    if "action" in event._state.fields_cache:
        return event.action.key
    return _action_key_by_id(event.action_id)


def _action_key_by_id(action_id: int) -> str:
    if action_id not in _ACTION_KEYS:
        _ACTION_KEYS.update(Activity.objects.values_list("pk", "key"))
    return _ACTION_KEYS[action_id]


def event_api_path(event: Event) -> str:
    return _api_path(event.organization_id, event.pk)


def _api_path(org_id: int, pk: int) -> str:
    return f"/admin/v1/orgs/{org_id}/events/{pk}"


def _item_json(item: dict) -> dict:
    """A stored context / container item {type, id, name[, email]} in the vendor's
    shape: {id, type, attributes: {name, email...}, links}."""
    attributes = {k: str(v) for k, v in item.items() if k not in ("id", "type") and v}
    return {
        "id": str(item.get("id", "")),
        "type": str(item.get("type", "")),
        "attributes": attributes,
        "links": {},
    }


# What event_row_json reads: Event field names, and the action's key.
EVENT_JSON_FIELDS = (
    "id",
    "organization_id",
    "occurred_at",
    "actor_id",
    "actor_name",
    "actor_email",
    "context",
    "container",
    "ip",
    "country",
    "region",
    "city",
    "message",
)


def event_json(event: Event, request: HttpRequest | None = None) -> dict:
    """The event as the REST API gives it (DESIGN.md "REST API"): one serializer for
    the API's events endpoints, the event detail page and streams."""
    row = {name: getattr(event, name) for name in EVENT_JSON_FIELDS}
    row["action__key"] = _action_key(event)
    return event_row_json(row, request)


def event_row_json(row: dict, request: HttpRequest | None = None, site_url: str = "") -> dict:
    """event_json from a row of EVENT_JSON_FIELDS and "action__key" (a .values() row:
    streams serialize thousands a second and need no model instances; they pass
    settings.SITE_URL as `site_url` once rather than look it up per event)."""
    path = _api_path(row["organization_id"], row["id"])
    if request is not None:
        link = request.build_absolute_uri(path)
    else:
        link = (site_url or settings.SITE_URL) + path
    return {
        "id": str(row["id"]),
        "type": "events",
        "attributes": {
            "time": iso_utc(row["occurred_at"]),
            "action": row["action__key"],
            "actor": {
                "id": row["actor_id"],
                "name": row["actor_name"],
                "email": row["actor_email"],
                "links": {},
            },
            "context": [_item_json(item) for item in row["context"]],
            "container": [_item_json(item) for item in row["container"]],
            "location": {
                "ip": row["ip"] or "",
                "geo": "",  # no coordinates are recorded
                "countryName": row["country"],
                "regionName": row["region"],
                "city": row["city"],
            },
        },
        "message": {"content": row["message"], "format": "simple"},
        "links": {"self": link},
    }


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and Z, as the vendor writes times."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- the events stream: every event in the order it was recorded ------------------------
#
# The out-of-order commit problem: ids (and recorded_at) are handed out when a row is
# written, not when its transaction commits. On PostgreSQL a transaction that wrote id
# 100 may commit after one that wrote id 101; a poller that had already read up to 101
# would never see 100. So the stream reads in (txid, id) order, txid being the recording
# transaction's id (a column default, migration 0011), and serves only events whose txid
# is below the oldest transaction still running in this database (stream_horizon):
# every such transaction has ended, so nothing can later appear before the cursor. An event
# committed late is served on a later call, after whatever it is ordered behind, and
# never skipped or served twice. SQLite has one writer at a time and ids in commit order:
# the stream reads by id.

STREAM_SALT = "audit.api.events-stream"
StreamPosition = tuple[int, int]  # (txid, id); txid 0 on SQLite


# The transactions still running in this database that hold an xid: each holds its
# transactionid lock and, having written (or locked) something here, a lock on a
# relation of this database. One read of pg_locks, which every role may read.
_RUNNING_HERE = """
    WITH locks AS MATERIALIZED (SELECT * FROM pg_locks)
    SELECT DISTINCT x.transactionid::text::bigint FROM locks x
    WHERE x.locktype = 'transactionid' AND x.granted AND x.mode = 'ExclusiveLock'
      AND x.virtualtransaction IN (
        SELECT r.virtualtransaction FROM locks r
        WHERE r.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      )
"""


def stream_horizon() -> int:
    """PostgreSQL: the oldest transaction id still running in this database (else the
    next to be handed out); no event with a txid at or above it is served yet.

    Not pg_snapshot_xmin, the oldest running anywhere on the server: a long
    transaction in another database (a bulk load, a test run) would hold every stream
    back for its whole length although it can write no event here. A transaction
    writes an event only by inserting into audit_event, which takes a lock on it
    before the txid default assigns the xid; one that had its xid earlier wrote or
    locked a relation of this database to get it. Either way it shows in pg_locks with
    a relation lock here and its transactionid lock. The snapshot is read first: a
    transaction that takes its xid after it has an xid at or above its xmax."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
        (xmax,) = cursor.fetchone()
        cursor.execute(_RUNNING_HERE)
        running = [_xid_widen(xid, xmax) for (xid,) in cursor.fetchall()]
    return min([xmax, *running])


def _xid_widen(xid: int, xmax: int) -> int:
    """A 32-bit xid (pg_locks) as the 64-bit, epoch-counting id that txid stores,
    given the snapshot's xmax: a running xid is at most 2**31 below it."""
    wide = (xmax >> 32 << 32) | xid
    return wide - 2**32 if wide > xmax else wide


def stream_position_now() -> StreamPosition:
    """A position at or after every event committed so far and before every event
    still to commit: where a new reader that wants only what comes next starts (a
    streaming destination when it is added). PostgreSQL: just below the horizon, so
    events of transactions still running are still ahead."""
    if connection.vendor == "postgresql":
        return stream_horizon() - 1, 2**63 - 1
    newest = Event.objects.order_by("-id").values_list("id", flat=True).first()
    return 0, newest or 0


def event_stream_slice(
    org: Organization,
    after: StreamPosition | None,
    *,
    desc: bool = False,
    limit: int,
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
) -> tuple[list[Event], StreamPosition | None]:
    """Up to `limit` of the organization's events past `after` in recording order
    (`desc`: before it, newest first), recorded in [since, until), and the position of
    the last one (None when there is none). Within the plan's retention only."""
    qs, order = _stream_queryset(org, after, desc, since, until, now)
    rows = list(qs.select_related("action").order_by(*order)[:limit])
    if not rows:
        return rows, None
    last = rows[-1]
    return rows, (last.txid or 0, last.pk)


def event_stream_rows(
    org: Organization, after: StreamPosition | None, *, limit: int, fields: Iterable[str]
) -> tuple[list[dict], StreamPosition | None]:
    """event_stream_slice (forward, no time bounds) as .values() rows of `fields` and
    "txid": the same events in the same order, without building model instances."""
    qs, order = _stream_queryset(org, after, False, None, None, None)
    rows = list(qs.order_by(*order).values(*fields, "id", "txid")[:limit])
    if not rows:
        return rows, None
    last = rows[-1]
    return rows, (last["txid"] or 0, last["id"])


def _stream_queryset(org, after, desc, since, until, now) -> tuple[QuerySet, list[str]]:
    now = now or timezone.now()
    qs = Event.objects.filter(organization=org, occurred_at__gte=now - org.plan.retention)
    if since is not None:
        qs = qs.filter(recorded_at__gte=since)
    if until is not None:
        qs = qs.filter(recorded_at__lt=until)
    if connection.vendor == "postgresql":
        qs = qs.filter(txid__lt=stream_horizon())
        keys = ("txid", "id")
    else:
        keys = ("id",)
    if after is not None:
        qs = qs.filter(_stream_beyond(after, desc, len(keys) == 2))
    return qs, [f"-{k}" for k in keys] if desc else list(keys)


def _stream_beyond(after: StreamPosition, desc: bool, with_txid: bool) -> Q:
    """Past `after` in (txid, id) order: on PostgreSQL a row comparison, which the index
    (organization, txid, id) seeks to directly (an OR of the two columns would make it
    walk the organization's index from the start, or a whole transaction's events)."""
    txid, pk = after
    if not with_txid:
        return Q(id__lt=pk) if desc else Q(id__gt=pk)
    op = "<" if desc else ">"
    row = f'("{Event._meta.db_table}"."txid", "{Event._meta.db_table}"."id")'
    return Q(RawSQL(f"{row} {op} (%s, %s)", [txid, pk], output_field=BooleanField()))


def stream_cursor_make(position: StreamPosition | None, *, org: Organization, desc: bool) -> str:
    """An opaque, signed cursor at `position` (None: the start)."""
    if position is None:  # the start: before everything, or (desc) after everything
        position = (2**63 - 1, 2**63 - 1) if desc else (0, 0)
    txid, pk = position
    return signing.dumps({"s": org.pk, "x": txid, "i": pk, "d": int(desc)}, salt=STREAM_SALT)


def stream_cursor_read(cursor: str, *, org: Organization, desc: bool) -> StreamPosition:
    try:
        payload = signing.loads(cursor, salt=STREAM_SALT)
        if payload["s"] != org.pk:
            raise CursorError("That cursor belongs to another organization.")
        if bool(payload["d"]) != desc:
            raise CursorError("That cursor was made for the other sortOrder.")
        return int(payload["x"]), int(payload["i"])
    except CursorError:
        raise
    except (signing.BadSignature, ValueError, TypeError, KeyError) as exc:
        raise CursorError("That cursor is not valid: it may have been cut or changed.") from exc
