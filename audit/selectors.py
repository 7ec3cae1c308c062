"""Reads of audit events reused by the page, the export and the API.

Paging is by keyset over (occurred_at, id), newest first, with cursors signed by
django.core.signing so they are opaque and cannot be forged; nothing here COUNTs or
OFFSETs the events table. `event_json` is the event in the REST API's shape."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core import signing
from django.db.models import Q, QuerySet
from django.db.models.expressions import RawSQL
from django.http import Http404, HttpRequest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from orgs.models import Organization

from .models import Activity, Event

CURSOR_SALT = "audit.event-page"
Position = tuple[datetime, int]


def viewer_time_zone(user) -> ZoneInfo:
    """The zone the account shows times in (its setting; UTC if unset or unknown)."""
    try:
        return ZoneInfo(getattr(user, "time_zone", "") or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


class CursorError(ValueError):
    """A cursor that was altered, belongs elsewhere or cannot be read."""


def cursor_make(event: Event, *, newer: bool, scope: str) -> str:
    """An opaque, signed cursor for the page just older (or newer) than `event`.
    `scope` (e.g. the organization id) stops a cursor being replayed elsewhere."""
    payload = {"s": scope, "t": event.occurred_at.isoformat(), "i": event.pk, "n": int(newer)}
    return signing.dumps(payload, salt=CURSOR_SALT, compress=True)


def cursor_read(cursor: str, *, scope: str) -> tuple[Position, bool]:
    """The (occurred_at, id) position and direction of `cursor`, or CursorError."""
    try:
        payload = signing.loads(cursor, salt=CURSOR_SALT)
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


class KeysetSource(Protocol):
    def keyset_slice(self, position: Position | None, newer: bool, limit: int) -> list[Event]: ...


@dataclass
class EventPage:
    events: list[Event]
    newer_cursor: str | None = None
    older_cursor: str | None = None
    cursor_error: str = ""
    cursor: str | None = None  # the cursor this page was reached by, when it was used

    @property
    def is_first(self) -> bool:
        return self.newer_cursor is None


def _slice(source, position: Position | None, newer: bool, limit: int) -> list[Event]:
    if isinstance(source, QuerySet):
        return list(keyset_events(source, position, newer).select_related("action")[:limit])
    return source.keyset_slice(position, newer, limit)


def event_page(
    source: "QuerySet | KeysetSource", cursor: str | None, size: int | None = None, *, scope: str
) -> EventPage:
    """One page of events, newest first, from an Event queryset or an EventFilter.

    A cursor that is altered, from elsewhere, or whose position has fallen out of the
    results (e.g. past the retention window) yields the first page and a message."""
    size = size or settings.AUDIT_PAGE_SIZE
    position, newer, error = None, False, ""
    if cursor:
        try:
            position, newer = cursor_read(cursor, scope=scope)
        except CursorError as exc:
            error = str(exc)
    if position is not None and newer:
        rows = _slice(source, position, True, size + 1)
        if len(rows) > size:
            events = rows[:size][::-1]
            return EventPage(
                events,
                newer_cursor=cursor_make(events[0], newer=True, scope=scope),
                older_cursor=cursor_make(events[-1], newer=False, scope=scope),
                cursor=cursor,
            )
        position = None  # back at the newest: show the first page as it is now
    rows = _slice(source, position, False, size + 1) if position is not None else []
    if position is not None and not rows:
        error = "That page of results is no longer available. Showing the newest activities."
        position = None
    if position is None:
        rows = _slice(source, None, False, size + 1)
    events = rows[:size]
    return EventPage(
        events,
        newer_cursor=cursor_make(events[0], newer=True, scope=scope)
        if position is not None and events
        else None,
        older_cursor=cursor_make(events[-1], newer=False, scope=scope)
        if len(rows) > size
        else None,
        cursor_error=error,
        cursor=cursor if position is not None else None,
    )


def event_get(org: Organization, event_id: int, *, now: datetime | None = None) -> Event:
    """One event of `org` still within its plan's retention, or 404."""
    now = now or timezone.now()
    event = (
        Event.objects.select_related("action")
        .filter(
            organization=org,
            pk=event_id,
            occurred_at__gte=now - timedelta(days=org.plan.retention_days),
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
    if event.action_id not in _ACTION_KEYS:
        _ACTION_KEYS.update(Activity.objects.values_list("pk", "key"))
    return _ACTION_KEYS[event.action_id]


def event_api_path(event: Event) -> str:
    return f"/admin/v1/orgs/{event.organization_id}/events/{event.pk}"


def event_json(event: Event, request: HttpRequest | None = None) -> dict:
    """The event as the REST API gives it (DESIGN.md "REST API")."""
    path = event_api_path(event)
    link = request.build_absolute_uri(path) if request is not None else settings.SITE_URL + path
    return {
        "id": str(event.pk),
        "type": "events",
        "attributes": {
            "time": event.occurred_at.astimezone(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "action": _action_key(event),
            "actor": {"id": event.actor_id, "name": event.actor_name, "email": event.actor_email},
            "context": event.context,
            "container": event.container,
            "location": {
                "ip": event.ip or "",
                "countryName": event.country,
                "regionName": event.region,
                "city": event.city,
            },
        },
        "message": {"content": event.message, "format": "simple"},
        "links": {"self": link},
    }
