"""PostgreSQL: the events tables in monthly partitions (README, "Monthly partitions").

The events, their search terms and the hourly counts are each partitioned by RANGE of
their time column (`occurred_at`, or `hour` for the counts), one partition a month in
UTC, named `<table>_pYYYY_MM`, plus a DEFAULT partition `<table>_default`. SQLite keeps
one table each: nothing here runs there.

- Months are made ahead by the daily task `audit.tasks.audit_partitions_ensure` (the
  current month and the next PARTITION_MONTHS_AHEAD, and every month back to the
  oldest time an event may still be recorded at: now less the longest retention of any
  organization, since ingest accepts back-dated events within the retention window).
- The DEFAULT partition is the safety net: an event at a time no month covers (a clock
  far off, the task not run for months) is still recorded there, never refused. When
  the task then makes that month it moves those rows into it (`audit_partitions_ensure`
  below). It is empty in normal running, so the scans it costs (queries without an
  upper time bound, and attaching a month) are one index probe.
- Retention drops a whole month (all four tables, one DROP TABLE) once every event in
  it is past every organization's retention, through `audit_partitions_drop`, a
  SECURITY DEFINER function of the owner role that checks that itself
  (audit.retention); the boundary month is left to the per-organization purge.

Both functions run as the owner role, the only role that can create, attach, detach or
drop a partition (the application role owns nothing: PostgreSQL lets only a table's
owner ALTER or DROP it) and has no privilege on the partitions themselves, only on the
parents (audit.guard.grants_apply).
"""

from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import connection

# Partitioned table -> its partition key.
PARTITIONED = {
    "audit_event": "occurred_at",
    "audit_eventterm": "occurred_at",
    "audit_eventhourlycount": "hour",
    "audit_eventhourlytotal": "hour",
}
PARTITION_MONTHS_AHEAD = 3
PARTITION_FUNCTIONS = (
    "audit_partitions_ensure(date, date)",
    "audit_partitions_drop(date)",
)
_LOCK = 0x6175_6469_7401  # advisory lock key: one partition change at a time
# How long the drop waits for the parents' lock (it waits for running queries on the
# events table and blocks new ones meanwhile): on timeout it fails and the next day's
# job tries again.
DROP_LOCK_TIMEOUT = "5s"


def month_start(moment: datetime | date) -> date:
    return date(moment.year, moment.month, 1)


def month_add(month: date, n: int) -> date:
    index = month.year * 12 + month.month - 1 + n
    return date(index // 12, index % 12 + 1, 1)


def month_bounds(month: date) -> tuple[datetime, datetime]:
    """[start, end) of the month in UTC."""
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    return start, datetime.combine(month_add(month, 1), datetime.min.time(), tzinfo=UTC)


def partition_name(table: str, month: date) -> str:
    return f"{table}_p{month:%Y_%m}"


def is_partitioned(conn=None, table: str = "audit_event") -> bool:
    conn = conn or connection
    if conn.vendor != "postgresql":
        return False
    with conn.cursor() as cursor:
        cursor.execute("SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass(%s)", [table])
        row = cursor.fetchone()
    return bool(row and row[0])


def partitions_of(table: str, conn=None) -> list[str]:
    """The partitions of `table`, month partitions in time order, then the default."""
    conn = conn or connection
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(%s) ORDER BY c.relname",
            [table],
        )
        names = [row[0] for row in cursor.fetchall()]
    return sorted(names, key=lambda n: n.endswith("_default"))


def longest_retention_days(conn=None) -> int:
    """The longest retention of any organization, never less than the minimum: the
    partition functions compute the same (_LONGEST_SQL). Nor more than
    MAX_RETENTION_DAYS (a plan row edited around the admin's check), past which no
    month could be computed."""
    from orgs.models import MAX_RETENTION_DAYS

    conn = conn or connection
    with conn.cursor() as cursor:
        cursor.execute(f"SELECT {_longest_sql(settings.AUDIT_MIN_RETENTION_DAYS)}")
        return min(cursor.fetchone()[0], MAX_RETENTION_DAYS)


def _longest_sql(min_days: int) -> str:
    return (
        f"GREATEST({int(min_days)}, (SELECT max(p.retention_days) FROM orgs_organization o "
        "JOIN orgs_plan p ON p.id = o.plan_id))"
    )


def partitions_ensure(now: datetime | None = None, *, ahead: int = PARTITION_MONTHS_AHEAD) -> int:
    """Creates every month partition that is missing from the month of the oldest time
    an event may still be recorded at, to `ahead` months after the current one.
    Idempotent. Returns how many partitions (all tables together) it created; 0 on
    SQLite or before the tables are partitioned."""
    if not is_partitioned():
        return 0
    from django.utils import timezone

    now = now or timezone.now()
    first = month_start(now - timedelta(days=longest_retention_days()))
    last = month_add(month_start(now), ahead)
    with connection.cursor() as cursor:
        cursor.execute("SELECT audit_partitions_ensure(%s, %s)", [first, last])
        return cursor.fetchone()[0]


