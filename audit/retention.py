"""Retention: the job that removes events past their plan's retention, and the
database guard that refuses every other change to the events and their search terms.

The guard (installed by migration 0003, see `append_only_install`):

- PostgreSQL: a row trigger refuses UPDATE always; statement triggers refuse DELETE and
  TRUNCATE unless the transaction-local setting `auditlog.purge` is 'on'.
  Only `purge_allowed()` sets it, with `set_config(..., true)` (SET LOCAL).
- SQLite has no session settings: the triggers refuse UPDATE always and DELETE unless
  the table `audit_purgeguard` has a row. `purge_allowed()` inserts that row inside its
  transaction and deletes it before commit; other connections never see an uncommitted
  row, so the permission is transaction-local in effect. A BEFORE INSERT trigger also
  refuses `INSERT OR REPLACE` over an existing event (SQLite's REPLACE deletes without
  firing delete triggers).

Both refuse with an IntegrityError. The guard stops mistakes and code that bypasses the
ORM; it is not a boundary against someone who holds the database's owner role or file.
"""

import importlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from orgs.models import Organization

from .models import Event, EventHourlyCount, EventHourlyTotal, EventTerm
from .services import SYSTEM, Actor, _terms, event_record

logger = logging.getLogger(__name__)

GUARDED_TABLES = ("audit_event", "audit_eventterm")
PURGE_SETTING = "auditlog.purge"
SQLITE_GUARD_TABLE = "audit_purgeguard"

_PG_REFUSE = """
CREATE OR REPLACE FUNCTION audit_append_only_refuse() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'Only the retention job (audit.retention) removes rows.';
END
$$
"""
_PG_NOT_PURGING = f"(current_setting('{PURGE_SETTING}', true) IS DISTINCT FROM 'on')"


def _pg_trigger_sql(table: str) -> list[str]:
    refuse = "EXECUTE FUNCTION audit_append_only_refuse()"
    return [
        f"DROP TRIGGER IF EXISTS {table}_no_update ON {table}",
        f"DROP TRIGGER IF EXISTS {table}_no_delete ON {table}",
        f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
        # UPDATE per row: an UPDATE that matches nothing (Django's save() of an
        # instance with a primary key tries one before its INSERT) changes nothing.
        f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} FOR EACH ROW {refuse}",
        # DELETE per statement: a row trigger, even one whose WHEN is false, makes the
        # server fetch every deleted row for it, which doubled the purge's time.
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} FOR EACH STATEMENT "
        f"WHEN {_PG_NOT_PURGING} {refuse}",
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} FOR EACH STATEMENT "
        f"WHEN {_PG_NOT_PURGING} {refuse}",
    ]


def _sqlite_trigger_sql(table: str) -> list[str]:
    def refuse(op: str) -> str:
        return f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {op} refused'); END"

    sql = [
        f"DROP TRIGGER IF EXISTS {table}_no_update",
        f"DROP TRIGGER IF EXISTS {table}_no_delete",
        f"DROP TRIGGER IF EXISTS {table}_no_replace",
        f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} {refuse('UPDATE')}",
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
        f"WHEN NOT EXISTS (SELECT 1 FROM {SQLITE_GUARD_TABLE}) {refuse('DELETE')}",
    ]
    if table == "audit_event":
        # A search-term row is all key: replacing one changes nothing. An event is not.
        sql.append(
            f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} "
            f"WHEN NEW.id IS NOT NULL AND EXISTS (SELECT 1 FROM {table} WHERE id = NEW.id) "
            f"{refuse('REPLACE')}"
        )
    return sql


def append_only_install(schema_editor) -> None:
    """(Re)creates the guard's triggers. Idempotent. A migration that makes Django
    rebuild audit_event or audit_eventterm on SQLite (most AlterFields do: the table
    is copied and the old one dropped, triggers with it) must call this again;
    tests/audit/test_append_only_db.py fails if it does not."""
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        statements = [_PG_REFUSE]
        for table in GUARDED_TABLES:
            statements += _pg_trigger_sql(table)
    elif vendor == "sqlite":
        statements = [f"CREATE TABLE IF NOT EXISTS {SQLITE_GUARD_TABLE} (id integer PRIMARY KEY)"]
        for table in GUARDED_TABLES:
            statements += _sqlite_trigger_sql(table)
    else:  # other databases: the ORM's AppendOnlyError is the only guard
        return
    for sql in statements:
        schema_editor.execute(sql, params=None)


