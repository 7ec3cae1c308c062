"""The one way audit events are written.

`event_record` records one activity; `event_record_batch` records many with the same
rules and a fraction of the cost. Both apply the organization's plan (an activity the
plan does not cover is not recorded, and the result says why), the stored / not-stored
setting for user-created content, copy names into the row, render the message, fill
the exact-term search index and the hourly counts, and stamp the recorded time.
"""

import ipaddress
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.http import HttpRequest
from django.utils import timezone

from orgs.models import Organization, Plan, Product, Site, User

from .catalogue import CATEGORY_BY_KEY, CONTENT_TYPES, SEARCHABLE_DETAILS, SEARCHABLE_TYPES
from .models import (
    Activity,
    ActivitySetting,
    Event,
    EventHourlyCount,
    EventHourlyTotal,
    EventTerm,
)

MAX_TERM_LENGTH = 200


@dataclass(frozen=True)
class Actor:
    type: str = Event.ActorType.SYSTEM
    id: str = ""
    name: str = "System"
    email: str = ""

    @classmethod
    def for_user(cls, user: User) -> "Actor":
        return cls(Event.ActorType.USER, str(user.pk), user.name, user.email)

    @classmethod
    def for_token(cls, token_id: object, label: str) -> "Actor":
        return cls(Event.ActorType.API_TOKEN, str(token_id), label, "")

    @classmethod
    def for_product(cls, product: Product) -> "Actor":
        return cls(Event.ActorType.PRODUCT, str(product.pk), product.name, "")

    @property
    def display(self) -> str:
        return self.name or self.email or "Unknown"


SYSTEM = Actor()
# Whoever failed to sign in is unknown: the account the attempt named is the context.
ANONYMOUS = Actor(Event.ActorType.ANONYMOUS, "", "Anonymous", "")


@dataclass(frozen=True)
class Location:
    country: str = ""
    region: str = ""
    city: str = ""


def user_item(user: User) -> dict:
    """A context item for an account, names copied so they outlive it."""
    return {"type": "user", "id": str(user.pk), "name": user.name, "email": user.email}


def item(type_: str, id_: object, name: str) -> dict:
    return {"type": type_, "id": str(id_), "name": name}


@dataclass
class EventSpec:
    """One activity to record; see event_record for the meaning of each field."""

    action: str
    actor: Actor = SYSTEM
    occurred_at: datetime | None = None
    product: Product | None = None
    site: Site | None = None
    context: Sequence[Mapping] = ()
    container: Sequence[Mapping] = ()
    details: Mapping[str, object] = field(default_factory=dict)
    ip: str | None = None
    user_agent: str = ""
    location: Location | None = None


@dataclass
class RecordResult:
    event: Event | None
    reason: str = ""

    @property
    def recorded(self) -> bool:
        return self.event is not None


@dataclass
class BatchResult:
    event_ids: list[int]
    skipped: list[tuple[int, str]]  # (index in the batch, why it was not recorded)

    @property
    def recorded(self) -> int:
        return len(self.event_ids)


class _Values(dict):
    """Template values; a field with no value reads as a plain noun ("a page")."""

    def __missing__(self, key: str) -> str:
        return ("an " if key[0] in "aeiou" else "a ") + key


def _activities() -> dict[str, Activity]:
    # The catalogue changes only through migrations; one query per recording call
    # would double the cost of a single event, so it is read once per process.
    global _ACTIVITY_CACHE
    if _ACTIVITY_CACHE is None:
        _ACTIVITY_CACHE = {a.key: a for a in Activity.objects.all()}
    return _ACTIVITY_CACHE


_ACTIVITY_CACHE: dict[str, Activity] | None = None


def activity_cache_clear() -> None:
    global _ACTIVITY_CACHE
    _ACTIVITY_CACHE = None


def activity_for_key(key: str) -> Activity:
    activity = _activities().get(key)
    if activity is None:
        activity_cache_clear()
        activity = _activities().get(key)
    if activity is None:
        raise ValueError(f"Unknown activity {key!r}: add it to audit/catalogue.py")
    return activity