def expired_months(now: datetime | None = None) -> list[date]:
    """The months of audit_event (oldest first) whose every event is past every
    organization's retention: the partition ends at or before now less the longest
    retention. The drop function checks it again, with the server's clock."""
    from django.utils import timezone

    if not is_partitioned():
        return []
    horizon = (now or timezone.now()) - timedelta(days=longest_retention_days())
    months = []
    for name in partitions_of("audit_event"):
        if name.endswith("_default"):
            continue
        month = datetime.strptime(name.rsplit("_p", 1)[1], "%Y_%m").date()
        if month_bounds(month)[1] <= horizon:
            months.append(month)
    return months


def partition_drop(month: date) -> dict[int, int]:
    """Drops `month` of the four tables through the owner's function, which refuses a
    month that is not expired or not the oldest. Returns the events it held per
    organization (also kept as RetentionMarks by the function)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT organization_id, events FROM audit_partitions_drop(%s)", [month])
        return {org: int(n) for org, n in cursor.fetchall()}


# -- SQL ------------------------------------------------------------------------------


def _trigger_sql(partition: str) -> list[str]:
    """A partition's own guard: the parent's statement-level DELETE / TRUNCATE triggers
    fire only for statements naming the parent; row-level ones PostgreSQL clones."""
    guard = "EXECUTE FUNCTION audit_append_only_guard()"
    return [
        f"CREATE OR REPLACE TRIGGER {partition}_no_delete BEFORE DELETE ON {partition} "
        f"FOR EACH STATEMENT {guard}",
        f"CREATE OR REPLACE TRIGGER {partition}_no_truncate BEFORE TRUNCATE ON {partition} "
        f"FOR EACH STATEMENT {guard}",
    ]


def partition_triggers_sql(conn=None) -> list[str]:
    """The guard of every existing partition (audit.guard.append_only_install)."""
    sql = []
    for table in PARTITIONED:
        if is_partitioned(conn, table):
            for name in partitions_of(table, conn):
                sql += _trigger_sql(name)
    return sql


_PLPGSQL_TRIGGERS = """
            EXECUTE format('CREATE OR REPLACE TRIGGER %I BEFORE DELETE ON %I FOR EACH STATEMENT '
                'EXECUTE FUNCTION audit_append_only_guard()', part || '_no_delete', part);
            EXECUTE format('CREATE OR REPLACE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT '
                'EXECUTE FUNCTION audit_append_only_guard()', part || '_no_truncate', part);"""


def functions_sql(min_days: int) -> list[str]:
    tables = ", ".join(f"'{t}'" for t in PARTITIONED)
    keys = ", ".join(f"'{k}'" for k in PARTITIONED.values())
    ensure = f"""
CREATE OR REPLACE FUNCTION audit_partitions_ensure(p_first date, p_last date)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public SET "TimeZone" = 'UTC'
AS $$
DECLARE
    tables text[] := ARRAY[{tables}];
    keys text[] := ARRAY[{keys}];
    m date;
    i integer;
    part text;
    lo timestamptz;
    hi timestamptz;
    strays boolean;
    made integer := 0;
BEGIN
    IF p_last > now() + interval '13 months' OR p_last - p_first > 366 * 100 THEN
        RAISE EXCEPTION 'audit_partitions_ensure: % to % is not a range of months to make',
            p_first, p_last USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock({_LOCK});
    m := date_trunc('month', p_first)::date;
    WHILE m <= p_last LOOP
        lo := m::timestamp AT TIME ZONE 'UTC';
        hi := (m + interval '1 month')::timestamp AT TIME ZONE 'UTC';
        FOR i IN 1 .. array_length(tables, 1) LOOP
            part := tables[i] || '_p' || to_char(m, 'YYYY_MM');
            CONTINUE WHEN to_regclass(part) IS NOT NULL OR (SELECT relkind FROM pg_class
                WHERE oid = to_regclass(tables[i])) IS DISTINCT FROM 'p';
            -- Rows the DEFAULT partition took for this month move into it: attaching a
            -- range the default holds rows of is refused.
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I >= $1 AND %I < $2)',
                           tables[i] || '_default', keys[i], keys[i]) INTO strays USING lo, hi;
            IF strays THEN
                EXECUTE format('CREATE TABLE public.%I '
                               '(LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                               part, tables[i]);
                EXECUTE format('INSERT INTO %I SELECT * FROM %I WHERE %I >= $1 AND %I < $2',
                               part, tables[i] || '_default', keys[i], keys[i]) USING lo, hi;
                PERFORM set_config('{settings_key()}', 'on', true);
                EXECUTE format('DELETE FROM %I WHERE %I >= $1 AND %I < $2',
                               tables[i] || '_default', keys[i], keys[i]) USING lo, hi;
                PERFORM set_config('{settings_key()}', 'off', true);
                EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                               tables[i], part, lo, hi);
            ELSE
                EXECUTE format('CREATE TABLE IF NOT EXISTS public.%I PARTITION OF %I '
                               'FOR VALUES FROM (%L) TO (%L)', part, tables[i], lo, hi);
            END IF;{_PLPGSQL_TRIGGERS}
            made := made + 1;
        END LOOP;
        m := (m + interval '1 month')::date;
    END LOOP;
    RETURN made;
