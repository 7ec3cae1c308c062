"""Verification's fast read of a block's events. Most of the cost of verifying was
turning each column into a Python value and formatting it again for the canonical
serialization (audit.verify.event_canonical). Here SQLite writes each event's canonical
text itself (json_array), and Python only makes it ASCII and hashes it; PostgreSQL's
rows are read in binary with times as microseconds and JSON as text (formatted and
canonicalized in Python, with caches: many events share a day, a container, details).

It can only confirm. A block's events pass here only if every one hashes to the hash
recorded with it and the block's leaves check (audit.verify.block_events_check); any
other answer, even from a harmless difference in how the database spells a value, sends
the block to the exact reading (audit.integrity._Rows), which decides and names what
broke. A pass is sound: the text built here is a faithful JSON encoding of the row as
it is now, so its hash matching the one sealed in the block means the row holds what
was sealed.
"""

import hashlib
import json
import re
import struct
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cache

import psycopg
from django.db import connection
from psycopg.adapt import Loader
from psycopg.pq import Format

from . import verify
from .models import Activity, Event
from .recording import activity_keys_by_id

_ESCAPED = re.compile(r"[^\x00-\x7e]")  # json.dumps escapes DEL too; SQLite does not
_JSON_STRING = json.encoder.encode_basestring_ascii  # a str as JSON text, ASCII only
_CANON_LIMIT = 50_000  # entries of the PostgreSQL JSON cache before it is emptied
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _escape(match: re.Match) -> str:
    """One non-ASCII character as json.dumps(ensure_ascii=True) writes it."""
    return _JSON_STRING(match.group())[1:-1]


def ascii_json(text: str) -> str:
    """SQLite's JSON text with the characters it leaves as they are and the canonical
    form escapes (non-ASCII and DEL, which can only stand inside strings) escaped."""
    return _ESCAPED.sub(_escape, text)


def _sqlite_time(column: str) -> str:
    """SQL of audit.integrity._sqlite_time: Django's stored text in canonical form."""
    return (
        f"substr({column}, 1, 10) || 'T' || substr({column}, 12, 8) || '.' || "
        f"substr(substr({column}, 21, 6) || '000000', 1, 6) || 'Z'"
    )


def select() -> str:
    """SELECT ... FROM the events of what Leaves reads, for the connection's database;
    the caller adds WHERE and ORDER BY (columns named with the table's name).

    SQLite: (id, occurred_at in microseconds, the canonical text, hash): SQLite's
    json_array writes JSON as the canonical form does, bar non-ASCII characters.
    PostgreSQL: (id, EVENT_FIELDS' columns, hash), read in binary (see Leaves.fetch):
    building the text there costs more than in Python (to_char and to_json per value),
    and jsonb does not keep the recorded text anyway."""
    e, activity = Event._meta.db_table, Activity._meta.db_table
    if connection.vendor == "sqlite":
        micros = (
            f"CAST(strftime('%%s', substr({e}.occurred_at, 1, 19)) AS INTEGER) * 1000000 + "
            f"CAST(substr(substr({e}.occurred_at, 21, 6) || '000000', 1, 6) AS INTEGER)"
        )
        columns = []
        for name in verify.EVENT_FIELDS:
            if name == "action":
                columns.append("a.key")
            elif name.endswith("_at"):
                columns.append(_sqlite_time(f"{e}.{name}"))
            else:
                columns.append(f"{e}.{name}")
        return (
            f"SELECT {e}.id, {micros}, json_array('{verify.EVENT_VERSION}', {', '.join(columns)}), "
            f"{e}.hash FROM {e} LEFT JOIN {activity} a ON a.id = {e}.action_id"
        )
    columns = [
        f"host({e}.ip)" if name == "ip" else f"{e}.{name if name != 'action' else 'action_id'}"
        for name in verify.EVENT_FIELDS
    ]
    return f"SELECT {e}.id, {', '.join(columns)}, {e}.hash FROM {e}"


_PG_EPOCH = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970
_DAY = 86_400_000_000
_INT8 = struct.Struct(">q")


