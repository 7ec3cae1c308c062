"""The append-only guard: what the database itself refuses, so that neither code that
goes around the ORM nor the application's own database account can rewrite the log.

Guarded tables: the events and their search terms (never UPDATE; DELETE and TRUNCATE
only by the retention job), the hourly counts behind the chart (an UPDATE may only add
to a count; DELETE only by the job) and the activity catalogue (changed only by
migrations).

PostgreSQL, two roles (README, "Database roles"):

- The **owner** role owns the tables and runs the migrations. The **application** role
  (setting DATABASE_APP_ROLE) is what the web and worker processes connect as: after
  every `migrate`, `grants_apply` gives it SELECT and INSERT on the guarded tables,
  UPDATE on the hourly counts (to add to them), SELECT only on the catalogue, and
  EXECUTE on the job's functions; nothing else on them. It cannot UPDATE, DELETE or
  TRUNCATE an event, whatever it sets in its session.
- The retention job deletes through `audit_purge_batch` and `audit_purge_terms`,
  SECURITY DEFINER functions owned by the owner role. The first removes an
  organization's oldest events, never any younger than AUDIT_MIN_RETENTION_DAYS
  (written into the function when it is installed, whatever the caller asks), and
  takes their share off the hourly counts; the second removes search terms only of
  events that no longer exist.
- Triggers refuse UPDATE of events and terms always, and DELETE / TRUNCATE (and a
  count going down, and any catalogue change) unless the transaction-local setting
  `auditlog.purge` is 'on' *and* the statement runs as the table's owner: inside
  those functions, a migration, or the test suite's `flush`. The application role can
  set the setting but is never the owner, so it opens nothing.

- The monthly partitions of the events tables (audit.partitions) carry the parents'
  DELETE / TRUNCATE guard too, and the application role has no privilege on them: it
  reads and writes through the parents. Only the owner can create, attach, detach or
  drop a partition; the application role does it through the owner's functions
  `audit_partitions_ensure` (months ahead) and `audit_partitions_drop` (an expired
  month, rechecked by the function).

SQLite has no roles: triggers refuse the same changes unless the table
`audit_purgeguard` has a row, which `purge_allowed()` inserts and deletes inside the
job's transaction. That stops mistakes and code that bypasses the ORM; anyone who can
write the database file can insert that row, or drop the triggers.

Both refuse with an IntegrityError ("... is append-only: DELETE refused").
"""

from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import DatabaseError, connection

from .partitions import (
    PARTITION_FUNCTIONS,
    PARTITIONED,
    is_partitioned,
    partition_triggers_sql,
    partitions_of,
)

# Never updated; deleted only by the retention job (events and terms) or never outside
# the test suite's flush (the integrity blocks and retention marks, which the job keeps).
EVENT_TABLES = ("audit_event", "audit_eventterm", "audit_block", "audit_retentionmark")
COUNT_TABLES = ("audit_eventhourlycount", "audit_eventhourlytotal")
CATALOGUE_TABLE = "audit_activity"
GUARDED_TABLES = (*EVENT_TABLES, *COUNT_TABLES, CATALOGUE_TABLE)
# SQLite's INSERT OR REPLACE deletes a conflicting row without firing delete triggers:
# refused for rows that are not all key (a search term is).
_REPLACE_KEYS = {
    "audit_event": [("id",)],
    "audit_block": [("id",), ("organization_id", "sequence")],
    "audit_retentionmark": [("id",)],
}
COUNT_KEYS = {
    "audit_eventhourlycount": ("organization_id", "hour", "action_id"),
    "audit_eventhourlytotal": ("organization_id", "hour"),
}
PURGE_SETTING = "auditlog.purge"
SQLITE_GUARD_TABLE = "audit_purgeguard"
_SUFFIXES = ("no_update", "no_delete", "no_truncate", "no_replace", "no_decrease")
PURGE_FUNCTIONS = (
    "audit_purge_batch(bigint, timestamptz, integer)",
    "audit_purge_terms(bigint, bigint[], timestamptz, timestamptz, bigint[])",
)

# PostgreSQL.