def plan_refusal(plan: Plan, activity: Activity, product: Product | None) -> str:
    """Why `plan` does not record `activity` (for `product`), or "" if it does."""
    if not plan.audit_log:
        return f"The {plan.name} plan does not include the organization audit log."
    category = CATEGORY_BY_KEY[activity.category]
    if not getattr(plan, category.plan_field):
        return f"The {plan.name} plan does not record {category.label.lower()}."
    if activity.user_created and product is not None and not plan.covers_product(product.kind):
        return (
            f"The {plan.name} plan records user-created activity only for "
            f"{plan.user_created_product_kinds.replace(',', ', ')}, not {product.name}."
        )
    return ""


def normalize_term(value: str) -> str:
    return value.strip().lower()


def _detail_terms(action: str, details: Mapping[str, object] | None) -> list[str]:
    """The values of `details` that are search terms: those SEARCHABLE_DETAILS names
    for `action` (emails, names of users, groups, sites), when they are text."""
    keys = SEARCHABLE_DETAILS.get(action)
    if not keys or not details:
        return []
    return [value for key in keys if isinstance(value := details.get(key), str)]


def _terms(
    actor: Actor,
    site_name: str,
    items: Iterable[Mapping],
    action: str = "",
    details: Mapping[str, object] | None = None,
) -> set[str]:
    """An event's search terms from its stored columns; the recorder derives the same
    set (the retention purge relies on it to find each event's terms)."""
    values = []
    if actor.type == Event.ActorType.USER:
        values += [actor.name, actor.email]
    values.append(site_name)
    for it in items:
        if it.get("type") in SEARCHABLE_TYPES:
            values += [it.get("name") or "", it.get("email") or ""]
    values += _detail_terms(action, details)
    terms = {normalize_term(v) for v in values if v}
    return {t for t in terms if t and len(t) <= MAX_TERM_LENGTH}


def _strip_content(items: Sequence[Mapping]) -> list[dict]:
    return [{"type": it["type"]} if it.get("type") in CONTENT_TYPES else dict(it) for it in items]


EVENT_COLUMNS = (
    "organization_id",
    "occurred_at",
    "recorded_at",
    "action_id",
    "actor_type",
    "actor_id",
    "actor_name",
    "actor_email",
    "product_id",
    "product_kind",
    "site_name",
    "context",
    "container",
    "content",
    "details",
    "ip",
    "user_agent",
    "country",
    "region",
    "city",
    "message",
)
_OCCURRED_AT = EVENT_COLUMNS.index("occurred_at")
_json_encode = DjangoJSONEncoder(separators=(",", ":")).encode
try:
    # The same text as _json_encode, without building a new C encoder on every call
    # (JSONEncoder.encode does); DjangoJSONEncoder.default still handles datetimes,
    # decimals and UUIDs. No circular-reference check: the values are plain data.
    _json_chunks = json.encoder.c_make_encoder(
        None,
        DjangoJSONEncoder().default,
        json.encoder.encode_basestring_ascii,
        None,
        ":",
        ",",
        False,
        False,
        True,
    )

    def _json_text(value: object) -> str:
        return "".join(_json_chunks(value, 0))

except TypeError:  # pragma: no cover - a Python built without the C accelerator
    _json_text = _json_encode

_NO_LOCATION = Location()
_USER = Event.ActorType.USER.value


def _db_datetime_adapter():
    """A fast stand-in for connection.ops.adapt_datetimefield_value on aware values."""
    if connection.vendor == "sqlite":
        # Django stores SQLite datetimes as naive UTC text, "YYYY-MM-DD HH:MM:SS[.ffffff]".
        def sqlite_text(value: datetime) -> str:
            if value.tzinfo is UTC:  # "... HH:MM:SS[.ffffff]+00:00"
                return value.isoformat(" ")[:-6]
            return str(value.astimezone(UTC).replace(tzinfo=None))

        return sqlite_text
    return lambda value: value


_PLACEHOLDER = "(" + ", ".join(["%s"] * len(EVENT_COLUMNS)) + ")"
_INSERT_ROWS = 500  # rows per INSERT statement: well under both databases' parameter limits
_ROW4 = "(%s, %s, %s, %s)"
_CACHE_LIMIT = 10_000  # entries per cache of a _Recorder


