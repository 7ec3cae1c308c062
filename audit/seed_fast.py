"""The seed's fast path (`seed_demo` on PostgreSQL, audit.demo_load): the demo's events
written exactly as the recorder writes them, at a fraction of its cost per event.

The recorder (audit.recording.Recorder) is general: each event's row becomes a tuple of
Python values that psycopg then formats for COPY as text, the terms as more tuples, and
each chunk adds its hourly counts. For `seed_demo` that was 43 µs of Python and 41 µs
of PostgreSQL per event (with the foreign keys' checks, which audit.demo_load now
leaves to the end): 14 minutes of two idle cores for the 20M of `--events 10000000
--orgs 1000`. This path takes 25 and 21 (README, "A big demo").

`SeedBuilder` derives every event with the recorder's own helpers (its rules, actor,
address, items and message values, `content_terms` and the term hashes: one
derivation), but encodes what repeats only once: the organization and recorded time,
an action's activity, product and site, an actor, an address, a location, a user agent
and the hour of a time each have their text in the event's canonical serialization
(audit.verify.event_canonical, which the hash covers) and their field of the row in
PostgreSQL's binary COPY format worked out the first time, and an event is those
pieces joined around the values that vary (its time, items, details, message). Rows go
to PostgreSQL as binary COPY (no text for the server to parse), the search terms as
the recorder makes and writes them (recording.term_rows, terms_insert: rows of many
events per term and day), and the hourly counts once per chunk, summed here
(_hourly_write).

tests/audit/test_seed_fast.py compares it with Recorder.build field by field (hash and
terms included) over thousands of generated events of every demo organization, and on
PostgreSQL what it stores with what record_specs stores.
"""

import hashlib
import ipaddress
import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import islice
from json.encoder import c_make_encoder, encode_basestring_ascii
from typing import NamedTuple

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction

from orgs.models import Organization

from .models import Event, EventHourlyCount, EventHourlyTotal
from .recording import (
    EVENT_COLUMNS,
    Recorder,
    _message_values,
    content_terms,
    event_ids_draw,
    term_rows,
    terms_insert,
)
from .services import EventSpec
from .verify import EVENT_VERSION, canonical_time

# The COPY's columns: the recorder's (EVENT_COLUMNS, the hashed fields then the hash),
# behind the id.
COPY_COLUMNS = ("id", *EVENT_COLUMNS)
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # binary timestamps count from here
_MICROSECOND = timedelta(microseconds=1)
_HOUR = 3_600_000_000  # microseconds
_HOUR_DELTA = timedelta(hours=1)
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # binary COPY header: no flags, no extension
_TRAILER = b"\xff\xff"
_NULL = b"\xff\xff\xff\xff"
_FIELDS = struct.pack(">h", len(COPY_COLUMNS))
_INT8 = struct.Struct(">iq").pack  # a bigint or timestamptz field: its length (8), the value
_INT4 = struct.Struct(">ii").pack  # an integer field: its length (4), the value
_LENGTH = struct.Struct(">i").pack
_CACHE_LIMIT = 10_000


def _text(value: str) -> bytes:
    data = value.encode()
    return _LENGTH(len(data)) + data


def _jsonb(text: str) -> bytes:
    data = text.encode()
    return _LENGTH(len(data) + 1) + b"\x01" + data  # jsonb's binary format: version 1, text


def _inet(address: str | None) -> bytes:
    if address is None:
        return _NULL
    ip = ipaddress.ip_address(address)
    # inet's binary format: family (PGSQL_AF_INET 2, PGSQL_AF_INET6 3), bits, is_cidr,
    # address length, the address.
    family = 2 if ip.version == 4 else 3
    data = bytes((family, ip.max_prefixlen, 0, len(ip.packed))) + ip.packed
    return _LENGTH(len(data)) + data


def _json_encoder():
    """The JSON text the recorder stores (recording._json_text: DjangoJSONEncoder's,
    sorted keys, compact, ASCII), from json's C encoder made once rather than on every
    call, as JSONEncoder.encode makes it."""
    encoder = DjangoJSONEncoder(separators=(",", ":"), sort_keys=True)
    if c_make_encoder is None:  # a Python without the json C accelerator
        return encoder.encode
    make = c_make_encoder(
        None,  # no check for circular references: the values are the generator's
        encoder.default,
        encode_basestring_ascii,
        None,
        encoder.key_separator,
        encoder.item_separator,
        encoder.sort_keys,
        encoder.skipkeys,
        encoder.allow_nan,
    )
    return lambda value: "".join(make(value, 0))