_PG_FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION audit_guard_open(rel oid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT current_setting('{PURGE_SETTING}', true) IS NOT DISTINCT FROM 'on'
       AND (SELECT relowner FROM pg_class WHERE oid = rel)
           = (SELECT oid FROM pg_roles WHERE rolname = current_user)
$$;
CREATE OR REPLACE FUNCTION audit_append_only_refuse() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'Only the retention job (audit.retention) removes rows.';
END
$$;
CREATE OR REPLACE FUNCTION audit_append_only_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF audit_guard_open(TG_RELID) THEN
        RETURN CASE WHEN TG_LEVEL = 'ROW' THEN NEW END;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'Only the retention job (audit.retention) removes rows.';
END
$$;
"""


def _pg_trigger_sql(table: str) -> list[str]:
    refuse = "EXECUTE FUNCTION audit_append_only_refuse()"
    guard = "EXECUTE FUNCTION audit_append_only_guard()"
    sql = [f"DROP TRIGGER IF EXISTS {table}_{suffix} ON {table}" for suffix in _SUFFIXES]
    # DELETE and TRUNCATE per statement: a row trigger, even one whose WHEN is false,
    # makes the server fetch every deleted row for it, which doubled the purge's time.
    sql += [
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} FOR EACH STATEMENT {guard}",
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} FOR EACH STATEMENT {guard}",
    ]
    if table in EVENT_TABLES:
        # UPDATE per row: an UPDATE that matches nothing (Django's save() of an
        # instance with a primary key tries one before its INSERT) changes nothing.
        sql.append(
            f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} FOR EACH ROW {refuse}"
        )
    elif table in COUNT_KEYS:
        # Recording adds to a count (INSERT ... ON CONFLICT DO UPDATE); only the job
        # takes from one.
        changed = " OR ".join(f"NEW.{k} IS DISTINCT FROM OLD.{k}" for k in COUNT_KEYS[table])
        sql.append(
            f"CREATE TRIGGER {table}_no_decrease BEFORE UPDATE ON {table} FOR EACH ROW "
            f"WHEN (NEW.count < OLD.count OR {changed}) {guard}"
        )
    else:
        sql.append(
            f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} FOR EACH STATEMENT {guard}"
        )
    return sql


_ON = f"PERFORM set_config('{PURGE_SETTING}', 'on', true);"
_OFF = f"PERFORM set_config('{PURGE_SETTING}', 'off', true);"


def _pg_purge_functions_sql(min_days: int) -> list[str]:
    """The retention job's ways through the guard (see the module docstring), and the
    partition functions (audit.partitions: making months ahead, dropping expired ones)."""
    from .partitions import functions_sql

    return [_pg_purge_batch_sql(min_days), _PG_PURGE_TERMS, *functions_sql(min_days)]


def _pg_purge_batch_sql(min_days: int) -> str:
    on, off = _ON, _OFF
    return f"""
CREATE OR REPLACE FUNCTION audit_purge_batch(p_org bigint, p_cutoff timestamptz, p_limit integer)
RETURNS SETOF audit_event
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public SET enable_sort = off SET "TimeZone" = 'UTC'
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    gone audit_event[];
    ids bigint[];
    first_at timestamptz;
    last_at timestamptz;
    last_hour timestamptz;
    removed integer;
BEGIN
    {on}
    -- Never younger than the minimum retention, whatever the caller asked.
    -- enable_sort off: walk event_org_time in order and stop at p_limit, even before
    -- the table has statistics (the planner would sort every expired event instead).
    SELECT array_agg(b.id), min(b.occurred_at), max(b.occurred_at) INTO ids, first_at, last_at
    FROM (SELECT e.id, e.occurred_at FROM audit_event e
          WHERE e.organization_id = p_org
            AND e.occurred_at < LEAST(p_cutoff, now() - make_interval(days => {min_days}))
          ORDER BY e.occurred_at, e.id LIMIT p_limit) b;
    -- The batch's time span too: with the events in monthly partitions (audit.partitions)
    -- the DELETE then probes the months it needs, not every month for every id.
    WITH d AS (
        DELETE FROM audit_event
        WHERE id = ANY(ids) AND occurred_at >= first_at AND occurred_at <= last_at
        RETURNING *)
    SELECT array_agg(d) INTO gone FROM d;
    IF gone IS NULL THEN
        {off}
        RETURN;
    END IF;
    -- The batch took the organization's oldest events: every hour before the hour of
    -- its newest is now empty; that hour loses what the batch removed from it.
    SELECT date_trunc('hour', max(g.occurred_at)) INTO last_hour FROM unnest(gone) g;
    DELETE FROM audit_eventhourlycount WHERE organization_id = p_org AND hour < last_hour;
    DELETE FROM audit_eventhourlytotal WHERE organization_id = p_org AND hour < last_hour;
    DELETE FROM audit_eventhourlycount c USING (
        SELECT g.action_id, count(*) AS n FROM unnest(gone) g
        WHERE g.occurred_at >= last_hour GROUP BY g.action_id) b
    WHERE c.organization_id = p_org AND c.hour = last_hour AND c.action_id = b.action_id
      AND c.count <= b.n;
    UPDATE audit_eventhourlycount c SET count = c.count - b.n FROM (
        SELECT g.action_id, count(*) AS n FROM unnest(gone) g
        WHERE g.occurred_at >= last_hour GROUP BY g.action_id) b
    WHERE c.organization_id = p_org AND c.hour = last_hour AND c.action_id = b.action_id;
    SELECT count(*) INTO removed FROM unnest(gone) g WHERE g.occurred_at >= last_hour;
    DELETE FROM audit_eventhourlytotal
    WHERE organization_id = p_org AND hour = last_hour AND count <= removed;
    UPDATE audit_eventhourlytotal SET count = count - removed
    WHERE organization_id = p_org AND hour = last_hour;
    {off}
    RETURN QUERY SELECT * FROM unnest(gone);
END
$$"""


_PG_PURGE_TERMS = f"""
CREATE OR REPLACE FUNCTION audit_purge_terms(
    p_org bigint, p_terms bigint[], p_first_at timestamptz, p_last_at timestamptz,
    p_ids bigint[])
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    deleted bigint := 0;
    n bigint;
    part record;
BEGIN
    -- Only the terms of events that are gone: a search term is the event's to keep.
    IF EXISTS (SELECT 1 FROM audit_event WHERE id = ANY(p_ids)
               AND occurred_at >= p_first_at AND occurred_at <= p_last_at) THEN
        RAISE EXCEPTION 'audit_eventterm is append-only: the terms of a stored event'
            USING ERRCODE = 'restrict_violation';
    END IF;
    {_ON}
    -- A term row holds one UTC day of a term's events (audit.recording.term_rows), keyed
    -- by its newest: a row with an event of the batch's span ends at or after its
    -- start and before the end of its last day. Per term one key range, walked by a
    -- LATERAL subquery so that the planner cannot choose to hash all the
    -- organization's terms instead; a row goes only when none of its events is left
    -- (a row of the batch's last hour may hold events the next batch takes; a writer
    -- never adds to a row, so one committed meanwhile has rows of its own). A ctid
    -- names a row only within its own table, and the terms are in monthly partitions
    -- (audit.partitions): the rows are deleted from each partition that holds them.
    FOR part IN
        SELECT t.tableoid::regclass AS name, array_agg(t.ctid) AS tids
        FROM unnest(p_terms) AS k(term) CROSS JOIN LATERAL (
            SELECT r.tableoid, r.ctid FROM audit_eventterm r
            WHERE r.organization_id = p_org AND r.term_hash = k.term
              AND r.occurred_at >= p_first_at
              AND r.occurred_at < date_trunc('day', p_last_at AT TIME ZONE 'UTC')
                                  AT TIME ZONE 'UTC' + interval '24 hours'
              AND coalesce(r.oldest_at, r.occurred_at) <= p_last_at
              AND NOT EXISTS (SELECT 1 FROM audit_event e
                              WHERE e.id = ANY(coalesce(r.event_ids, ARRAY[r.event_id]))
                              AND e.occurred_at >= coalesce(r.oldest_at, r.occurred_at)
                              AND e.occurred_at <= r.occurred_at)) AS t
        GROUP BY t.tableoid
    LOOP
        EXECUTE format('DELETE FROM %s WHERE ctid = ANY($1)', part.name) USING part.tids;
        GET DIAGNOSTICS n = ROW_COUNT;
        deleted := deleted + n;
    END LOOP;
    {_OFF}
    RETURN deleted;
END
$$"""


# SQLite.


def _sqlite_trigger_sql(table: str) -> list[str]:
    def refuse(op: str) -> str:
        return f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {op} refused'); END"

    closed = f"NOT EXISTS (SELECT 1 FROM {SQLITE_GUARD_TABLE})"
    sql = [f"DROP TRIGGER IF EXISTS {table}_{suffix}" for suffix in _SUFFIXES]
    sql.append(
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} WHEN {closed} "
        f"{refuse('DELETE')}"
    )
    if table in EVENT_TABLES:
        sql.append(f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} {refuse('UPDATE')}")
    elif table in COUNT_KEYS:
        changed = " OR ".join(f"NEW.{k} IS NOT OLD.{k}" for k in COUNT_KEYS[table])
        sql.append(
            f"CREATE TRIGGER {table}_no_decrease BEFORE UPDATE ON {table} "
            f"WHEN (NEW.count < OLD.count OR {changed}) AND {closed} {refuse('UPDATE')}"
        )
    else:
        sql.append(
            f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} WHEN {closed} "
            f"{refuse('UPDATE')}"
        )
    if table in _REPLACE_KEYS:
        conflicts = " OR ".join(
            f"EXISTS (SELECT 1 FROM {table} WHERE "
            + " AND ".join(f"{k} = NEW.{k}" for k in keys)
            + ")"
            for keys in _REPLACE_KEYS[table]
        )
        sql.append(
            f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} "
            f"WHEN {conflicts} {refuse('REPLACE')}"
        )
    return sql


def append_only_install(schema_editor) -> None:
    """(Re)creates the guard on every guarded table that exists. Idempotent: each
    migration that adds or rebuilds a guarded table calls it again (on SQLite most
    AlterFields copy the table and drop the old one, triggers with it;
    tests/audit/test_append_only_db.py fails if a table is left unguarded)."""
    conn = schema_editor.connection
    existing = set(conn.introspection.table_names())
    tables = [t for t in GUARDED_TABLES if t in existing]
    if conn.vendor == "postgresql":
        statements = [_PG_FUNCTIONS]
        for table in tables:
            statements += _pg_trigger_sql(table)
        statements += partition_triggers_sql(conn)
        if "audit_eventhourlytotal" in existing:  # the functions name every table
            statements += _pg_purge_functions_sql(settings.AUDIT_MIN_RETENTION_DAYS)
    elif conn.vendor == "sqlite":
        statements = [f"CREATE TABLE IF NOT EXISTS {SQLITE_GUARD_TABLE} (id integer PRIMARY KEY)"]
        for table in tables:
            statements += _sqlite_trigger_sql(table)
    else:  # other databases: the ORM's AppendOnlyError is the only guard
        return
    for sql in statements:
        schema_editor.execute(sql, params=None)


def append_only_uninstall(schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    for table in GUARDED_TABLES:
        for suffix in _SUFFIXES:
            if vendor == "postgresql":
                schema_editor.execute(
                    f"DO $$BEGIN IF to_regclass('{table}') IS NOT NULL THEN "
                    f"DROP TRIGGER IF EXISTS {table}_{suffix} ON {table}; END IF; END$$"
                )
            elif vendor == "sqlite":
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_{suffix}")
    if vendor == "postgresql":
        conn = schema_editor.connection
        for table in PARTITIONED:
            if is_partitioned(conn, table):
                for partition in partitions_of(table, conn):
                    for suffix in ("no_delete", "no_truncate"):
                        schema_editor.execute(
                            f"DROP TRIGGER IF EXISTS {partition}_{suffix} ON {partition}"
                        )
        for function in (
            *PURGE_FUNCTIONS,
            *PARTITION_FUNCTIONS,
            "audit_append_only_guard()",
            "audit_append_only_refuse()",
            "audit_guard_open(oid)",
        ):
            schema_editor.execute(f"DROP FUNCTION IF EXISTS {function}")
    elif vendor == "sqlite":
        schema_editor.execute(f"DROP TABLE IF EXISTS {SQLITE_GUARD_TABLE}")


def purge_functions_refresh(using=None) -> bool:
    """PostgreSQL: rewrites the purge functions with today's AUDIT_MIN_RETENTION_DAYS
    (CREATE OR REPLACE: no table is locked); run after every migrate (audit.apps), as the
    owner role, so a changed minimum holds once `migrate` has run, with or without a
    migration to apply. False when there is nothing to do."""
    conn = using or connection
    if conn.vendor != "postgresql":
        return False
    if "audit_eventhourlytotal" not in set(conn.introspection.table_names()):
        return False  # a migrate that stopped before the tables the functions name
    with conn.cursor() as cursor:
        for sql in _pg_purge_functions_sql(settings.AUDIT_MIN_RETENTION_DAYS):
            cursor.execute(sql)
    return True


def grants_apply(using=None) -> bool:
    """PostgreSQL: gives the application role (DATABASE_APP_ROLE) what it needs and no
    more; run after every migrate (audit.apps), as the owner role. Returns False when
    there is nothing to do (another database, or no application role configured)."""
    conn = using or connection
    role = settings.DATABASE_APP_ROLE
    if conn.vendor != "postgresql" or not role:
        return False
    app = conn.ops.quote_name(role)
    existing = set(conn.introspection.table_names())  # a migrate may stop part way
    guarded = ", ".join(t for t in GUARDED_TABLES if t in existing)
    counts = ", ".join(t for t in COUNT_TABLES if t in existing)
    statements = [
        f"GRANT USAGE ON SCHEMA public TO {app}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {app}",
    ]
    if guarded:
        statements.append(
            f"REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {guarded} FROM {app}"
        )
    if CATALOGUE_TABLE in existing:
        statements.append(f"REVOKE INSERT ON {CATALOGUE_TABLE} FROM {app}")
    # The monthly partitions (audit.partitions): reached through their parents only,
    # whose privileges PostgreSQL checks; on a partition itself the role has none.
    partitions = [p for t in PARTITIONED if is_partitioned(conn, t) for p in partitions_of(t, conn)]
    if partitions:
        statements.append(f"REVOKE ALL ON {', '.join(partitions)} FROM {app}")
    if counts:
        statements.append(f"GRANT UPDATE ON {counts} TO {app}")
    with conn.cursor() as cursor:
        cursor.execute("SELECT to_regprocedure(%s) IS NOT NULL", [PURGE_FUNCTIONS[0]])
        if cursor.fetchone()[0]:
            functions = ", ".join((*PURGE_FUNCTIONS, *PARTITION_FUNCTIONS))
            statements.append(f"REVOKE EXECUTE ON FUNCTION {functions} FROM PUBLIC")
            statements.append(f"GRANT EXECUTE ON FUNCTION {functions} TO {app}")
        for sql in statements:
            cursor.execute(sql)
    return True


@contextmanager
def purge_allowed(using=None) -> Iterator[None]:
    """Lets the current transaction delete guarded rows until the end of the `with`
    block: on SQLite the retention job's batches, and on either database the test
    suite's `flush` (on PostgreSQL only as the tables' owner). Must run inside
    transaction.atomic(). The permission is then withdrawn explicitly, so an enclosing
    transaction (a test's, say) does not keep it. (No savepoint of its own: on SQLite,
    every page a savepoint touches is copied to a journal first, which made each batch
    3-4 times slower.)"""
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


def catalogue_sync(apps, schema_editor) -> None:
    """Copies audit/catalogue.py into the Activity table: new keys are created, labels,
    templates and order updated. For migrations (run as the owner role), which open the
    catalogue's guard for their own transaction."""
    catalogue_copy(apps, schema_editor.connection)


def catalogue_copy(apps, conn) -> None:
    """catalogue_sync on a connection, inside transaction.atomic()."""
    from .catalogue import ACTIONS

    Activity = apps.get_model("audit", "Activity")
    with purge_allowed(conn):
        for position, action in enumerate(ACTIONS):
            Activity.objects.using(conn.alias).update_or_create(
                key=action.key,
                defaults=dict(
                    label=action.label,
                    category=action.category,
                    user_created=action.user_created,
                    template=action.template,
                    position=position,
                ),
            )
