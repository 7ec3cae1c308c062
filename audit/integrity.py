"""Tamper evidence on the server: the signing key, sealing each organization's new events
into signed, chained Merkle blocks, verifying them, inclusion proofs and signed
export manifests. The serialization, tree and checks themselves are audit.verify's,
which needs no Django, so the standalone verifier checks exactly what is sealed here.

Order: blocks follow recording order, the events stream's (txid, id) on PostgreSQL
(id on SQLite), never event time. On PostgreSQL only events whose transaction is older
than the oldest one still running in this database are sealed (the stream's horizon,
audit.selectors.stream_horizon): a transaction that commits late lands after every
sealed position, in the next block, never inside a sealed span.

Events recorded before migration 0014 have no stored hash; sealing computes it from the
row (the guard refuses the UPDATE a backfill would need, and rewriting every row of a
large table in one migration would lock it for minutes). They are as trustworthy as
the row was when first sealed; every event after that is hashed as it is recorded.
"""

import base64
import bisect
import ipaddress
import json
import logging
import multiprocessing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from django.conf import settings
from django.db import DatabaseError, connection, connections, transaction
from django.db.models import Q
from django.utils import timezone

from orgs.models import Organization
from orgs.sqlrows import ModelColumns, table

from . import integrity_scan, verify
from .models import Block, Event, IntegrityCheck, RetentionMark
from .recording import activity_keys_by_id
from .selectors import stream_horizon

logger = logging.getLogger(__name__)

_EPOCH_NAIVE = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)
_SEAL_LOCK = 0x5EA1 << 40  # PostgreSQL advisory lock key base, plus the organization id
Position = tuple[int, int]  # (txid or 0, id)


class SigningKeyMissing(Exception):
    """No signing key is configured (AUDIT_SIGNING_KEY / AUDIT_SIGNING_KEY_FILE)."""


# -- keys --------------------------------------------------------------------------------


def signing_key():
    """The Ed25519 private key blocks and manifests are signed with, or None."""
    return _signing_key(settings.AUDIT_SIGNING_KEY, settings.AUDIT_SIGNING_KEY_FILE)


@lru_cache(maxsize=4)
def _signing_key(value: str, path: str):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if not value and path and Path(path).is_file():
        value = Path(path).read_text()
    value = value.strip()
    if not value:
        return None
    if value.startswith("-----BEGIN"):
        key = load_pem_private_key(value.encode(), password=None)
    else:
        key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(value, validate=True))
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("The audit log signing key must be an Ed25519 key.")
    return key


def signing_key_required():
    key = signing_key()
    if key is None:
        raise SigningKeyMissing(
            "No audit log signing key: set AUDIT_SIGNING_KEY_FILE (`python manage.py "
            "audit_signing_key --create` writes one) or AUDIT_SIGNING_KEY."
        )
    return key