def append_only_uninstall(schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    for table in GUARDED_TABLES:
        for suffix in ("no_update", "no_delete", "no_truncate", "no_replace"):
            if vendor == "postgresql":
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_{suffix} ON {table}")
            elif vendor == "sqlite":
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_{suffix}")
    if vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS audit_append_only_refuse()")
    elif vendor == "sqlite":
        schema_editor.execute(f"DROP TABLE IF EXISTS {SQLITE_GUARD_TABLE}")


@contextmanager
def purge_allowed(using=None) -> Iterator[None]:
    """Lets the current transaction delete events and search terms, until the end of
    the `with` block. Must run inside transaction.atomic(). The permission is then
    withdrawn explicitly, so an enclosing transaction (a test's, say) does not keep it.
    (No savepoint of its own: on SQLite, every page a savepoint touches is copied to a
    journal first, which made each batch 3-4 times slower.)"""
    conn = using or connection
    if not conn.in_atomic_block:
        raise RuntimeError("purge_allowed() must run inside transaction.atomic()")
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            cursor.execute("SELECT set_config(%s, 'on', true)", [PURGE_SETTING])
        elif conn.vendor == "sqlite":
            cursor.execute(f"INSERT OR REPLACE INTO {SQLITE_GUARD_TABLE} (id) VALUES (1)")
        succeeded = False
        try:
            yield
            succeeded = True
        finally:
            try:
                if conn.vendor == "postgresql":
                    cursor.execute("SELECT set_config(%s, 'off', true)", [PURGE_SETTING])
                elif conn.vendor == "sqlite":
                    cursor.execute(f"DELETE FROM {SQLITE_GUARD_TABLE}")
            except DatabaseError:
                # A PostgreSQL transaction that an error aborted runs nothing more until
                # it is rolled back, which withdraws the permission too. Let the error
                # that aborted it be the one reported.
                if succeeded:
                    raise


# The purge.


def retention_cutoff(organization: Organization, now: datetime | None = None) -> datetime:
    """Events that occurred before this moment are past the organization's retention."""
    return (now or timezone.now()) - timedelta(days=organization.plan.retention_days)


@dataclass
class OrgPurge:
    organization: Organization
    cutoff: datetime
    events: int = 0  # removed, or that would be removed in a dry run
    terms: int = 0
    batches: int = 0
    record_refusal: str = ""  # why the audit_log_purged event was not recorded, if it was not


@dataclass
class PurgeResult:
    dry_run: bool
    orgs: list[OrgPurge] = field(default_factory=list)
    complete: bool = True  # False when the deadline stopped it with work left
    export_files: int | None = None  # expired export files deleted; None: not run

    @property
    def events(self) -> int:
        return sum(o.events for o in self.orgs)

    def summary(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "complete": self.complete,
            "events": self.events,
            "export_files": self.export_files,
            "orgs": {o.organization.pk: o.events for o in self.orgs if o.events},
        }


BatchCallback = Callable[[OrgPurge], None]

# What the batch reads of each event: enough to derive its search terms and hour.
_BATCH_SELECT = (
    "SELECT id, occurred_at, action_id, actor_type, actor_id, actor_name, actor_email, "
    "site_name, context, container FROM audit_event "
    "WHERE organization_id = %s AND occurred_at < %s ORDER BY occurred_at, id LIMIT %s"
)
_IN_CHUNK = 500  # ids per DELETE ... IN (...): well under SQLite's parameter limit


def audit_log_purge(
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    organizations: Sequence[Organization] | None = None,
    batch_size: int | None = None,
    pause: float | None = None,
    deadline: float | None = None,
    on_batch: BatchCallback | None = None,
) -> PurgeResult:
    """Remove, per organization, the events older than its plan's retention with their
    search terms and hourly counts, then the expired export files.

    Each batch of AUDIT_PURGE_BATCH_SIZE oldest events is one short transaction,
    followed by a pause of AUDIT_PURGE_PAUSE seconds, so the audit log page and
    recording go on meanwhile. Records `audit_log_purged` (count) for each organization
    that lost events, when its plan records audit log activity. `deadline` (a
    time.monotonic() value) stops between batches with `complete=False`; what was
    removed so far is recorded. A dry run counts and changes nothing.
    """
    now = now or timezone.now()
    batch_size = batch_size or settings.AUDIT_PURGE_BATCH_SIZE
    pause = settings.AUDIT_PURGE_PAUSE if pause is None else pause
    if organizations is None:
        organizations = Organization.objects.select_related("plan").order_by("pk")
    result = PurgeResult(dry_run=dry_run)
    batches = 0
    for org in organizations:
        if org.plan.retention_days < 1:
            # 0 would erase the whole log: read as a slip in the admin, not an order.
            logger.warning("%s: plan %s keeps 0 days; not purging", org, org.plan)
            continue
        purge = OrgPurge(org, retention_cutoff(org, now))
        result.orgs.append(purge)
        if dry_run:
            purge.events = Event.objects.filter(
                organization=org, occurred_at__lt=purge.cutoff
            ).count()
            continue
        while True:
            # Past the deadline, stop before the next batch; but a run always does at
            # least one, so a run that is continued again and again still finishes.
            if deadline is not None and batches and time.monotonic() >= deadline:
                result.complete = False
                break
            removed = _batch_purge(purge, batch_size)
            if removed:
                batches += 1
                if on_batch is not None:
                    on_batch(purge)
            if removed < batch_size:
                break
            if pause:
                time.sleep(pause)
        if purge.events:
            _purge_record(purge)
        if not result.complete:
            break
    if not dry_run and result.complete:
        result.export_files = _export_files_purge()
    return result


def _batch_purge(purge: OrgPurge, batch_size: int) -> int:
    """One transaction: the oldest `batch_size` expired events of one organization,
    their search terms and their share of the hourly counts. Returns how many events
    it took (fewer than `batch_size`: the organization has no more to purge).

    Plain SQL rather than the ORM: converting every column of every row cost more than
    the deletes."""
    org_id = purge.organization.pk
    with transaction.atomic(), connection.cursor() as cursor:
        cutoff = connection.ops.adapt_datetimefield_value(purge.cutoff)
        if connection.vendor == "postgresql":
            # Walk event_org_time in order and stop at batch_size. Without statistics
            # (after a bulk load, before autovacuum has analyzed the table) the planner
            # expects a few rows and sorts every expired event of the organization in
            # each batch instead: a third of the purge's time in the benchmark.
            cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute(_BATCH_SELECT, [org_id, cutoff, batch_size])
        rows = {row[0]: row for row in cursor.fetchall()}
        if not rows:
            return 0
        with purge_allowed():
            # Delete by id and act on what was really deleted: a second purge running
            # at the same time must not decrement the counts of the same events twice.
            deleted = _events_delete(cursor, list(rows))
            gone = [rows[i] for i in deleted]
            terms = _terms_delete(cursor, org_id, list(rows.values()), gone)
            _hourly_counts_subtract(cursor, org_id, gone)
    purge.events += len(gone)
    purge.terms += terms
    purge.batches += 1
    return len(rows)


def _events_delete(cursor, ids: list[int]) -> list[int]:
    """Deletes the events `ids`; returns those that were there to delete."""
    table = Event._meta.db_table
    if connection.vendor == "postgresql":
        cursor.execute(f"DELETE FROM {table} WHERE id = ANY(%s) RETURNING id", [ids])
        return [r[0] for r in cursor.fetchall()]
    deleted = []
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        cursor.execute(
            f"DELETE FROM {table} WHERE id IN ({', '.join(['%s'] * len(chunk))}) RETURNING id",
            chunk,
        )
        deleted += [r[0] for r in cursor.fetchall()]
    return deleted


def _db_time_adapter() -> Callable[[datetime], object]:
    """Times read by a raw query, as parameters that match the stored values exactly.
    SQLite gives naive UTC datetimes, which Django stores as str(value). PostgreSQL
    gives aware ones; ISO text cast back by the server is exact, and psycopg dumps
    thousands of strings several times faster than as many datetimes."""
    return str if connection.vendor == "sqlite" else datetime.isoformat


def _json(value):
    return json.loads(value) if isinstance(value, str) else (value or [])


def _terms_delete(cursor, org_id: int, rows: list[tuple], gone: list[tuple]) -> int:
    """Deletes the search terms of `gone`, the events of the batch `rows` that were
    deleted, and nothing else.

    A term row's key is (organization, term, occurred_at, event_id), and the batch is
    every event of the organization from its first (occurred_at, id) to its last. So
    each distinct term of the batch's events is removed as one contiguous key range
    (a few hundred range deletes, not one probe per term row), with the terms derived
    from each event exactly as the recording service derived them."""
    db_time = _db_time_adapter()
    expected = 0
    terms: set[str] = set()
    for _, _, _, a_type, a_id, a_name, a_email, site, context, container in gone:
        actor = Actor(type=a_type, id=a_id, name=a_name, email=a_email)
        derived = _terms(actor, site, [*_json(context), *_json(container)])
        expected += len(derived)
        terms |= derived
    if not terms:
        return 0
    first = (db_time(rows[0][1]), rows[0][0])
    last = (db_time(rows[-1][1]), rows[-1][0])
    table = EventTerm._meta.db_table
    if connection.vendor == "postgresql":
        # One key range per term, walked by a LATERAL subquery so that the planner
        # cannot choose to hash all the organization's terms instead. A PostgreSQL
        # writer may commit an event inside the range after the batch was read; the
        # event_id filter (kept out of the index condition by "+ 0": as an index key
        # it would mean one index descent per id) leaves its terms alone.
        cursor.execute(
            f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("
            f"SELECT t.ctid FROM unnest(%s::varchar[]) AS k(term) CROSS JOIN LATERAL ("
            f"SELECT ctid FROM {table} WHERE organization_id = %s AND term = k.term "
            "AND (occurred_at, event_id) >= (%s::timestamptz, %s) "
            "AND (occurred_at, event_id) <= (%s::timestamptz, %s) "
            "AND event_id + 0 = ANY(%s)) AS t))",
            [sorted(terms), org_id, *first, *last, [row[0] for row in gone]],
        )
    else:
        # SQLite: the batch's transaction has held the write lock since it began, so
        # the range holds the batch's events and nothing else.
        cursor.executemany(
            f"DELETE FROM {table} WHERE organization_id = %s AND term = %s "
            "AND (occurred_at, event_id) >= (%s, %s) AND (occurred_at, event_id) <= (%s, %s)",
            [(org_id, term, *first, *last) for term in sorted(terms)],
        )
    deleted = cursor.rowcount
    if deleted != expected:
        # The terms were derived differently when recorded (services._terms changed?):
        # leftovers point at no event, so search ignores them, but they take space.
        logger.warning(
            "Organization %s: %d search terms expected, %d deleted", org_id, expected, deleted
        )
    return deleted


def _hourly_counts_subtract(cursor, org_id: int, rows: list[tuple]) -> None:
    """The batch took the organization's oldest events: every hour before the hour of
    its newest is now empty, so those hours' counts go whole; that last hour, which
    may keep events, loses what the batch removed from it."""
    if not rows:
        return
    last_hour = max(at for _, at, *_ in rows).replace(minute=0, second=0, microsecond=0)
    in_last_hour = Counter(action_id for _, at, action_id, *_ in rows if at >= last_hour)
    table = EventHourlyCount._meta.db_table
    hour = _db_time_adapter()(last_hour)
    cursor.execute(f"DELETE FROM {table} WHERE organization_id = %s AND hour < %s", [org_id, hour])
    # Per action: the row goes when the batch took all of its count, else it shrinks.
    # (Each statement names the whole primary key: "count = 0" alone led SQLite to
    # walk every count row of the organization through the other index.)
    params = [(org_id, hour, action_id, n) for action_id, n in in_last_hour.items()]
    cursor.executemany(
        f"DELETE FROM {table} WHERE organization_id = %s AND hour = %s AND action_id = %s "
        "AND count <= %s",
        params,
    )
    cursor.executemany(
        f"UPDATE {table} SET count = count - %s "
        "WHERE organization_id = %s AND hour = %s AND action_id = %s",
        [(n, org_id, hour, action_id) for _, hour, action_id, n in params],
    )
    totals = EventHourlyTotal._meta.db_table
    removed = sum(in_last_hour.values())
    cursor.execute(f"DELETE FROM {totals} WHERE organization_id = %s AND hour < %s", [org_id, hour])
    cursor.execute(
        f"DELETE FROM {totals} WHERE organization_id = %s AND hour = %s AND count <= %s",
        [org_id, hour, removed],
    )
    cursor.execute(
        f"UPDATE {totals} SET count = count - %s WHERE organization_id = %s AND hour = %s",
        [removed, org_id, hour],
    )


def _purge_record(purge: OrgPurge) -> None:
    recorded = event_record(
        organization=purge.organization,
        action="audit_log_purged",
        actor=SYSTEM,
        details={"count": purge.events},
    )
    purge.record_refusal = recorded.reason
    logger.info(
        "%s: removed %d events older than %s%s",
        purge.organization,
        purge.events,
        purge.cutoff.isoformat(),
        f" (not recorded: {recorded.reason})" if recorded.reason else "",
    )


def _export_files_purge() -> int | None:
    """Deletes expired export files through the exports app, when it offers
    `exports.services.export_files_purge_expired()`; None when it does not (yet)."""
    try:
        module = importlib.import_module("exports.services")
    except ModuleNotFoundError as exc:
        if exc.name != "exports.services":
            raise
        return None
    purge = getattr(module, "export_files_purge_expired", None)
    if purge is None:
        logger.warning("exports.services has no export_files_purge_expired(): files kept")
        return None
    removed = purge()
    return removed if isinstance(removed, int) else None
