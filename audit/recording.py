"""The recorder behind audit.services.event_record and event_record_batch: the rules
applied to each event, its search terms, and the SQL that writes events, terms and
hourly counts (plain INSERTs on SQLite, COPY for PostgreSQL batches).

Public surface: `Recorder` (build, then save inside a transaction), `record_specs`
(many events, one transaction per chunk), `event_terms` (the one derivation of an
event's search terms, which the retention purge uses too), the catalogue lookups
(`activity_for_key`, `activity_by_id`, `activity_cache_clear`, `activity_keys_by_id`),
`plan_refusal`, `normalize_term`, `term_hash`, `ip_valid`, `event_ids_draw`, and the
term rows' layout (`TERM_COLUMNS`, `terms_rows`), which the seed's fast path
(audit.seed_fast) writes too. Everything else here is private to recording and the seed.
"""

import hashlib
import ipaddress
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

import orjson
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from orgs.models import Organization, Plan, Product

from .catalogue import CATEGORY_BY_KEY, CONTENT_TYPES, SEARCHABLE_DETAILS, SEARCHABLE_TYPES
from .geo import Place, location_for_ip
from .models import Activity, ActivitySetting, Event, EventHourlyCount, EventHourlyTotal, EventTerm
from .verify import EVENT_FIELDS, EVENT_VERSION, canonical_time, event_hash

if TYPE_CHECKING:
    from .services import Actor, EventSpec, Location

MAX_TERM_LENGTH = 200
_USER = Event.ActorType.USER.value

# The catalogue, read once per process: it changes only through migrations, and one
# query per recording call would double the cost of a single event.
_ACTIVITY_CACHE: dict[str, Activity] | None = None
_ACTIVITY_BY_ID: tuple[dict[str, Activity], dict[int, Activity]] | None = None


def _activities() -> dict[str, Activity]:
    global _ACTIVITY_CACHE
    if _ACTIVITY_CACHE is None:
        _ACTIVITY_CACHE = {a.key: a for a in Activity.objects.all()}
    return _ACTIVITY_CACHE


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


def activity_by_id(activity_id: int) -> Activity:
    """The catalogue's activity with this id (read once per process, as activity_for_key)."""
    activity = _activities_by_id().get(activity_id)
    if activity is None:  # added since this process read the catalogue
        activity_cache_clear()
        activity = _activities_by_id()[activity_id]
    return activity


def _activities_by_id() -> dict[int, Activity]:
    global _ACTIVITY_BY_ID
    by_key = _activities()
    if _ACTIVITY_BY_ID is None or _ACTIVITY_BY_ID[0] is not by_key:
        _ACTIVITY_BY_ID = (by_key, {a.pk: a for a in by_key.values()})
    return _ACTIVITY_BY_ID[1]


def activity_keys_by_id() -> dict[int, str]:
    return {activity.pk: key for key, activity in _activities().items()}


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


def ip_valid(value: object) -> str | None:
    """`value` as a normalized IP address, or None when it is not one: whatever a
    caller passes (a header, a stored export request), the column never gets text
    that PostgreSQL's inet type would refuse."""
    if not value:
        return None
    return _ip_normalized(str(value).strip())


@lru_cache(maxsize=16384)  # the same addresses come again and again; parsing is slow
def _ip_normalized(text: str) -> str | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        address = ipaddress.IPv6Address(int(address))  # inet has no zone ("%eth0")
    return str(address)


# Search terms.


def normalize_term(value: str) -> str:
    return value.strip().lower()


def term_hash(term: str) -> int:
    """The 64-bit key a normalized search term is stored and searched by: the first 8
    bytes of its SHA-256, as a signed bigint. Fixed-width rows (the table and its key
    were as large as the events with the text itself); two terms may share a hash, so
    whatever reads terms by hash re-checks that the event carries the term
    (audit.selectors.event_carries_term). PostgreSQL computes the same value as
    ('x' || left(encode(sha256(convert_to(term, 'UTF8')), 'hex'), 16))::bit(64)::bigint
    (migration 0015)."""
    return int.from_bytes(hashlib.sha256(term.encode()).digest()[:8], "big", signed=True)