class _Built(NamedTuple):
    """One event ready to insert: its row in EVENT_COLUMNS order, already in the
    database's types (JSON text; UTC text on SQLite), its normalized search terms,
    and (for event_record only) the Python values it hands back on the Event.

    Tuples of plain values, not lists and sets: the garbage collector stops
    tracking those, and a batch keeps thousands alive at once."""

    params: tuple
    terms: tuple[str, ...]
    occurred_at: datetime
    python: tuple | None  # (context, container, details) for event_record


class _Recorder:
    """Applies the rules for one organization; shared by the single and batch paths.

    Rows go to the database as plain INSERTs rather than through bulk_create: the
    ORM's per-field preparation cost several times the database's own work. Within
    one recorder (one call of event_record or event_record_batch) the plan's answer
    per (action, product), each product's and actor's derived values and each
    normalized search term are worked out once: a batch repeats them constantly."""

    def __init__(
        self, organization: Organization, *, single: bool = False, plan: Plan | None = None
    ):
        self.organization = organization
        self.org_id = organization.pk
        self.plan = plan or organization.plan
        # Product ids whose user-created content is Not stored. A batch reads them
        # once; event_record reads its one product's setting, and only when the
        # event carries content the setting could drop (None: not read yet).
        self.single = single
        self.not_stored: set[int] | None = None
        if not single:
            self.not_stored = set(
                ActivitySetting.objects.filter(
                    organization=organization, content_stored=False
                ).values_list("product_id", flat=True)
            )
        self.now = timezone.now()
        self.db_time = _db_datetime_adapter()
        self.db_now = self.db_time(self.now)
        self.product_names: dict[int, str] = {}
        self._rules: dict[str, tuple[str, int, str]] = {}  # for events without a product
        self._products: dict[tuple, list] = {}
        self._products_seen: dict[int, tuple] = {}
        self._actors: dict[Actor, tuple] = {}
        self._actors_seen: dict[int, tuple] = {}
        self._normalized: dict[str, str] = {}

    def _term(self, value: str) -> str:
        """normalize_term(value), or "" when it is not a search term (empty, too long)."""
        term = self._normalized.get(value)
        if term is None:
            term = normalize_term(value)
            if len(term) > MAX_TERM_LENGTH:
                term = ""
            if len(self._normalized) < _CACHE_LIMIT:
                self._normalized[value] = term
        return term

    @staticmethod
    def _remember(seen: dict, obj: object, derived: object) -> None:
        """Caches `derived` by the identity of `obj`, keeping `obj` alive so that its
        id is not reused while the entry exists."""
        if len(seen) >= _CACHE_LIMIT:
            seen.clear()
        seen[id(obj)] = (obj, derived)

    def _actor(self, actor: Actor) -> tuple:
        """(type, id, name, email, display name, search terms) of `actor`."""
        hit = self._actors_seen.get(id(actor))
        if hit is not None and hit[0] is actor:
            return hit[1]
        try:
            derived = self._actors.get(actor)
        except TypeError:  # not hashable: worked out every time
            derived = None
        if derived is None:
            terms: tuple[str, ...] = ()
            if actor.type == _USER:
                terms = tuple(
                    {
                        term
                        for value in (actor.name, actor.email)
                        if value and (term := self._term(value))
                    }
                )
            derived = (
                actor.type,
                actor.id,
                actor.name[:200],
                actor.email[:254],
                actor.display,
                terms,
            )
            try:
                self._actors[actor] = derived
            except TypeError:
                pass
        self._remember(self._actors_seen, actor, derived)
        return derived

    def _product(self, product: Product) -> list:
        """[pk, kind, name, its site's name (None until needed), {action: rule}]."""
        hit = self._products_seen.get(id(product))
        if hit is not None and hit[0] is product:
            return hit[1]
        key = (product.pk, product.kind, product.site_id)
        derived = self._products.get(key)
        if derived is None:
            derived = self._products[key] = [
                product.pk,
                product.kind,
                self._product_name(product),
                None,
                {},
            ]
        self._remember(self._products_seen, product, derived)
        return derived

    def _product_name(self, product: Product) -> str:
        name = self.product_names.get(product.pk)
        if name is None:
            name = self.product_names[product.pk] = product.name
        return name

    def _content_hidden(self, product: Product, spec: EventSpec) -> bool:
        """Whether the org does not store user-created content for `product`."""
        if self.not_stored is None:
            if not any(it.get("type") in CONTENT_TYPES for it in (*spec.context, *spec.container)):
                return False  # no content to drop: the setting would change nothing
            self.not_stored = set(
                ActivitySetting.objects.filter(
                    organization=self.organization, product=product, content_stored=False
                ).values_list("product_id", flat=True)
            )
        return product.pk in self.not_stored

    def _rule(self, action: str, product: Product | None) -> tuple[str, int, str]:
        """(why the plan refuses it or "", activity id, message template)."""
        activity = activity_for_key(action)
        return (plan_refusal(self.plan, activity, product), activity.pk, activity.template)

    def build(self, spec: EventSpec) -> _Built | str:
        action, product = spec.action, spec.product
        if product is None:
            derived = None
            rule = self._rules.get(action)
            if rule is None:
                rule = self._rules[action] = self._rule(action, None)
        else:
            derived = self._product(product)
            rule = derived[4].get(action)
            if rule is None:
                rule = derived[4][action] = self._rule(action, product)
        refusal, action_id, template = rule
        if refusal:
            return refusal
        site = spec.site
        if site is not None:
            site_name = site.name
        elif derived is not None:
            site_name = derived[3]
            if site_name is None:
                site_name = derived[3] = product.site.name
        else:
            site_name = ""
        content = ""
        not_stored = self.not_stored
        if derived is not None and (
            derived[0] in not_stored
            if not_stored is not None
            else self._content_hidden(product, spec)
        ):
            context, container = _strip_content(spec.context), _strip_content(spec.container)
            items = context + container
        else:
            context, container = list(spec.context), list(spec.container)
            items = context + container if container else context
            for it in items:
                if it.get("type") in CONTENT_TYPES and it.get("name"):
                    content = str(it["name"])
                    break
        actor_type, actor_id, actor_name, actor_email, actor_display, actor_terms = self._actor(
            spec.actor
        )
        values = _Values(
            actor=actor_display,
            product=derived[2] if derived is not None else "a product",
            site=site_name or "a site",
        )
        ip = ip_valid(spec.ip)
        if ip:
            values["ip"] = ip
        terms = set(actor_terms)
        if site_name and (term := self._term(site_name)):
            terms.add(term)
        for it in reversed(items):
            label = it.get("name") or it.get("email") or it.get("id")
            if label:
                values[it["type"]] = label
            if it.get("type") in SEARCHABLE_TYPES:
                for value in (it.get("name"), it.get("email")):
                    if value and (term := self._term(value)):
                        terms.add(term)
        details = spec.details
        if details:
            for key, value in details.items():
                values[key] = str(value)
            for value in _detail_terms(action, details):
                if term := self._term(value):
                    terms.add(term)
            details = dict(details)
            details_json = _json_text(details)
        else:
            details, details_json = {}, "{}"
        occurred_at = spec.occurred_at or self.now
        if occurred_at.utcoffset() is None:
            raise ValueError("occurred_at must be timezone-aware")
        location = spec.location or _NO_LOCATION
        params = (
            self.org_id,
            self.db_time(occurred_at),
            self.db_now,
            action_id,
            actor_type,
            actor_id,
            actor_name,
            actor_email,
            derived[0] if derived is not None else None,
            derived[1] if derived is not None else "",
            site_name,
            _json_text(context) if context else "[]",
            _json_text(container) if container else "[]",
            content[:500],
            details_json,
            ip,
            (spec.user_agent or "")[:500],
            location.country,
            location.region,
            location.city,
            template.format_map(values)[:1000],
        )
        return _Built(
            params,
            tuple(terms),
            occurred_at,
            (context, container, details) if self.single else None,
        )

    def row(self, built: _Built) -> dict:
        """The Event field values of `built`, as Python values."""
        row = dict(zip(EVENT_COLUMNS, built.params, strict=True))
        row["occurred_at"], row["recorded_at"] = built.occurred_at, self.now
        row["context"], row["container"], row["details"] = built.python
        return row

    def save(self, built: Sequence[_Built]) -> list[int]:
        """Inserts the rows, their search terms and hourly counts; returns the ids.
        Must run inside transaction.atomic()."""
        ids: list[int] = []
        table = Event._meta.db_table
        columns = ", ".join(EVENT_COLUMNS)
        sqlite = connection.vendor == "sqlite"
        with connection.cursor() as cursor:
            if sqlite and len(built) == 1:
                cursor.execute(
                    f"INSERT INTO {table} ({columns}) VALUES {_PLACEHOLDER}", built[0].params
                )
                ids = [cursor.lastrowid]
            elif sqlite:
                # Inside the write transaction no other writer can interleave, so
                # AUTOINCREMENT hands out consecutive ids: executemany is several
                # times faster than a multi-row INSERT ... RETURNING here.
                cursor.executemany(
                    f"INSERT INTO {table} ({columns}) VALUES {_PLACEHOLDER}",
                    [b.params for b in built],
                )
                cursor.execute("SELECT last_insert_rowid()")
                last = cursor.fetchone()[0]
                ids = list(range(last - len(built) + 1, last + 1))
            elif len(built) < _PG_COPY_ROWS:
                for start in range(0, len(built), _INSERT_ROWS):
                    chunk = built[start : start + _INSERT_ROWS]
                    cursor.execute(
                        f"INSERT INTO {table} ({columns}) VALUES "
                        + ", ".join([_PLACEHOLDER] * len(chunk))
                        + " RETURNING id",
                        [value for b in chunk for value in b.params],
                    )
                    ids += sorted(r[0] for r in cursor.fetchall())
            else:
                ids = _pg_copy_events(built)
            org_id = self.org_id
            term_rows = [
                (org_id, term, b.params[_OCCURRED_AT], event_id)
                for b, event_id in zip(built, ids, strict=True)
                for term in b.terms
            ]
            if sqlite or len(term_rows) < _PG_COPY_ROWS:
                _terms_insert(cursor, term_rows)
            else:
                _pg_copy(
                    EventTerm._meta.db_table,
                    "organization_id, term, occurred_at, event_id",
                    term_rows,
                )
        if sqlite:
            # The hour of "YYYY-MM-DD HH:MM:SS[.ffffff]" UTC text is its first 13
            # characters, as text the way Django stores "YYYY-MM-DD HH:00:00".
            hours = Counter((b.params[_OCCURRED_AT][:13], b.params[3]) for b in built)
            _hourly_counts_upsert(
                [(org_id, f"{hour}:00:00", action_id, n) for (hour, action_id), n in hours.items()]
            )
            _hourly_totals_add(org_id, {f"{hour}:00:00": n for hour, n in _per_hour(hours)})
        else:
            hours = Counter(
                (
                    b.occurred_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0),
                    b.params[3],
                )
                for b in built
            )
            _hourly_counts_add(org_id, hours)
            _hourly_totals_add(org_id, dict(_per_hour(hours)))
        return ids