class _Micros(Loader):
    """timestamptz in binary as microseconds since 1970 (no datetime made)."""

    format = Format.BINARY

    def load(self, data) -> int:
        return _INT8.unpack(data)[0] + _PG_EPOCH


class _JsonbText(Loader):
    """jsonb in binary as its text (a version byte, then the text), not parsed."""

    format = Format.BINARY

    def load(self, data) -> bytes:
        return bytes(data[1:])


def fetch(sql: str, params: Sequence) -> list:
    """The rows of `sql`; on PostgreSQL read in binary, with times as microseconds since
    1970 and jsonb as its text."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    connection.ensure_connection()
    # A cursor binding its parameters on the server, which binary results need (Django's
    # binds them on the client).
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.adapters.register_loader("timestamptz", _Micros)
        cursor.adapters.register_loader("jsonb", _JsonbText)
        cursor.execute(sql, params, binary=True)
        return cursor.fetchall()


@cache
def _clock() -> tuple[str, ...]:
    """ "HH:MM:SS" of every second of a day, by the second."""
    return tuple(
        f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)
    )


class Leaves:
    """The leaves of select()'s rows, read with fetch."""

    def __init__(self):
        self.sqlite = connection.vendor == "sqlite"
        self.action_keys = activity_keys_by_id()
        self._canon: dict[bytes, str] = {}
        self._days: dict[int, str] = {}

    def _json(self, text: bytes) -> str:
        """A jsonb column's text as canonical JSON text."""
        if len(self._canon) > _CANON_LIMIT:
            self._canon = {}
        done = self._canon[text] = verify.canonical_json(json.loads(text))
        return done

    def _second(self, second: int) -> str:
        """Seconds since 1970 as the start of canonical_time's text, to the ".": the
        fraction follows."""
        day, rest = divmod(second, 86_400)
        prefix = self._days.get(day)
        if prefix is None:
            prefix = self._days[day] = f"{_EPOCH + timedelta(days=day):%Y-%m-%d}T"
        return f"{prefix}{_clock()[rest]}."

    def leaves(self, rows: Sequence[Sequence]) -> list[tuple[int, bytes, bytes] | None]:
        """Each row of select() as (event id, leaf data, recorded hash), or None where
        the row's text does not hash to its recorded hash. One loop, every lookup
        hoisted out of it: this is the cost of verifying."""
        out: list[tuple[int, bytes, bytes] | None] = []
        append, sha256, leaf_data = out.append, hashlib.sha256, verify.leaf_data
        if self.sqlite:
            for id_, micros, text, recorded in rows:
                if not text.isascii() or "\x7f" in text:
                    text = ascii_json(text)
                digest = sha256(text.encode("ascii")).digest()
                ok = recorded is not None and digest == recorded
                append((id_, leaf_data(micros, digest), digest) if ok else None)
            return out
        canon_get, canon, second = self._canon.get, self._json, self._second
        keys, array, version = self.action_keys.get, verify.canonical_array, verify.EVENT_VERSION
        last_recorded, recorded_text = None, ""
        for row in rows:
            (id_, org, occurred, recorded_at, action, actor_type, actor_id, actor_name,
             actor_email, product_id, product_kind, site_name, context, container, content,
             details, ip, user_agent, country, region, city, message, recorded) = row  # fmt: skip
            seconds, fraction = divmod(occurred, 1_000_000)
            occurred_text = f"{second(seconds)}{fraction:06d}Z"
            if recorded_at != last_recorded:  # a batch's events share recorded_at
                seconds, fraction = divmod(recorded_at, 1_000_000)
                last_recorded, recorded_text = recorded_at, f"{second(seconds)}{fraction:06d}Z"
            text = array(
                [version, org, occurred_text, recorded_text, keys(action), actor_type,
                 actor_id, actor_name, actor_email, product_id, product_kind, site_name,
                 canon_get(context) or canon(context), canon_get(container) or canon(container),
                 content, canon_get(details) or canon(details), ip, user_agent, country,
                 region, city, message]
            )  # fmt: skip
            digest = sha256(text.encode("ascii")).digest()
            ok = recorded is not None and digest == recorded
            append((id_, leaf_data(occurred, digest), digest) if ok else None)
        return out