def _term_or_empty(value: str) -> str:
    """normalize_term(value), or "" when it is not a search term (too long)."""
    term = normalize_term(value)
    return term if len(term) <= MAX_TERM_LENGTH else ""


def event_terms(
    *,
    actor_type: str,
    actor_name: str,
    actor_email: str,
    site_name: str,
    items: Iterable[Mapping],
    action: str,
    details: Mapping[str, object] | None,
    term: Callable[[str], str] = _term_or_empty,
) -> set[str]:
    """An event's search terms, from the values it stores: a user actor's name and
    email (actor_terms), the site's name, the names and emails of the user, group and
    site items of its context and container, and the `details` values
    SEARCHABLE_DETAILS names for its action (emails, user and group names a change
    shows) (content_terms). Recording and the retention purge both derive them so, and
    a term is always found again to be removed. `term` normalizes a value ("" drops
    it); the recorder passes a cached one, and caches actor_terms per actor."""
    return actor_terms(actor_type, actor_name, actor_email, term) | content_terms(
        site_name, items, action, details, term
    )


def actor_terms(
    actor_type: str, name: str, email: str, term: Callable[[str], str] = _term_or_empty
) -> set[str]:
    """The search terms an actor gives its events: a user's name and email."""
    if actor_type != _USER:
        return set()
    return {t for value in (name, email) if value and (t := term(value))}


def content_terms(
    site_name: str,
    items: Iterable[Mapping],
    action: str,
    details: Mapping[str, object] | None,
    term: Callable[[str], str] = _term_or_empty,
) -> set[str]:
    """The search terms of what an event names: its site, its user / group / site items
    and the details its action makes searchable."""
    values = [site_name]
    for it in items:
        if it.get("type") in SEARCHABLE_TYPES:
            values += (it.get("name"), it.get("email"))
    keys = SEARCHABLE_DETAILS.get(action) if details else None
    if keys:
        values += [value for key in keys if isinstance(value := details.get(key), str)]
    return {t for value in values if value and (t := term(value))}


# Rows.

# The row's columns: the fields an event's hash covers, in the same order (the action by
# its id), then the hash.
EVENT_COLUMNS = (*(f if f != "action" else "action_id" for f in EVENT_FIELDS), "hash")
_OCCURRED_AT = EVENT_COLUMNS.index("occurred_at")
_ACTION_ID = EVENT_COLUMNS.index("action_id")
# Sorted keys: the stored text is then the canonical text the event's hash covers
# (audit.verify.canonical_json), and the recorder hashes it as it is.
_json_text_any = DjangoJSONEncoder(separators=(",", ":"), sort_keys=True).encode
# orjson writes the same bytes as json's ensure_ascii encoders for strings, integers,
# None and booleans whose text is printable ASCII (it escapes the same characters the
# same way; it leaves DEL and non-ASCII as they are, where json escapes them, so such
# text goes to json). Not floats (1e16 is "1e16" there, "1e+16" here) nor other types:
# those go to json too. About 1 us instead of 3 for each of an event's JSON texts; the
# bytes hashed are json's to the byte (audit.verify, which must stay standard library,
# checks them so).
_SORTED = orjson.OPT_SORT_KEYS
_STRINGS = frozenset({str})
# Event.ActorType: a str enum, written as its value by both.
_PLAIN_VALUES = frozenset({str, int, type(None), Event.ActorType})


def _json_text(value: object) -> str:
    """canonical JSON text (sorted keys, compact, ASCII) of a value to store."""
    if type(value) is list and all(
        type(it) is dict and _STRINGS.issuperset(map(type, it.values())) for it in value
    ):  # context and container: items of strings (orjson refuses keys not strings)
        try:
            data = orjson.dumps(value, option=_SORTED)
        except orjson.JSONEncodeError:
            return _json_text_any(value)
        if data.isascii() and b"\x7f" not in data:
            return data.decode()
    return _json_text_any(value)