# PostgreSQL: from this many rows, COPY. Django's psycopg cursor binds parameters
# on the client (it quotes every value into the SQL text), which costs more than
# the server's own work for big batches; COPY streams the rows in one round trip.
_PG_COPY_ROWS = 50


def _pg_copy(table: str, columns: str, rows: Iterable[Sequence]) -> None:
    with connection.connection.cursor() as cursor:
        with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def _pg_copy_events(built: Sequence[_Built]) -> list[int]:
    """COPYs the events with ids drawn from the table's own sequence beforehand (as
    the INSERT's default would have, in the same order); returns the ids."""
    table = Event._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [table, len(built)],
        )
        ids = sorted(r[0] for r in cursor.fetchall())
    _pg_copy(
        table,
        "id, " + ", ".join(EVENT_COLUMNS),
        ((event_id, *b.params) for event_id, b in zip(ids, built, strict=True)),
    )
    return ids


def _terms_insert(cursor, rows: list[tuple]) -> None:
    if not rows:
        return
    table = EventTerm._meta.db_table
    sql = f"INSERT INTO {table} (organization_id, term, occurred_at, event_id) VALUES "
    if len(rows) <= _INSERT_ROWS // 4:
        cursor.execute(sql + ", ".join([_ROW4] * len(rows)), [v for row in rows for v in row])
    else:
        cursor.executemany(sql + _ROW4, rows)