END
$$"""
    drop = f"""
CREATE OR REPLACE FUNCTION audit_partitions_drop(p_month date)
RETURNS TABLE (organization_id bigint, events bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public SET "TimeZone" = 'UTC'
AS $$
#variable_conflict use_column
DECLARE
    tables text[] := ARRAY[{tables}];
    lo timestamptz := p_month::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (p_month + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    longest integer := {_longest_sql(min_days)};
    suffix text := '_p' || to_char(p_month, 'YYYY_MM');
    t text;
    orgs bigint[];
    counts bigint[];
BEGIN
    -- Recomputed here, whatever the caller believes: only a whole month whose every
    -- event is past every organization's retention, and the oldest one, so that
    -- "every event before its end is gone" (the retention marks below) is true.
    IF p_month <> date_trunc('month', p_month)::date THEN
        RAISE EXCEPTION 'audit_partitions_drop: % is not the first day of a month', p_month
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF hi > now() - make_interval(days => longest) THEN
        RAISE EXCEPTION 'audit_partitions_drop: % is not past every organization''s retention '
            '(% days)', to_char(p_month, 'YYYY-MM'), longest USING ERRCODE = 'restrict_violation';
    END IF;
    PERFORM pg_advisory_xact_lock({_LOCK});
    IF to_regclass(tables[1] || suffix) IS NULL THEN
        RETURN;  -- dropped already (by a job running at the same time)
    END IF;
    FOREACH t IN ARRAY tables LOOP
        IF to_regclass(t || suffix) IS NULL THEN
            RAISE EXCEPTION 'audit_partitions_drop: no partition %', t || suffix
                USING ERRCODE = 'undefined_table';
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM audit_event e WHERE e.occurred_at < lo) THEN
        RAISE EXCEPTION 'audit_partitions_drop: events older than % remain: not the oldest month',
            to_char(p_month, 'YYYY-MM') USING ERRCODE = 'restrict_violation';
    END IF;
    PERFORM set_config('lock_timeout', '{DROP_LOCK_TIMEOUT}', true);
    -- What the month held per organization, from its hourly totals (kept exact at
    -- write time), before it goes.
    EXECUTE format('SELECT array_agg(o ORDER BY o), array_agg(n ORDER BY o) FROM '
                   '(SELECT organization_id AS o, sum(count)::bigint AS n FROM %I '
                   'GROUP BY organization_id) s WHERE n > 0', 'audit_eventhourlytotal' || suffix)
        INTO orgs, counts;
    -- One statement: dropping a partition detaches it.
    EXECUTE format('DROP TABLE %I, %I, %I, %I', tables[1] || suffix, tables[2] || suffix,
                   tables[3] || suffix, tables[4] || suffix);
    -- What the per-organization purge leaves: verification then reads the sealed events
    -- before `hi` as removed by retention (audit.integrity).
    INSERT INTO audit_retentionmark (organization_id, cutoff, purged_at, events)
    SELECT u.o, hi, now(), u.n FROM unnest(orgs, counts) AS u(o, n);
    RETURN QUERY SELECT u.o, u.n FROM unnest(orgs, counts) AS u(o, n);
END
$$"""
    return [ensure, drop]


def settings_key() -> str:
    from .guard import PURGE_SETTING

    return PURGE_SETTING


def functions_install(conn=None) -> None:
    conn = conn or connection
    with conn.cursor() as cursor:
        for sql in functions_sql(settings.AUDIT_MIN_RETENTION_DAYS):
            cursor.execute(sql)


# -- the conversion (migration 0016) --------------------------------------------------


def _one(cursor, sql: str, params=()):
    cursor.execute(sql, params)
    row = cursor.fetchone()
    return row[0] if row else None


def table_partition(schema_editor, table: str, key: str) -> None:
    """Converts the plain table `table` into one partitioned by month of `key`, in
    place, whatever its columns (read from the table, not written here): rename the old
    table, create the partitioned one LIKE it, create the months its rows need, copy,
    drop the old. Its indexes and foreign keys are re-created from their definitions;
    a primary key or unique index that lacks `key` gets it appended (PostgreSQL requires
    the partition key in every unique index of a partitioned table)."""
    conn = schema_editor.connection
    run = schema_editor.execute
    with conn.cursor() as cursor:
        relkind = _one(cursor, "SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [table])
        if relkind != "r":
            return  # partitioned already (migrating forwards again), or absent
        oid = _one(cursor, "SELECT to_regclass(%s)::oid", [table])
        cursor.execute(
            "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s AND contype IN ('p', 'u', 'f') ORDER BY contype DESC",
            [oid],
        )
        constraints = cursor.fetchall()
        cursor.execute(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = %s)",
            [oid, oid],
        )
        indexes = cursor.fetchall()
        # Identity columns (the id): PostgreSQL 15 has none on partitioned tables. The
        # column takes a sequence of its own instead, which goes on where the identity
        # left off, so ids stay unique across all the partitions.
        cursor.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attidentity <> ''", [oid]
        )
        identities = [row[0] for row in cursor.fetchall()]
        nexts = {}
        for column in identities:
            sequence = _one(cursor, "SELECT pg_get_serial_sequence(%s, %s)", [table, column])
            cursor.execute(f"SELECT last_value, is_called FROM {sequence}")
            last, called = cursor.fetchone()
            nexts[column] = last + 1 if called else last
    old = f"{table}__unpartitioned"
    for name, _def in indexes:
        run(f'DROP INDEX "{name}"')
    for name, _type, _def in constraints:
        run(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
    for column in identities:
        run(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" DROP IDENTITY')
    run(f'ALTER TABLE "{table}" RENAME TO "{old}"')
    run(
        f'CREATE TABLE "{table}" (LIKE "{old}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
        f'INCLUDING STORAGE INCLUDING COMMENTS) PARTITION BY RANGE ("{key}")'
    )
    for column in identities:
        sequence = f"{table}_{column}_seq"
        run(f'CREATE SEQUENCE "{sequence}" AS bigint OWNED BY "{table}"."{column}"')
        run("SELECT setval(%s, %s, false)", [sequence, nexts[column]])
        run(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" SET DEFAULT nextval(\'{sequence}\')')
    run(f'CREATE TABLE "{table}_default" PARTITION OF "{table}" DEFAULT')
    with conn.cursor() as cursor:
        low = _one(cursor, f'SELECT min("{key}") FROM "{old}"')
        high = _one(cursor, f'SELECT max("{key}") FROM "{old}"')
    if low is not None:
        last = min(month_start(high), month_add(month_start(datetime.now(UTC)), 12))
        run("SELECT audit_partitions_ensure(%s, %s)", [month_start(low), last])
    run(f'INSERT INTO "{table}" SELECT * FROM "{old}"')
    for name, kind, definition in constraints:
        if kind in ("p", "u"):
            columns = definition[definition.index("(") + 1 : definition.rindex(")")]
            if key not in [c.strip().strip('"') for c in columns.split(",")]:
                # ids come from one sequence, so (id) stays unique on its own; PostgreSQL
                # needs the partition key in the key all the same.
                definition = definition.replace(f"({columns})", f"({columns}, {key})")
        run(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}')
    for _name, definition in indexes:
        if definition.startswith("CREATE UNIQUE") and f" {key}" not in definition:
            raise RuntimeError(f"{table}: unique index without {key}: {definition}")
        run(definition)
    run(f'DROP TABLE "{old}"')


def tables_partition(schema_editor) -> None:
    """Migration 0016: every table of PARTITIONED, then the months from the oldest time an
    event may be recorded at to PARTITION_MONTHS_AHEAD ahead, the guard and the
    functions."""
    from django.utils import timezone

    from .guard import PURGE_FUNCTIONS, append_only_install

    conn = schema_editor.connection
    if conn.vendor != "postgresql":
        return
    # The purge functions return rows of audit_event's type: they go with the old table
    # and come back with the guard.
    for function in PURGE_FUNCTIONS:
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {function}")
    functions_install(conn)
    for table, key in PARTITIONED.items():
        table_partition(schema_editor, table, key)
    now = timezone.now()
    first = month_start(now - timedelta(days=longest_retention_days(conn)))
    schema_editor.execute(
        "SELECT audit_partitions_ensure(%s, %s)",
        [first, month_add(month_start(now), PARTITION_MONTHS_AHEAD)],
    )
    append_only_install(schema_editor)
    for table in PARTITIONED:
        schema_editor.execute(f'ANALYZE "{table}"')