def _event_digest(stored: list) -> bytes:
    """audit.verify.event_hash(stored), the canonical bytes written by orjson when they
    are the same."""
    if _PLAIN_VALUES.issuperset(map(type, stored)):
        try:
            data = orjson.dumps([EVENT_VERSION, *stored])
        except orjson.JSONEncodeError:  # an integer past 64 bits
            return event_hash(stored)
        if data.isascii() and b"\x7f" not in data:
            return hashlib.sha256(data).digest()
    return event_hash(stored)


_CACHE_LIMIT = 10_000  # entries per cache of a Recorder
_NOT_LOOKED_UP = object()  # an address's location before the recorder has looked it up


class MessageValues(dict):
    """Template values; a field with no value reads as a plain noun ("a page")."""

    def __missing__(self, key: str) -> str:
        return ("an " if key[0] in "aeiou" else "a ") + key


def db_time_adapter() -> Callable[[datetime], object]:
    """A fast stand-in for connection.ops.adapt_datetimefield_value on aware values."""
    if connection.vendor == "sqlite":
        # Django stores SQLite datetimes as naive UTC text, "YYYY-MM-DD HH:MM:SS[.ffffff]".
        def sqlite_text(value: datetime) -> str:
            if value.tzinfo is UTC:  # "... HH:MM:SS[.ffffff]+00:00"
                return value.isoformat(" ")[:-6]
            return str(value.astimezone(UTC).replace(tzinfo=None))

        return sqlite_text
    return lambda value: value


class Built(NamedTuple):
    """One event ready to insert: its row in EVENT_COLUMNS order, already in the
    database's types (JSON text; UTC text on SQLite), its normalized search terms,
    and (for a single event) the Python values handed back on the Event.

    Tuples of plain values, not lists and sets: the garbage collector stops
    tracking those, and a batch keeps thousands alive at once."""

    params: tuple
    terms: tuple[int, ...]  # term_hash of each search term
    occurred_at: datetime
    python: tuple | None  # (context, container, details) for event_record


class _ProductFacts(NamedTuple):
    pk: int
    kind: str
    name: str
    rules: dict  # action -> (refusal, activity id, template)
    site: list  # [its site's name], read the first time an event needs it