def _per_hour(hours: Mapping[tuple, int]) -> Iterable[tuple]:
    totals: Counter = Counter()
    for (hour, _), n in hours.items():
        totals[hour] += n
    return totals.items()


def _hourly_totals_add(org_id: int, totals: Mapping) -> None:
    """Adds to the per-hour totals (hours as the database stores them)."""
    table = EventHourlyTotal._meta.db_table
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} (organization_id, hour, count) VALUES (%s, %s, %s) "
            "ON CONFLICT (organization_id, hour) "
            f"DO UPDATE SET count = {table}.count + excluded.count",
            [(org_id, hour, n) for hour, n in totals.items()],
        )


def _hourly_counts_add(org_id: int, hours: Mapping[tuple[datetime, int], int]) -> None:
    if not hours:
        return
    if connection.vendor == "postgresql" and len(hours) > 1:
        # One statement for the lot, rather than one execution per row.
        table = EventHourlyCount._meta.db_table
        keys = list(hours)
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (organization_id, hour, action_id, count) "
                "SELECT %s, u.hour, u.action_id, u.count FROM unnest("
                "%s::timestamptz[], %s::bigint[], %s::integer[]) AS u(hour, action_id, count) "
                "ON CONFLICT (organization_id, hour, action_id) "
                f"DO UPDATE SET count = {table}.count + excluded.count",
                [
                    org_id,
                    [hour for hour, _ in keys],
                    [action_id for _, action_id in keys],
                    [hours[key] for key in keys],
                ],
            )
        return
    adapt = connection.ops.adapt_datetimefield_value
    _hourly_counts_upsert(
        [(org_id, adapt(hour), action_id, n) for (hour, action_id), n in hours.items()]
    )