_json_fast = _json_encoder()


def _json(value: object) -> str:
    """A value as the canonical serialization's JSON array holds it (verify._ARRAY)."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return encode_basestring_ascii(value)
    if type(value) is int:
        return str(value)
    raise TypeError(f"unexpected stored value {value!r}")


class Seeded(NamedTuple):
    """One event as the fast path writes it."""

    event_id: int
    row: bytes  # its binary COPY tuple (COPY_COLUMNS), id included
    digest: bytes  # its hash (the row's last field)
    terms: tuple[int, ...]  # term_hash of each search term
    occurred_at: datetime
    hour: int  # hours since 2000 UTC
    action_id: int


class _Head(NamedTuple):
    """What an event's action, product and site give it: refusal, or the rest."""

    refusal: str
    action_id: int
    template: str
    facts: object
    site_name: str
    canonical: str  # its text from recorded_at to action (verify.EVENT_FIELDS' order)
    canonical_product: str  # product_id, product_kind, site_name
    row: bytes  # recorded_at, action_id
    row_product: bytes  # product_id, product_kind, site_name


class SeedBuilder:
    """Builds what `Recorder(organization).build(spec)` builds, as binary COPY rows.

    It holds a Recorder for its rules and caches (`recorded_at` is that recorder's), and
    caches the encodings of what repeats, by identity where the generator shares the
    object (actors, locations: kept alive by the cache, so an id is never reused) and by
    value otherwise."""

    def __init__(self, organization: Organization):
        self.recorder = Recorder(organization)
        self.org_id = organization.pk
        self._canonical_org = f'["{EVENT_VERSION}",{self.org_id},'
        self._row_org = _INT8(8, self.org_id)
        self._recorded_canonical = encode_basestring_ascii(self.recorder.hash_now)
        self._recorded_row = _INT8(8, (self.recorder.now - _PG_EPOCH) // _MICROSECOND)
        self._heads: dict[tuple, _Head] = {}
        self._actors: dict[int, tuple] = {}
        self._locations: dict[int, tuple] = {}
        self._ips: dict[str | None, tuple[str, bytes]] = {}
        self._agents: dict[str, tuple[str, bytes]] = {}
        self._hours: dict[int, str] = {}

    def _head(self, spec: EventSpec) -> _Head:
        recorder = self.recorder
        facts = recorder._product(spec.product) if spec.product is not None else None
        site_name = recorder._site_name(spec, facts)
        key = (spec.action, id(facts), site_name)  # facts live as long as the recorder
        head = self._heads.get(key)
        if head is None:
            refusal, action_id, template = recorder._rule(spec.action, facts, spec.product)
            product_id = facts.pk if facts is not None else None
            kind = facts.kind if facts is not None else ""
            head = self._heads[key] = _Head(
                refusal,
                action_id,
                template,
                facts,
                site_name,
                f",{self._recorded_canonical},{_json(spec.action)},",
                f",{_json(product_id)},{_json(kind)},{_json(site_name)},",
                self._recorded_row + _INT8(8, action_id),
                (_NULL if product_id is None else _INT8(8, product_id))
                + _text(kind)
                + _text(site_name),
            )
        return head

    def _actor(self, actor) -> tuple:
        """(the actor, canonical text, row fields, display name, search terms)."""
        entry = self._actors.get(id(actor))
        if entry is None or entry[0] is not actor:
            actor_id, name, email, display, terms = self.recorder._actor(actor)
            values = (actor.type, actor_id, name, email)
            entry = (
                actor,
                ",".join(map(_json, values)),
                b"".join(map(_text, values)),
                display,
                terms,
            )
            if len(self._actors) < _CACHE_LIMIT:
                self._actors[id(actor)] = entry
        return entry

    def _location(self, location) -> tuple[str, bytes]:
        entry = self._locations.get(id(location))
        if entry is None or entry[0] is not location:
            values = (
                (location.country, location.region, location.city) if location else ("", "", "")
            )
            entry = (location, ",".join(map(_json, values)), b"".join(map(_text, values)))
            if len(self._locations) < _CACHE_LIMIT:
                self._locations[id(location)] = entry
        return entry[1], entry[2]

    def _ip(self, ip: str | None) -> tuple[str, bytes]:
        entry = self._ips.get(ip)
        if entry is None:
            entry = (_json(ip), _inet(ip))
            if len(self._ips) < _CACHE_LIMIT:
                self._ips[ip] = entry
        return entry

    def _agent(self, user_agent: str) -> tuple[str, bytes]:
        entry = self._agents.get(user_agent)
        if entry is None:
            entry = (_json(user_agent), _text(user_agent))
            if len(self._agents) < _CACHE_LIMIT:
                self._agents[user_agent] = entry
        return entry

    def _time_canonical(self, micros: int) -> str:
        """canonical_time's text of the time `micros` after 2000 UTC, quoted as in the
        canonical serialization: its hour's part made once, the rest by arithmetic."""
        hour, rest = divmod(micros, _HOUR)
        prefix = self._hours.get(hour)
        if prefix is None:  # '"2026-11-30T14:'
            prefix = self._hours[hour] = '"' + canonical_time(_PG_EPOCH + hour * _HOUR_DELTA)[:14]
        minute, rest = divmod(rest, 60_000_000)
        second, micro = divmod(rest, 1_000_000)
        return f'{prefix}{minute:02d}:{second:02d}.{micro:06d}Z"'

    def build(self, spec: EventSpec, event_id: int) -> Seeded | str:
        """The event as row `event_id`, or why the plan does not record it: the
        values of Recorder.build, in the same order (recording.EVENT_COLUMNS)."""
        head = self._head(spec)
        if head.refusal:
            return head.refusal
        recorder = self.recorder
        context, container, content = recorder._items(spec, head.facts)
        items = context + container if container else context
        _, actor_canonical, actor_row, display, actor_terms = self._actor(spec.actor)
        location = spec.location  # the caller's location wins over the lookup
        ip, looked_up = recorder._ip(spec.ip, location is not None)
        location_canonical, location_row = self._location(location or looked_up)
        ip_canonical, ip_row = self._ip(ip)
        agent_canonical, agent_row = self._agent((spec.user_agent or "")[:500])
        details = dict(spec.details) if spec.details else {}
        site_name = head.site_name
        terms = actor_terms | content_terms(site_name, items, spec.action, details, recorder._term)
        message = head.template.format_map(
            _message_values(display, head.facts, site_name, ip, items, details)
        )[:1000]
        occurred_at = spec.occurred_at or recorder.now
        if occurred_at.utcoffset() is None:
            raise ValueError("occurred_at must be timezone-aware")
        micros = (occurred_at - _PG_EPOCH) // _MICROSECOND
        context_text = _json_fast(context) if context else "[]"
        container_text = _json_fast(container) if container else "[]"
        details_text = _json_fast(details) if details else "{}"
        content = content[:500]
        canonical = "".join(
            (
                self._canonical_org,
                self._time_canonical(micros),
                head.canonical,
                actor_canonical,
                head.canonical_product,
                encode_basestring_ascii(context_text),
                ",",
                encode_basestring_ascii(container_text),
                ",",
                encode_basestring_ascii(content),
                ",",
                encode_basestring_ascii(details_text),
                ",",
                ip_canonical,
                ",",
                agent_canonical,
                ",",
                location_canonical,
                ",",
                encode_basestring_ascii(message),
                "]",
            )
        )
        digest = hashlib.sha256(canonical.encode("ascii")).digest()
        row = b"".join(
            (
                _FIELDS,
                _INT8(8, event_id),
                self._row_org,
                _INT8(8, micros),
                head.row,
                actor_row,
                head.row_product,
                _jsonb(context_text),
                _jsonb(container_text),
                _text(content),
                _jsonb(details_text),
                ip_row,
                agent_row,
                location_row,
                _text(message),
                b"\x00\x00\x00\x20",
                digest,
            )
        )
        # One row per hash, as the recorder: two terms that share a hash share a row.
        terms = tuple({*map(recorder._term_hash, terms)})
        return Seeded(event_id, row, digest, terms, occurred_at, micros // _HOUR, head.action_id)


# Writing.


def seed_chunk(organization: Organization, specs: Sequence[EventSpec], *, alone=False) -> int:
    """Records `specs` (PostgreSQL) in one transaction as record_specs would (rows,
    search terms, hourly counts); returns how many were recorded (the rest the plan
    refuses). `alone`: these are all the organization's events, and it has none yet."""
    builder = SeedBuilder(organization)
    with transaction.atomic():
        ids = iter(event_ids_draw(len(specs)))
        seeded: list[Seeded] = []
        for spec in specs:
            event = builder.build(spec, next(ids))  # refused: its id stays unused
            if not isinstance(event, str):
                seeded.append(event)
        _write(builder.org_id, seeded, alone)
    return len(seeded)


def _write(org_id: int, seeded: list[Seeded], alone: bool) -> None:
    if not seeded:
        return
    raw = connection.connection
    with raw.cursor() as cursor:
        columns = ", ".join(COPY_COLUMNS)
        with cursor.copy(
            f"COPY {Event._meta.db_table} ({columns}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.write(_SIGNATURE)
            for start in range(0, len(seeded), 1000):
                copy.write(b"".join([e.row for e in seeded[start : start + 1000]]))
            copy.write(_TRAILER)
    # The recorder's own term rows and writing (COPY), so the seed's terms are its.
    with connection.cursor() as cursor:
        events = [(e.occurred_at, e.event_id, e.terms) for e in seeded]
        terms_insert(cursor, term_rows(org_id, events))
    hours: Counter = Counter((e.hour, e.action_id) for e in seeded)
    _hourly_write(org_id, hours, alone)


_HOURLY_STAGE = "seed_hourly"  # a temporary table of the session


def _hourly_copy(cursor, table: str, rows: Iterable[bytes]) -> None:
    with cursor.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(_SIGNATURE)
        copy.write(b"".join(rows))
        copy.write(_TRAILER)


def _hourly_write(org_id: int, hours: Counter, alone: bool) -> None:
    """Adds (hour since 2000 UTC, action id) -> events to the hourly counts and totals
    (organization_id, hour, [action_id,] count), by binary COPY: into the tables
    themselves when these are all the organization's events (`alone`: no row of it
    can be there), else into a temporary table, then added from there as the recorder
    adds them (recording._hourly_counts_add, _hourly_totals_add), one statement per
    table. (An organization of 10,000 events over 180 days has nearly as many hours:
    added one by one, or as Python lists, or even from the temporary table, they cost
    more than the events.)"""
    org = _INT8(8, org_id)
    counts = [
        b"\x00\x04" + org + _INT8(8, hour * _HOUR) + _INT8(8, action_id) + _INT4(4, n)
        for (hour, action_id), n in sorted(hours.items())
    ]
    counts_table, totals_table = EventHourlyCount._meta.db_table, EventHourlyTotal._meta.db_table
    with connection.connection.cursor() as cursor:
        if alone:
            totals: Counter = Counter()
            for (hour, _), n in hours.items():
                totals[hour] += n
            _hourly_copy(
                cursor, f"{counts_table} (organization_id, hour, action_id, count)", counts
            )
            _hourly_copy(
                cursor,
                f"{totals_table} (organization_id, hour, count)",
                (
                    b"\x00\x03" + org + _INT8(8, hour * _HOUR) + _INT4(4, n)
                    for hour, n in sorted(totals.items())
                ),
            )
            return
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {_HOURLY_STAGE} (organization_id bigint, "
            "hour timestamptz, action_id bigint, count integer)"
        )
        cursor.execute(f"TRUNCATE {_HOURLY_STAGE}")
        _hourly_copy(cursor, _HOURLY_STAGE, counts)
        # Rows in key order, so that two sessions lock them in the same order.
        cursor.execute(
            f"INSERT INTO {counts_table} (organization_id, hour, action_id, count) "
            f"SELECT organization_id, hour, action_id, count FROM {_HOURLY_STAGE} "
            "ORDER BY 1, 2, 3 ON CONFLICT (organization_id, hour, action_id) "
            f"DO UPDATE SET count = {counts_table}.count + excluded.count"
        )
        cursor.execute(
            f"INSERT INTO {totals_table} (organization_id, hour, count) "
            f"SELECT organization_id, hour, sum(count) FROM {_HOURLY_STAGE} GROUP BY 1, 2 "
            "ORDER BY 1, 2 ON CONFLICT (organization_id, hour) "
            f"DO UPDATE SET count = {totals_table}.count + excluded.count"
        )


def seed_specs(
    organization: Organization, specs: Iterable[EventSpec], chunk: int, *, alone: bool = False
) -> int:
    """Records `specs` in transactions of `chunk` events; returns how many were recorded.
    `alone`: these are all the organization's events and it has none yet (seed_demo's
    organizations of one task), so that when they fit in one transaction their hourly
    counts are written rather than added to."""
    specs = iter(specs)
    batch, first, recorded = list(islice(specs, chunk)), True, 0
    while batch:
        following = list(islice(specs, chunk))
        recorded += seed_chunk(organization, batch, alone=alone and first and not following)
        batch, first = following, False
    return recorded