class Recorder:
    """Applies the rules for one organization; shared by the single and batch paths.

    Rows go to the database as plain INSERTs rather than through bulk_create: the
    ORM's per-field preparation cost several times the database's own work. Within
    one recorder (one call of event_record or event_record_batch) the plan's answer
    per (action, product), each product's derived values and each normalized search
    term are worked out once: a batch repeats them constantly."""

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
        self.db_time = db_time_adapter()
        self.db_now = self.db_time(self.now)
        self.hash_now = canonical_time(self.now)
        self._rules: dict[str, tuple[str, int, str]] = {}  # for events without a product
        self._products: dict[tuple, _ProductFacts] = {}
        self._normalized: dict[str, str] = {}
        self._hashes: dict[str, int] = {}
        self._ips: dict[object, list] = {}  # value -> [ip or None, location]
        self._actors: dict[Actor, tuple] = {}

    def _term(self, value: str) -> str:
        term = self._normalized.get(value)
        if term is None:
            term = _term_or_empty(value)
            if len(self._normalized) < _CACHE_LIMIT:
                self._normalized[value] = term
        return term

    def _term_hash(self, term: str) -> int:
        digest = self._hashes.get(term)
        if digest is None:
            digest = term_hash(term)
            if len(self._hashes) < _CACHE_LIMIT:
                self._hashes[term] = digest
        return digest

    def _actor(self, actor: "Actor") -> tuple[str, str, str, str, frozenset[str]]:
        """(stored id, name and email, display name, search terms), once per actor."""
        try:
            return self._actors[actor]
        except KeyError:
            name, email = actor.name[:200], actor.email[:254]
            derived = (
                str(actor.id),  # as the column stores it, so the hash is of what is stored
                name,
                email,
                actor.display,
                frozenset(actor_terms(actor.type, name, email, self._term)),
            )
            if len(self._actors) < _CACHE_LIMIT:
                self._actors[actor] = derived
            return derived

    def _ip(self, value: object, located: bool) -> tuple[str | None, "Location | Place | None"]:
        """(ip_valid(value), its location from the GeoIP database) once per distinct
        value: a batch repeats a few addresses. The location is looked up only for an
        event that has none of its own (`located` false), the first time one needs it."""
        entry = self._ips.get(value)
        if entry is None:
            entry = [ip_valid(value), _NOT_LOOKED_UP]
            if len(self._ips) < _CACHE_LIMIT:
                self._ips[value] = entry
        if not located and entry[1] is _NOT_LOOKED_UP:
            entry[1] = location_for_ip(entry[0]) if entry[0] else None
        return entry[0], None if located else entry[1]

    def _product(self, product: Product) -> _ProductFacts:
        key = (product.pk, product.kind, product.site_id)
        facts = self._products.get(key)
        if facts is None:
            facts = self._products[key] = _ProductFacts(
                product.pk, product.kind, product.name, {}, []
            )
        return facts

    @staticmethod
    def _site_name(spec: "EventSpec", facts: _ProductFacts | None) -> str:
        if spec.site is not None:
            return spec.site.name
        if facts is None:
            return ""
        if not facts.site:
            facts.site.append(spec.product.site.name)
        return facts.site[0]

    def _content_hidden(self, product: Product, spec: "EventSpec") -> bool:
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

    def _rule(self, action: str, facts: _ProductFacts | None, product) -> tuple[str, int, str]:
        """(why the plan refuses it or "", activity id, message template)."""
        rules = self._rules if facts is None else facts.rules
        rule = rules.get(action)
        if rule is None:
            activity = activity_for_key(action)
            rule = rules[action] = (
                plan_refusal(self.plan, activity, product),
                activity.pk,
                activity.template,
            )
        return rule

    def _items(self, spec: "EventSpec", facts: _ProductFacts | None) -> tuple[list, list, str]:
        """(context, container, content): content items lose their names when the
        organization does not store the product's user-created content."""
        if facts is not None and (
            facts.pk in self.not_stored
            if self.not_stored is not None
            else self._content_hidden(spec.product, spec)
        ):
            return _strip_content(spec.context), _strip_content(spec.container), ""
        context, container = list(spec.context), list(spec.container)
        for it in (*context, *container):
            if it.get("type") in CONTENT_TYPES and it.get("name"):
                return context, container, str(it["name"])
        return context, container, ""

    def build(self, spec: "EventSpec") -> Built | str:
        """The event ready to save, or why the plan does not record it."""
        facts = self._product(spec.product) if spec.product is not None else None
        refusal, action_id, template = self._rule(spec.action, facts, spec.product)
        if refusal:
            return refusal
        site_name = self._site_name(spec, facts)
        context, container, content = self._items(spec, facts)
        items = context + container if container else context
        actor: Actor = spec.actor
        actor_id, actor_name, actor_email, display, terms = self._actor(actor)
        location = spec.location  # the caller's location wins over the lookup
        ip, looked_up = self._ip(spec.ip, location is not None)
        location = location or looked_up
        details = dict(spec.details) if spec.details else {}
        terms = terms | content_terms(site_name, items, spec.action, details, self._term)
        message = template.format_map(
            _message_values(display, facts, site_name, ip, items, details)
        )
        occurred_at = spec.occurred_at or self.now
        if occurred_at.utcoffset() is None:
            raise ValueError("occurred_at must be timezone-aware")
        stored = [
            self.org_id,
            canonical_time(occurred_at),
            self.hash_now,
            spec.action,
            actor.type,
            actor_id,
            actor_name,
            actor_email,
            facts.pk if facts is not None else None,
            facts.kind if facts is not None else "",
            site_name,
            _json_text(context) if context else "[]",
            _json_text(container) if container else "[]",
            content[:500],
            _json_text(details) if details else "{}",
            ip,
            (spec.user_agent or "")[:500],
            location.country if location else "",
            location.region if location else "",
            location.city if location else "",
            message[:1000],
        ]
        # The event's hash, over its canonical serialization: the stored values, with
        # times in canonical text and the action by key (audit.verify.EVENT_FIELDS).
        digest = _event_digest(stored)
        stored[1], stored[2], stored[3] = self.db_time(occurred_at), self.db_now, action_id
        stored.append(digest)
        params = tuple(stored)
        python = (context, container, details) if self.single else None
        # One row per hash: two terms of one event that share a hash share its row.
        return Built(params, tuple({*map(self._term_hash, terms)}), occurred_at, python)

    def row(self, built: Built) -> dict:
        """The Event field values of `built`, as Python values."""
        row = dict(zip(EVENT_COLUMNS, built.params, strict=True))
        row["occurred_at"], row["recorded_at"] = built.occurred_at, self.now
        row["context"], row["container"], row["details"] = built.python
        return row

    def save(self, built: Sequence[Built], ids: Sequence[int] | None = None) -> list[int]:
        """Inserts the rows, their search terms and hourly counts; returns the ids.
        Must run inside transaction.atomic(). PostgreSQL: `ids` are ids drawn
        beforehand (event_ids_draw), one per row, in that order."""
        sqlite = connection.vendor == "sqlite"
        with connection.cursor() as cursor:
            if sqlite:
                ids = _sqlite_insert_events(cursor, built)
            elif ids is not None or len(built) >= _PG_COPY_ROWS:
                ids = _pg_copy_events(built, ids)
            else:
                ids = _pg_insert_events(cursor, built)
            term_rows = terms_rows(
                self.org_id,
                ((b.terms, b.params[_OCCURRED_AT], i) for b, i in zip(built, ids, strict=True)),
            )
            if sqlite or len(term_rows) < _PG_COPY_ROWS:
                _terms_insert(cursor, term_rows)
            else:
                _pg_copy(EventTerm._meta.db_table, ", ".join(TERM_COLUMNS), term_rows)
        _hourly_add(self.org_id, built, sqlite)
        return ids