def _hourly_counts_upsert(rows: list[tuple]) -> None:
    """Adds (organization_id, hour as the database stores it, action_id, count) rows."""
    if not rows:
        return
    table = EventHourlyCount._meta.db_table
    sql = (
        f"INSERT INTO {table} (organization_id, hour, action_id, count) VALUES %s "
        f"ON CONFLICT (organization_id, hour, action_id) "
        f"DO UPDATE SET count = {table}.count + excluded.count"
    )
    with connection.cursor() as cursor:
        if len(rows) == 1:
            cursor.execute(sql % _ROW4, rows[0])
        else:
            cursor.executemany(sql % _ROW4, rows)


def event_record(
    *,
    organization: Organization,
    action: str,
    actor: Actor = SYSTEM,
    occurred_at: datetime | None = None,
    product: Product | None = None,
    site: Site | None = None,
    context: Sequence[Mapping] = (),
    container: Sequence[Mapping] = (),
    details: Mapping[str, object] | None = None,
    ip: str | None = None,
    user_agent: str = "",
    location: Location | None = None,
    plan: Plan | None = None,
) -> RecordResult:
    """Record one activity of `organization`.

    `context` lists what was acted on and `container` where, as {type, id, name[, email]}
    items (types: user, group, site, page, issue, space, token, policy, ...). `details`
    fills the message's other fields (old, new, setting, count, ...) and is kept on the
    event. Returns the event, or no event and the reason the plan does not record it.
    `plan` rules instead of the organization's current one (a plan change is recorded
    under whichever of the old and new plans keeps a log).
    """
    spec = EventSpec(
        action=action,
        actor=actor,
        occurred_at=occurred_at,
        product=product,
        site=site,
        context=context,
        container=container,
        details=details or {},
        ip=ip,
        user_agent=user_agent,
        location=location,
    )
    recorder = _Recorder(organization, single=True, plan=plan)
    built = recorder.build(spec)
    if isinstance(built, str):
        return RecordResult(None, built)
    with transaction.atomic():
        (event_id,) = recorder.save([built])
    event = Event(id=event_id, **recorder.row(built))
    event._state.adding = False
    return RecordResult(event)


def event_record_batch(*, organization: Organization, specs: Iterable[EventSpec]) -> BatchResult:
    """Record many activities of one organization under the same rules as
    event_record, in one transaction per AUDIT_RECORD_BATCH_SIZE events."""
    return _record_batch(organization, specs, settings.AUDIT_RECORD_BATCH_SIZE)