def signing_key_create(path: Path) -> str:
    """Writes a new private key (PEM, mode 0600) to `path`; returns its public key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=False)
    path.write_bytes(pem)
    return public_b64(key.public_key())


def public_b64(public_key) -> str:
    return base64.b64encode(verify.public_raw(public_key)).decode()


def public_keys() -> list[dict]:
    """The current public key (if any) and the retired ones: what a verifier trusts."""
    keys = []
    current = signing_key()
    if current is not None:
        keys.append(_key_json(current.public_key(), "current"))
    for text in settings.AUDIT_RETIRED_PUBLIC_KEYS:
        keys.append(_key_json(verify.public_key_load(text), "retired"))
    return keys


def _key_json(public_key, status: str) -> dict:
    return {
        "keyId": verify.key_id(verify.public_raw(public_key)),
        "algorithm": "Ed25519",
        "publicKey": public_b64(public_key),
        "status": status,
    }


def trusted_keys() -> dict:
    return {k["keyId"]: verify.public_key_load(k["publicKey"]) for k in public_keys()}


def _sign(message: bytes) -> tuple[str, str]:
    """(key id, base64 signature) of `message` with the signing key."""
    key = signing_key_required()
    kid = verify.key_id(verify.public_raw(key.public_key()))
    return kid, base64.b64encode(key.sign(message)).decode()


# -- events as stored --------------------------------------------------------------------

_COLUMNS = ("txid", "id", *(f if f != "action" else "action_id" for f in verify.EVENT_FIELDS))
_OCCURRED = _COLUMNS.index("occurred_at")
_IP = verify.EVENT_FIELDS.index("ip")


def _time_column(name: str) -> str:
    """On SQLite a time as its stored text: Django's converter would parse each into a
    datetime only for it to be formatted again."""
    return f"CAST({name} AS text)" if connection.vendor == "sqlite" else name


def _select() -> str:
    """The columns _Rows reads."""
    columns = [_time_column(c) if c.endswith("_at") else c for c in _COLUMNS]
    return f"SELECT {', '.join(columns)}, hash FROM {Event._meta.db_table}"


def _light() -> str:
    """What sealing reads of an event with a stored hash: (txid, id, occurred_at, hash);
    on PostgreSQL occurred_at comes as microseconds (the leaf's), read in binary
    (integrity_scan.fetch), not a datetime to convert nor EXTRACT's numeric."""
    if connection.vendor == "postgresql":
        return "txid, id, occurred_at, hash"
    return f"txid, id, {_time_column('occurred_at')}, hash"


def _sqlite_time(text: str) -> str:
    """Django's SQLite text "YYYY-MM-DD HH:MM:SS[.ffffff]" (UTC) in canonical form."""
    fraction = text[20:26].ljust(6, "0")
    return f"{text[:10]}T{text[11:19]}.{fraction}Z"


def _json_canonical(value) -> str:
    if isinstance(value, str):
        if value in ("[]", "{}"):
            return value
        value = json.loads(value)
    return verify.canonical_json(value)


@lru_cache(maxsize=16384)
def _ip_canonical(value) -> str | None:
    return str(ipaddress.ip_address(str(value))) if value else None


class _Rows:
    """Reads events as stored, with what their hashes need, per database."""

    def __init__(self):
        self.sqlite = connection.vendor == "sqlite"
        self.action_keys = activity_keys_by_id()

    def values(self, row: Sequence) -> list:
        """The canonical EVENT_FIELDS values of a row of _select()."""
        (_txid, _id, org, occurred, recorded, action, actor_type, actor_id, actor_name,
         actor_email, product_id, product_kind, site_name, context, container, content,
         details, ip, user_agent, country, region, city, message, _hash) = row  # fmt: skip
        time = _sqlite_time if self.sqlite else verify.canonical_time
        return [
            org,
            time(occurred),
            time(recorded),
            self.action_keys.get(action, str(action)),
            actor_type,
            actor_id,
            actor_name,
            actor_email,
            product_id,
            product_kind,
            site_name,
            _json_canonical(context),
            _json_canonical(container),
            content,
            _json_canonical(details),
            _ip_canonical(ip),
            user_agent,
            country,
            region,
            city,
            message,
        ]

    def micros(self, occurred) -> int:
        if isinstance(occurred, int):  # read as microseconds already (_light)
            return occurred
        if self.sqlite:  # naive UTC text
            return (datetime.fromisoformat(occurred) - _EPOCH_NAIVE) // _MICROSECOND
        return verify.time_micros(occurred)

    def leaf(self, row: Sequence) -> tuple[bytes, bytes]:
        """(leaf data from the row's fields, the hash recorded with it or b"").

        On SQLite the JSON columns hold the recorder's own text, which is canonical:
        hashed as stored first, and parsed and re-encoded only when that does not give
        the recorded hash (an older row, or a changed one). Parsing is most of the
        cost of verifying."""
        recorded = bytes(row[-1] or b"")
        digest = b""
        if recorded and self.sqlite:
            digest = verify.event_hash(self._stored_values(row))
        if digest != recorded or not digest:
            digest = verify.event_hash(self.values(row))
        return verify.leaf_data(self.micros(row[_OCCURRED]), digest), recorded

    def _stored_values(self, row: Sequence) -> list:
        """values() of a SQLite row with its JSON as stored, in as few steps as can be:
        the row holds EVENT_FIELDS' columns in order, between (txid, id) and the hash."""
        values = list(row[2:-1])
        values[1], values[2] = _sqlite_time(values[1]), _sqlite_time(values[2])
        values[3] = self.action_keys.get(values[3], str(values[3]))
        values[_IP] = _ip_canonical(values[_IP])
        return values

    def between(
        self,
        org_id: int,
        after: Position | None,
        upto: Position | None,
        *,
        limit: int = 0,
        columns: str = "",
        select: str = "",
        fetch: Callable[[str, list], list] | None = None,
    ) -> list:
        """The organization's events past `after` up to `upto` (inclusive) in recording
        order (the columns _Rows reads, or `columns`, or a whole `select` FROM the
        events table); on PostgreSQL only below the horizon when `upto` is None."""
        table = Event._meta.db_table
        if not select:
            select = f"SELECT {columns} FROM {table}" if columns else _select()
        sql, params = [f"{select} WHERE {table}.organization_id = %s"], [org_id]
        if self.sqlite:
            if after is not None:
                sql.append(f"AND {table}.id > %s")
                params.append(after[1])
            if upto is not None:
                sql.append(f"AND {table}.id <= %s")
                params.append(upto[1])
            sql.append(f"ORDER BY {table}.id")
        else:
            key = f"({table}.txid, {table}.id)"
            if after is not None:
                sql.append(f"AND {key} > (%s, %s)")
                params += after
            if upto is not None:
                sql.append(f"AND {key} <= (%s, %s)")
                params += upto
            else:  # below the stream's horizon (transactions of this database only)
                sql.append(f"AND {table}.txid < %s")
                params.append(stream_horizon())
            sql.append(f"ORDER BY {table}.txid, {table}.id")
        if limit:
            sql.append(f"LIMIT {int(limit)}")
        if fetch is not None:
            return fetch(" ".join(sql), params)
        with connection.cursor() as cursor:
            cursor.execute(" ".join(sql), params)
            return cursor.fetchall()


def _position(block: Block, which: str) -> Position:
    return (getattr(block, f"{which}_txid") or 0, getattr(block, f"{which}_event_id"))


# -- sealing -----------------------------------------------------------------------------


def block_header(block: Block) -> dict:
    """A block as audit.verify reads it (and the digests API serves it)."""
    return {
        "version": verify.BLOCK_VERSION,
        "organization": block.organization_id,
        "sequence": block.sequence,
        "first": [block.first_txid, block.first_event_id],
        "last": [block.last_txid, block.last_event_id],
        "event_count": block.event_count,
        "total_events": block.total_events,
        "merkle_root": block.merkle_root,
        "previous_hash": block.previous_hash,
        "sealed_at": verify.canonical_time(block.sealed_at),
        "key_id": block.key_id,
        "hash": block.block_hash,
        "signature": block.signature,
    }


def _lock(org_id: int) -> None:
    """Serializes sealing per organization: PostgreSQL with an advisory lock held to the
    end of the transaction; SQLite's transactions begin IMMEDIATE (one writer)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_SEAL_LOCK + org_id])


def seal_org(org_id: int, *, block_events: int | None = None) -> int:
    """Seals everything the organization recorded so far (below the horizon) into new
    blocks of at most AUDIT_SEAL_BLOCK_EVENTS events; returns the number of events
    sealed. Idempotent, and serialized per organization: two sealers at once seal
    each event once."""
    block_events = block_events or settings.AUDIT_SEAL_BLOCK_EVENTS
    signing_key_required()
    rows_of = _Rows()
    if not _anything_new(org_id, rows_of):
        return 0
    sealed = 0
    while True:
        with transaction.atomic():
            _lock(org_id)
            last = (
                Block.objects.filter(organization_id=org_id)
                .defer("leaves")
                .order_by("-sequence")
                .first()
            )
            after = _position(last, "last") if last else None
            rows = rows_of.between(
                org_id,
                after,
                None,
                limit=block_events,
                columns=_light(),
                fetch=integrity_scan.fetch,
            )
            if not rows:
                return sealed
            _block_create(org_id, last, rows, rows_of)
        sealed += len(rows)
        if len(rows) < block_events:
            return sealed


def _anything_new(org_id: int, rows_of: _Rows) -> bool:
    """Whether the organization has events past its last block: read without a write
    transaction, so that the sealing loop's rounds over idle organizations take no
    lock (on SQLite, the one writer's)."""
    last = (
        Block.objects.filter(organization_id=org_id)
        .order_by("-sequence")
        .values_list("last_txid", "last_event_id")
        .first()
    )
    after = (last[0] or 0, last[1]) if last else None
    return bool(rows_of.between(org_id, after, None, limit=1, columns="1"))


def _unhashed(org_id: int, ids: list[int], rows_of: _Rows) -> dict[int, bytes]:
    """{id: hash from the row} of events recorded before hashes were (see the module
    docstring)."""
    hashes = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ", ".join(["%s"] * len(chunk))
        with connection.cursor() as cursor:
            cursor.execute(
                f"{_select()} WHERE organization_id = %s AND id IN ({marks})", [org_id, *chunk]
            )
            for row in cursor.fetchall():
                hashes[row[1]] = verify.event_hash(rows_of.values(row))
    return hashes


def _block_create(org_id: int, last: Block | None, rows: list, rows_of: _Rows) -> Block:
    unhashed = _unhashed(org_id, [row[1] for row in rows if row[3] is None], rows_of)
    micros = rows_of.micros
    leaves = [
        verify.leaf_data(micros(occurred), bytes(digest) if digest is not None else unhashed[id_])
        for _txid, id_, occurred, digest in rows
    ]
    block = Block(
        organization_id=org_id,
        sequence=last.sequence + 1 if last else 1,
        first_txid=rows[0][0],
        first_event_id=rows[0][1],
        last_txid=rows[-1][0],
        last_event_id=rows[-1][1],
        event_count=len(rows),
        total_events=(last.total_events if last else 0) + len(rows),
        merkle_root=verify.merkle_root(leaves).hex(),
        previous_hash=last.block_hash if last else verify.ZERO_HASH,
        sealed_at=timezone.now(),
        leaves=b"".join(leaves),
    )
    block.key_id = verify.key_id(verify.public_raw(signing_key_required().public_key()))
    block.block_hash = verify.block_hash(block_header(block))
    block.key_id, block.signature = _sign(bytes.fromhex(block.block_hash))
    block.save()
    return block


def seal_all(*, block_events: int | None = None) -> dict[int, int]:
    """Seals every organization that has unsealed events: {org id: events sealed}."""
    return {
        org_id: n
        for org_id in orgs_with_new_events()
        if (n := seal_org(org_id, block_events=block_events))
    }


def orgs_with_new_events() -> list[int]:
    """The ids of the organizations with events past their last block (on PostgreSQL,
    below the horizon), in order, found by one query: the sealing loop asks every
    round, and asking each organization in turn (two queries each) kept it busy
    without a pause at 1,000 organizations, most of them idle: about 0.8 of a core
    between the worker and the database, on a machine serving pages. Here each
    organization costs an index probe per partition inside the database (about 30 ms
    a round for 1,000 organizations over 10 partitions)."""
    events, blocks, orgs = table(Event), table(Block), table(Organization)
    last = (
        f"SELECT b.last_txid, b.last_event_id FROM {blocks} b"
        " WHERE b.organization_id = o.id ORDER BY b.sequence DESC LIMIT 1"
    )
    if connection.vendor == "postgresql":
        # An event without a block before it: any position is past (-1, -1).
        sql = (
            f"SELECT o.id FROM {orgs} o LEFT JOIN LATERAL ({last}) b ON true"
            f" WHERE EXISTS (SELECT 1 FROM {events} e WHERE e.organization_id = o.id"
            " AND (e.txid, e.id) > (coalesce(b.last_txid, -1), coalesce(b.last_event_id, -1))"
            " AND e.txid < %s) ORDER BY o.id"
        )
        params = [stream_horizon()]
    else:  # ids are in commit order: past the last block's last id
        last_id = last.replace("b.last_txid, ", "")
        sql = (
            f"SELECT o.id FROM {orgs} o WHERE EXISTS (SELECT 1 FROM {events} e"
            f" WHERE e.organization_id = o.id AND e.id > coalesce(({last_id}), 0))"
            " ORDER BY o.id"
        )
        params = []
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [org_id for (org_id,) in cursor.fetchall()]


# -- verification ------------------------------------------------------------------------


@dataclass
class Outcome:
    ok: bool = True
    blocks: int = 0
    events: int = 0
    sealed_until: datetime | None = None
    problem: str = ""
    block: int | None = None  # the sequence of the first bad block
    event: int | None = None  # the id of the first bad event, when one is named
    retention_note: str = ""
    events_checked: int = 0
    blocks_reread: int = 0  # blocks whose events the fast read could not confirm


def _retention(org_id: int, now: datetime) -> tuple[datetime | None, str]:
    """(the time before which a sealed event may be gone by retention, the note).
    A mark can excuse only what the retention job could remove: nothing younger than
    AUDIT_MIN_RETENTION_DAYS before its run, nor a run in the future."""
    mark = (
        RetentionMark.objects.filter(organization_id=org_id, purged_at__lte=now)
        .order_by("-cutoff")
        .first()
    )
    if mark is None:
        return None, ""
    cutoff = min(mark.cutoff, mark.purged_at - timedelta(days=settings.AUDIT_MIN_RETENTION_DAYS))
    note = f"Events before {cutoff:%d %b %Y} removed by retention on {mark.purged_at:%d %b %Y}."
    return cutoff, note


def verify_org(
    organization: Organization,
    *,
    since: datetime | None = None,
    keys: dict | None = None,
    processes: int | None = None,
) -> Outcome:
    """Checks the organization's chain of blocks (hashes, signatures, links) from the
    first, and the events of every block sealed at or after `since` (all by default)
    against their leaves. Names the first bad block and, where one is, event: the same
    answer whether the events are checked here or split between `processes` (by
    default AUDIT_VERIFY_PROCESSES when there are many events, see spans_check)."""
    keys = trusted_keys() if keys is None else keys
    cutoff, note = _retention(organization.pk, timezone.now())
    retained_before = verify.time_micros(cutoff) if cutoff else None
    outcome = Outcome(retention_note=note)
    # The headers first, in one pass (cheap); then the events of the blocks that chain,
    # which is most of the work and what may be split between processes. A block's
    # header is checked before its events, so a bad header at block n wins over bad
    # events in blocks n and after, as it did when both were checked block by block.
    passed: list[Block] = []
    spans: list[Span] = []
    broken: tuple[int, str] | None = None
    previous: dict | None = None
    previous_last: Position | None = None
    blocks = Block.objects.filter(organization=organization).defer("leaves").order_by("sequence")
    for block in blocks.iterator(chunk_size=500):
        header = block_header(block)
        try:
            verify.block_check(header, keys, previous)
        except verify.VerifyError as exc:
            broken = (block.sequence, str(exc))
            break
        if since is None or block.sealed_at >= since:
            last = _position(block, "last")
            spans.append(
                Span(block.sequence, block.event_count, block.merkle_root, previous_last, last)
            )
        passed.append(block)
        previous, previous_last = header, _position(block, "last")
    checked, failure = spans_check(organization.pk, spans, retained_before, processes)
    outcome.blocks_reread = sum(1 for n in checked.values() if n < 0)
    for block in passed:
        if failure is not None and failure[0] == block.sequence:
            return _failed(outcome, *failure)
        outcome.events_checked += abs(checked.get(block.sequence, 0))
        outcome.blocks += 1
        outcome.events = block.total_events
        outcome.sealed_until = block.sealed_at
    if broken is not None:
        return _failed(outcome, *broken, None)
    return outcome


def _failed(outcome: Outcome, sequence: int, problem: str, event_id: int | None) -> Outcome:
    outcome.ok, outcome.block, outcome.event, outcome.problem = False, sequence, event_id, problem
    return outcome


class Span(NamedTuple):
    """What checking a block's events needs of the block; its span is (after, last]."""

    sequence: int
    event_count: int
    merkle_root: str
    after: Position | None
    last: Position


Failure = tuple[int, str, int | None]  # (block sequence, problem, event id or None)

# Below this many events a check runs in one process: starting others costs more.
_PARALLEL_MIN_EVENTS = 100_000


def spans_check(
    org_id: int, spans: list[Span], retained_before: int | None, processes: int | None
) -> tuple[dict[int, int], Failure | None]:
    """The events of each span against its block's leaves: ({sequence: events checked,
    negative when the fast read could not confirm the block}, the first failure in
    chain order or None). With `processes` (default AUDIT_VERIFY_PROCESSES from
    _PARALLEL_MIN_EVENTS events), in contiguous runs of blocks split between as many
    forked processes, each on its own database connection (when _can_fork; else the
    runs one after the other, here)."""
    if processes is None:
        events = sum(span.event_count for span in spans)
        processes = settings.AUDIT_VERIFY_PROCESSES if events >= _PARALLEL_MIN_EVENTS else 1
    processes = min(processes, len(spans))
    if processes <= 1:
        return _spans_run(org_id, spans, retained_before)
    runs = _split(spans, processes * 4)  # smaller runs even out the processes' loads
    jobs = [(org_id, run, retained_before) for run in runs]
    if _can_fork():
        with multiprocessing.get_context("fork").Pool(processes, _worker_start) as pool:
            results = pool.starmap(_spans_run_worker, jobs)
            pool.close()
            pool.join()
    else:  # the same runs, one after the other
        results = [_spans_run(*job) for job in jobs]
    checked: dict[int, int] = {}
    for counts, failure in results:
        checked.update(counts)
        if failure is not None:  # runs are in chain order: the first failure is the earliest
            return checked, failure
    return checked, None


def _split(spans: list[Span], parts: int) -> list[list[Span]]:
    size = -(-len(spans) // parts)
    return [spans[i : i + size] for i in range(0, len(spans), size)]


def _can_fork() -> bool:
    """Whether forked processes would read what this one does: not inside a transaction
    (they would not see its writes), not an in-memory SQLite database (theirs would be
    empty), not a daemonic process (a django-q2 worker may not have children), and a
    platform that forks."""
    return (
        not connection.in_atomic_block
        and not (connection.vendor == "sqlite" and connection.is_in_memory_db())
        and not multiprocessing.current_process().daemon
        and "fork" in multiprocessing.get_all_start_methods()
    )


_inherited: list = []


def _worker_start() -> None:
    """In a forked process: the parent's database connections are set aside, never used
    nor closed here (closing one would end the parent's session); it opens its own."""
    for conn in connections.all(initialized_only=True):
        _inherited.append(conn.connection)
        conn.connection = None


def _spans_run_worker(org_id: int, spans: list[Span], retained_before: int | None):
    try:
        return _spans_run(org_id, spans, retained_before)
    finally:
        connections.close_all()


def _spans_run(
    org_id: int, spans: list[Span], retained_before: int | None
) -> tuple[dict[int, int], Failure | None]:
    """spans_check, here: each block by the fast read (integrity_scan), and by the
    exact one (_Rows) when the fast read cannot confirm it."""
    rows_of, leaves_of = _Rows(), integrity_scan.Leaves()
    fast = integrity_scan.select()
    checked: dict[int, int] = {}
    for span in spans:
        blob = (
            Block.objects.filter(organization_id=org_id, sequence=span.sequence)
            .values_list("leaves", flat=True)
            .get()
        )
        leaves = verify.leaves_split(bytes(blob))
        header = span._asdict()
        try:
            n = _confirmed(org_id, span, header, leaves, retained_before, rows_of, leaves_of, fast)
            if n is None:
                rows = rows_of.between(org_id, span.after, span.last)
                events = ((row[1], *rows_of.leaf(row)) for row in rows)
                n = -verify.block_events_check(header, leaves, events, retained_before)
            checked[span.sequence] = n
        except verify.EventError as exc:
            return checked, (span.sequence, str(exc), exc.event_id)
        except verify.VerifyError as exc:
            return checked, (span.sequence, str(exc), None)
    return checked, None


def _confirmed(
    org_id: int,
    span: Span,
    header: dict,
    leaves: list[bytes],
    retained_before: int | None,
    rows_of: _Rows,
    leaves_of: integrity_scan.Leaves,
    select: str,
) -> int | None:
    """How many of the span's events the fast read confirmed, or None: it could not (a
    row that does not hash to its recorded hash, a value it cannot read, a check that
    fails), and the exact reading decides and names what broke."""
    try:
        # LIMIT: one more than the block holds, so an inserted row still shows (and
        # sends the block to the exact reading). With it PostgreSQL walks each month's
        # (organization, txid, id) index in order rather than scanning and sorting.
        rows = rows_of.between(
            org_id,
            span.after,
            span.last,
            limit=len(leaves) + 1,
            select=select,
            fetch=integrity_scan.fetch,
        )
        events = leaves_of.leaves(rows)
    except (DatabaseError, ValueError, TypeError, OverflowError, UnicodeError):
        # A value changed into something the fast read cannot take (say a BLOB where
        # SQLite's json_array wants text): the exact reading says what it is.
        return None
    if None in events:
        return None
    try:
        return verify.block_events_check(header, leaves, events, retained_before)
    except verify.VerifyError:
        return None


def verify_and_record(
    organization: Organization, *, since: datetime | None = None, notify: bool = False
) -> tuple[Outcome, IntegrityCheck]:
    """verify_org, kept as the organization's latest check (the Integrity panel). With
    `notify` (the daily job): recorded as an event, and a failure emailed to the admins."""
    outcome = verify_org(organization, since=since)
    check = IntegrityCheck.objects.create(
        organization=organization,
        checked_at=timezone.now(),
        ok=outcome.ok,
        blocks=outcome.blocks,
        events=outcome.events,
        sealed_until=outcome.sealed_until,
        problem=outcome.problem,
        retention_note=outcome.retention_note,
    )
    if notify:
        _notify(organization, outcome)
    return outcome, check


def _notify(organization: Organization, outcome: Outcome) -> None:
    from django.core.mail import send_mail

    from orgs.models import Membership

    from .services import SYSTEM, event_record

    if outcome.ok:
        if outcome.blocks:
            event_record(
                organization=organization,
                action="audit_log_verified",
                actor=SYSTEM,
                details={"events": f"{outcome.events:,}", "blocks": f"{outcome.blocks:,}"},
            )
        return
    event_record(
        organization=organization,
        action="audit_log_verification_failed",
        actor=SYSTEM,
        details={"problem": outcome.problem, "block": outcome.block, "event": outcome.event},
    )
    admins = Membership.objects.filter(
        organization=organization, role=Membership.Role.ADMIN, user__is_active=True
    ).values_list("user__email", flat=True)
    send_mail(
        f"Audit log integrity check failed for {organization.name}",
        f"The daily check of {organization.name}'s audit log found it altered:\n\n"
        f"{outcome.problem}\n\nSee the Integrity panel: "
        f"{settings.SITE_URL}/o/{organization.pk}/audit-log/\n",
        None,
        list(admins),
        fail_silently=True,
    )


def latest_check(organization: Organization) -> IntegrityCheck | None:
    return IntegrityCheck.objects.filter(organization=organization).order_by("-checked_at").first()


@dataclass
class Status:
    """What the Integrity panel says: state "verified", "failed" or "pending"."""

    state: str
    headline: str
    detail: str = ""


def _many(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _utc(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%d %b %Y, %H:%M} UTC"


_CHECK = ModelColumns(IntegrityCheck, "c")
_BLOCK = ModelColumns(
    Block, "b", tuple(f.attname for f in Block._meta.concrete_fields if f.name != "leaves")
)


def _latest_check_and_block(organization: Organization) -> tuple:
    """latest_check() and the last block (without its leaves), in one written-out
    SELECT (orgs.sqlrows): the audit log page shows them on every request. Each is
    NULLs when there is none."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT c.*, b.* FROM (SELECT 1) AS one"
            f" LEFT JOIN (SELECT {_CHECK.sql()} FROM {table(IntegrityCheck)} c"
            " WHERE c.organization_id = %s ORDER BY c.checked_at DESC LIMIT 1) c ON 1 = 1"
            f" LEFT JOIN (SELECT {_BLOCK.sql()} FROM {table(Block)} b"
            " WHERE b.organization_id = %s ORDER BY b.sequence DESC LIMIT 1) b ON 1 = 1",
            [organization.pk, organization.pk],
        )
        row = cursor.fetchone()
    check, block = row[: len(_CHECK)], row[len(_CHECK) :]
    return (
        _CHECK.instance(check) if check[0] is not None else None,
        _BLOCK.instance(block) if block[0] is not None else None,
    )


def integrity_status(organization: Organization) -> Status:
    check, last = _latest_check_and_block(organization)
    if check is not None and not check.ok:
        return Status(
            "failed",
            "Integrity check failed: the audit log was altered",
            f"{check.problem} (checked {_utc(check.checked_at)})",
        )
    if check is not None and check.blocks:
        detail = f"Checked {_utc(check.checked_at)}."
        if last is not None and last.total_events > check.events:
            detail += (
                f" {_many(last.total_events - check.events, 'event')} sealed since then "
                "will be checked at the next daily verification."
            )
        if check.retention_note:
            detail += f" {check.retention_note}"
        return Status(
            "verified",
            f"Sealed and verified up to {_utc(check.sealed_until)} — "
            f"{_many(check.events, 'event')} in {_many(check.blocks, 'block')}",
            detail,
        )
    if signing_key() is None:
        return Status("pending", "Sealing is not configured", "Set AUDIT_SIGNING_KEY_FILE.")
    if last is None:
        return Status(
            "pending",
            "Nothing sealed yet",
            "Events are sealed into signed blocks within seconds of being recorded.",
        )
    return Status(
        "pending",
        f"Sealed up to {_utc(last.sealed_at)} — {_many(last.total_events, 'event')} in "
        f"{_many(last.sequence, 'block')}, not verified yet",
        "The log is verified daily at 03:00 UTC (or run manage.py audit_verify).",
    )


# -- proofs, digests and manifests -------------------------------------------------------


def _event_row(organization: Organization, event_id: int) -> list | None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"{_select()} WHERE organization_id = %s AND id = %s", [organization.pk, event_id]
        )
        return cursor.fetchone()


def block_of(organization: Organization, position: Position) -> Block | None:
    """The block whose span holds `position`, if it is sealed."""
    blocks = Block.objects.filter(organization=organization)
    if connection.vendor == "sqlite":
        blocks = blocks.filter(last_event_id__gte=position[1])
    else:
        txid, event_id = position
        blocks = blocks.filter(
            Q(last_txid__gt=txid) | Q(last_txid=txid, last_event_id__gte=event_id)
        )
    return blocks.order_by("sequence").first()


def event_proof(organization: Organization, event: Event) -> tuple[dict | None, str]:
    """The inclusion proof of an event, or (None, why there is none)."""
    row = _event_row(organization, event.pk)
    block = block_of(organization, (row[0] or 0, row[1])) if row else None
    if block is None:
        return None, "This event is not sealed yet: sealing runs every few seconds."
    rows_of = _Rows()
    leaf, _recorded = rows_of.leaf(row)
    leaves = verify.leaves_split(bytes(block.leaves))
    places = [i for i, sealed in enumerate(leaves) if sealed == leaf]
    if len(places) == 1:
        index = places[0]
    else:
        # Identical events (same fields, same times) have identical leaves: the event's
        # place tells them apart. None: changed, moved or inserted, and the proof pairs
        # the event as it is now with the leaf sealed at its place, so that checking it
        # fails and says why.
        index = _rank(organization, block, row[1], rows_of)
        if index >= len(leaves):
            return None, f"This event is not one that block {block.sequence} sealed."
    proof = {
        "event_id": str(event.pk),
        "event": _event_fields(rows_of.values(row)),
        "leaf": {"event_hash": leaves[index][8:].hex(), "data": leaves[index].hex()},
        "leaf_index": index,
        "audit_path": [h.hex() for h in verify.audit_path(leaves, index)],
        "block": block_header(block),
    }
    return proof, ""


def _span_rows(organization: Organization, block: Block, rows_of: _Rows) -> list:
    """The events now stored in the block's span, in recording order."""
    before = (
        Block.objects.filter(organization=organization, sequence=block.sequence - 1)
        .defer("leaves")
        .first()
    )
    after = _position(before, "last") if before else None
    return rows_of.between(organization.pk, after, _position(block, "last"))


def _rank(organization: Organization, block: Block, event_id: int, rows_of: _Rows) -> int:
    """The place of an event among those stored in the block's span."""
    return [row[1] for row in _span_rows(organization, block, rows_of)].index(event_id)


def block_contents(organization: Organization, sequence: int) -> dict | None:
    """A block, its leaves and every event now stored in its span, in recording order
    (`python -m audit.verify block` checks it offline)."""
    block = Block.objects.filter(organization=organization, sequence=sequence).first()
    if block is None:
        return None
    rows_of = _Rows()
    events = []
    for row in _span_rows(organization, block, rows_of):
        fields = _event_fields(rows_of.values(row))
        events.append({"id": row[1], "event": fields, "hash": bytes(row[-1] or b"").hex()})
    cutoff, _note = _retention(organization.pk, timezone.now())
    return {
        "block": block_header(block),
        "leaves": [leaf.hex() for leaf in verify.leaves_split(bytes(block.leaves))],
        "events": events,
        "retained_before": verify.canonical_time(cutoff) if cutoff else None,
    }


def _event_fields(values: list) -> dict:
    """Canonical values as an event object: JSON fields as JSON again."""
    fields = dict(zip(verify.EVENT_FIELDS, values, strict=True))
    for name in ("context", "container", "details"):
        fields[name] = json.loads(fields[name])
    return fields


def blocks_after(organization: Organization, sequence: int, limit: int) -> list[Block]:
    """Up to `limit` of the organization's blocks after `sequence`, in chain order."""
    return list(
        Block.objects.filter(organization=organization, sequence__gt=sequence)
        .defer("leaves")
        .order_by("sequence")[:limit]
    )


def blocks_for_events(organization: Organization, event_ids: Iterable[int]) -> tuple[list, int]:
    """([{sequence, hash}] of the blocks holding the events, how many are not sealed)."""
    ids = list(event_ids)
    positions = []
    for start in range(0, len(ids), 5000):
        positions += Event.objects.filter(
            organization=organization, pk__in=ids[start : start + 5000]
        ).values_list("txid", "id")
    headers = list(
        Block.objects.filter(organization=organization)
        .order_by("sequence")
        .values_list("sequence", "block_hash", "last_txid", "last_event_id")
    )
    lasts = [(txid or 0, event_id) for _s, _h, txid, event_id in headers]
    used, unsealed = set(), 0
    for txid, event_id in positions:
        at = bisect.bisect_left(lasts, (txid or 0, event_id))
        if at < len(headers):
            used.add(at)
        else:
            unsealed += 1
    return [{"sequence": headers[i][0], "hash": headers[i][1]} for i in sorted(used)], unsealed


def manifest_make(
    *,
    organization: Organization,
    file_name: str,
    sha256: str,
    rows: int,
    filters: dict,
    exported_at: datetime,
    event_ids: Iterable[int],
) -> dict:
    """The signed manifest of an export file (checked by `python -m audit.verify export`)."""
    blocks, unsealed = blocks_for_events(organization, event_ids)
    manifest = {
        "version": verify.MANIFEST_VERSION,
        "organization": organization.pk,
        "file": file_name,
        "sha256": sha256,
        "rows": rows,
        "filters": filters,
        "exported_at": verify.canonical_time(exported_at),
        "blocks": blocks,
        "unsealed_events": unsealed,
    }
    key = signing_key_required()
    manifest["key_id"] = verify.key_id(verify.public_raw(key.public_key()))
    manifest["signature"] = base64.b64encode(key.sign(verify.manifest_body(manifest))).decode()
    return manifest