def _message_values(
    actor_display: str,
    facts: _ProductFacts | None,
    site_name: str,
    ip: str | None,
    items: Sequence[Mapping],
    details: Mapping[str, object],
) -> MessageValues:
    """The message template's fields: actor, product, site, ip, each item by its type
    (the first of a type wins), then the details."""
    values = MessageValues(
        actor=actor_display,
        product=facts.name if facts is not None else "a product",
        site=site_name or "a site",
    )
    if ip:
        values["ip"] = ip
    for it in reversed(items):
        label = it.get("name") or it.get("email") or it.get("id")
        if label:
            values[it["type"]] = label
    for key, value in details.items():
        values[key] = str(value)
    return values


def _strip_content(items: Sequence[Mapping]) -> list[dict]:
    return [{"type": it["type"]} if it.get("type") in CONTENT_TYPES else dict(it) for it in items]


def record_specs(
    organization: Organization, specs: Iterable["EventSpec"], size: int
) -> tuple[list[int], list[tuple[int, str]]]:
    """Records `specs` with `size` events per transaction: (event ids, skipped as (index,
    why)). Each chunk's rows are built before its transaction starts, so the write lock
    is held only for the INSERTs and the commit."""
    recorder = Recorder(organization)
    event_ids: list[int] = []
    skipped: list[tuple[int, str]] = []
    chunk: list[Built] = []
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
    return event_ids, skipped