def _record_batch(organization: Organization, specs: Iterable[EventSpec], size: int) -> BatchResult:
    """event_record_batch with `size` events per transaction. Each chunk's rows are
    built before its transaction starts, so the write lock is held only for the
    INSERTs and the commit."""
    recorder = _Recorder(organization)
    event_ids: list[int] = []
    skipped: list[tuple[int, str]] = []
    chunk: list[_Built] = []
    for index, spec in enumerate(specs):
        built = recorder.build(spec)
        if isinstance(built, str):
            skipped.append((index, built))
            continue
        chunk.append(built)
        if len(chunk) >= size:
            with transaction.atomic():
                event_ids += recorder.save(chunk)
            chunk = []
    if chunk:
        with transaction.atomic():
            event_ids += recorder.save(chunk)
    return BatchResult(event_ids, skipped)


def ip_valid(value: object) -> str | None:
    """`value` as a normalized IP address, or None when it is not one: whatever a
    caller passes (a header, a stored export request), the column never gets text
    that PostgreSQL's inet type would refuse."""
    if not value:
        return None
    try:
        address = ipaddress.ip_address(str(value).strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        address = ipaddress.IPv6Address(int(address))  # inet has no zone ("%eth0")
    return str(address)


def client_ip(request: HttpRequest) -> str | None:
    """The one place the client's address is read from a request (django-axes too).

    TRUSTED_PROXY_COUNT = 0: the socket's address (REMOTE_ADDR); X-Forwarded-For and the
    like are ignored, since any client can send them. N > 0 (N proxies in front, each
    appending the address it received the request from): the Nth entry from the right
    of X-Forwarded-For, the address the outermost trusted proxy saw; whatever a client
    put in front of it is never looked at. Fewer than N entries, or that entry not an
    address: no address. (Not django-ipware: it skips entries that do not parse before
    counting, which moves the position onto one a client wrote.)"""
    proxies = settings.TRUSTED_PROXY_COUNT
    if not proxies:
        return ip_valid(request.META.get("REMOTE_ADDR"))
    chain = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
    return ip_valid(chain[-proxies]) if len(chain) >= proxies else None


def request_meta(request: HttpRequest) -> dict:
    """The IP address and user agent to record for an action taken in `request`."""
    return {"ip": client_ip(request), "user_agent": request.META.get("HTTP_USER_AGENT", "")[:500]}


# Activity settings: whether user-created content is stored, per product.


def stored_label(content_stored: bool) -> str:
    return "Stored" if content_stored else "Not stored"


def activity_setting_refusal(organization: Organization, product: Product | None = None) -> str:
    """Why `organization` may not choose Stored / Not stored (for `product`), or ""."""
    plan = organization.plan
    if not (plan.audit_log and plan.user_created_activity and plan.content_setting):
        return f"The {plan.name} plan does not include user-created activity settings."
    if product is not None and not plan.covers_product(product.kind):
        return f"The {plan.name} plan does not record user-created activity for {product.name}."
    return ""


def activity_setting_update(
    *,
    organization: Organization,
    product: Product,
    content_stored: bool,
    actor_user: User,
    ip: str | None = None,
    user_agent: str = "",
) -> bool:
    """Store or stop storing user-created content for `product` from now on; events
    recorded before keep what they had. Records activity_settings_updated when the
    value changes and returns whether it did. Raises PermissionDenied (changing
    nothing) when the plan does not include the setting for that product."""
    from django.core.exceptions import PermissionDenied

    if product.site.organization_id != organization.pk:
        raise ValueError(f"{product} does not belong to {organization}")
    refusal = activity_setting_refusal(organization, product)
    if refusal:
        raise PermissionDenied(refusal)
    with transaction.atomic():
        setting, _ = ActivitySetting.objects.get_or_create(
            product=product, defaults={"organization": organization}
        )
        # Lock the row so two admins saving at once record the true old value.
        setting = ActivitySetting.objects.select_for_update().get(pk=setting.pk)
        old = setting.content_stored
        if old == content_stored:
            return False
        setting.content_stored = content_stored
        setting.updated_at = timezone.now()
        setting.updated_by = actor_user
        setting.save(update_fields=["content_stored", "updated_at", "updated_by"])
        event_record(
            organization=organization,
            action="activity_settings_updated",
            actor=Actor.for_user(actor_user),
            product=product,
            context=[item("product", product.pk, product.name)],
            details={"old": stored_label(old), "new": stored_label(content_stored)},
            ip=ip,
            user_agent=user_agent,
        )
    return True