class Prepared:
    """Events built before any transaction (rules applied, rows, terms and hashes
    ready); `save(indexes)` then writes the chosen ones inside the caller's transaction.
    For a caller that learns which to write only once it holds the write lock (ingest's
    once-only claims): the building, most of the work, is not done under the lock,
    which on SQLite is the one writer's."""

    def __init__(self, organization: Organization, specs: Iterable["EventSpec"]):
        self._recorder = Recorder(organization)
        self.built = [self._recorder.build(spec) for spec in specs]

    def refusal(self, index: int) -> str:
        """Why the plan does not record the `index`th event, or ""."""
        built = self.built[index]
        return built if isinstance(built, str) else ""

    def save(self, indexes: Sequence[int], ids: Sequence[int] | None = None) -> list[int]:
        """Writes the events at `indexes` (none refused); their ids, in that order.
        Must run inside transaction.atomic(). PostgreSQL: `ids`, drawn beforehand
        (event_ids_draw), are theirs."""
        rows = [self.built[index] for index in indexes]
        return self._recorder.save(rows, ids) if rows else []


# SQL.

_PLACEHOLDER = "(" + ", ".join(["%s"] * len(EVENT_COLUMNS)) + ")"
_INSERT_ROWS = 500  # rows per INSERT statement: well under both databases' parameter limits
_ROW4 = "(%s, %s, %s, %s)"
# PostgreSQL: from this many rows, COPY. Django's psycopg cursor binds parameters
# on the client (it quotes every value into the SQL text), which costs more than
# the server's own work for big batches; COPY streams the rows in one round trip.
_PG_COPY_ROWS = 50


def _sqlite_insert_events(cursor, built: Sequence[Built]) -> list[int]:
    sql = f"INSERT INTO {Event._meta.db_table} ({', '.join(EVENT_COLUMNS)}) VALUES {_PLACEHOLDER}"
    if len(built) == 1:
        cursor.execute(sql, built[0].params)
        return [cursor.lastrowid]
    # Inside the write transaction no other writer can interleave, so AUTOINCREMENT
    # hands out consecutive ids: executemany is several times faster than a multi-row
    # INSERT ... RETURNING here.
    cursor.executemany(sql, [b.params for b in built])
    cursor.execute("SELECT last_insert_rowid()")
    last = cursor.fetchone()[0]
    return list(range(last - len(built) + 1, last + 1))


def _pg_insert_events(cursor, built: Sequence[Built]) -> list[int]:
    ids: list[int] = []
    sql = f"INSERT INTO {Event._meta.db_table} ({', '.join(EVENT_COLUMNS)}) VALUES "
    for start in range(0, len(built), _INSERT_ROWS):
        chunk = built[start : start + _INSERT_ROWS]
        cursor.execute(
            sql + ", ".join([_PLACEHOLDER] * len(chunk)) + " RETURNING id",
            [value for b in chunk for value in b.params],
        )
        ids += sorted(r[0] for r in cursor.fetchall())
    return ids


def _pg_copy(table: str, columns: str, rows: Iterable[Sequence]) -> None:
    with connection.connection.cursor() as cursor:
        with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def event_ids_draw(count: int) -> list[int]:
    """PostgreSQL: `count` event ids from the table's own sequence, ascending, as the
    INSERT's default would hand them out. For a caller that must name the events' ids
    before it writes them (ingest's once-only rows); an id not used is a gap, as after
    a rollback."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [Event._meta.db_table, count],
        )
        return sorted(r[0] for r in cursor.fetchall())


def _pg_copy_events(built: Sequence[Built], ids: Sequence[int] | None = None) -> list[int]:
    """COPYs the events with ids drawn from the table's own sequence beforehand (as
    the INSERT's default would have, in the same order), or with `ids`; returns them."""
    ids = event_ids_draw(len(built)) if ids is None else list(ids)
    _pg_copy(
        Event._meta.db_table,
        "id, " + ", ".join(EVENT_COLUMNS),
        ((event_id, *b.params) for event_id, b in zip(ids, built, strict=True)),
    )
    return ids


# The search-term table's columns, in the order of terms_rows' tuples.
TERM_COLUMNS = ("organization_id", "term_hash", "occurred_at", "event_id")


def terms_rows(org_id: int, events: Iterable[tuple[Iterable[int], object, int]]) -> list[tuple]:
    """The search-term rows (TERM_COLUMNS) of saved events, given as (term hashes,
    occurred_at as the database takes it, event id): the recorder's and the seed's
    (audit.seed_fast) alike."""
    return [
        (org_id, digest, occurred_at, event_id)
        for digests, occurred_at, event_id in events
        for digest in digests
    ]


def _terms_insert(cursor, rows: list[tuple]) -> None:
    if not rows:
        return
    table = EventTerm._meta.db_table
    sql = f"INSERT INTO {table} ({', '.join(TERM_COLUMNS)}) VALUES "
    if len(rows) <= _INSERT_ROWS // 4:
        cursor.execute(sql + ", ".join([_ROW4] * len(rows)), [v for row in rows for v in row])
    else:
        cursor.executemany(sql + _ROW4, rows)


def _hourly_add(org_id: int, built: Sequence[Built], sqlite: bool) -> None:
    """Adds the events to the per-hour counts (per action) and totals of the chart."""
    if sqlite:
        # The hour of "YYYY-MM-DD HH:MM:SS[.ffffff]" UTC text is its first 13
        # characters, as text the way Django stores "YYYY-MM-DD HH:00:00".
        hours = Counter(
            (b.params[_OCCURRED_AT][:13] + ":00:00", b.params[_ACTION_ID]) for b in built
        )
        _hourly_counts_upsert(
            [(org_id, hour, action_id, n) for (hour, action_id), n in hours.items()]
        )
    else:
        hours = Counter(
            (
                b.occurred_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0),
                b.params[_ACTION_ID],
            )
            for b in built
        )
        _hourly_counts_add(org_id, hours)
    totals: Counter = Counter()
    for (hour, _), n in hours.items():
        totals[hour] += n
    _hourly_totals_add(org_id, totals)


def _hourly_totals_add(org_id: int, totals: Mapping) -> None:
    """Adds to the per-hour totals (hours as the database stores them)."""
    table = EventHourlyTotal._meta.db_table
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} (organization_id, hour, count) VALUES (%s, %s, %s) "
            "ON CONFLICT (organization_id, hour) "
            f"DO UPDATE SET count = {table}.count + excluded.count",
            [(org_id, hour, totals[hour]) for hour in sorted(totals)],  # lock order: by hour
        )


def _hourly_counts_add(org_id: int, hours: Mapping[tuple[datetime, int], int]) -> None:
    """PostgreSQL: adds (hour, action id) -> count to the per-action hourly counts."""
    if not hours:
        return
    if len(hours) == 1:
        adapt = connection.ops.adapt_datetimefield_value
        _hourly_counts_upsert([(org_id, adapt(hour), a, n) for (hour, a), n in hours.items()])
        return
    # One statement for the lot, rather than one execution per row; rows in key order, so
    # two batches over the same hours lock them in the same order (never a deadlock).
    table = EventHourlyCount._meta.db_table
    keys = sorted(hours)
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


def _hourly_counts_upsert(rows: list[tuple]) -> None:
    """Adds (organization_id, hour as the database stores it, action_id, count) rows."""
    if not rows:
        return
    table = EventHourlyCount._meta.db_table
    sql = (
        f"INSERT INTO {table} (organization_id, hour, action_id, count) VALUES {_ROW4} "
        f"ON CONFLICT (organization_id, hour, action_id) "
        f"DO UPDATE SET count = {table}.count + excluded.count"
    )
    with connection.cursor() as cursor:
        if len(rows) == 1:
            cursor.execute(sql, rows[0])
        else:
            cursor.executemany(sql, sorted(rows))  # lock order: by key
