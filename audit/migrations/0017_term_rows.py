"""Search terms as rows of many events: per term, organization and UTC day, up to 128
events of one row (`event_ids`, oldest first), keyed by the newest (organization,
term_hash, occurred_at, event_id), with `oldest_at` the oldest's time (issue 16, 6b).

One row per term and event cost PostgreSQL ~104 bytes (56 of them its own headers, the
row being stored twice: the table and its key) beside ~140 as text: 75% after 0015. A
row of many events pays those headers once. Existing terms are grouped here as
audit.recording.term_rows groups a recording batch's (all of a day's at once, as
if one batch had recorded them).

PostgreSQL: the grouped rows are built in a plain table, the partitioned term table is
dropped, and the new one takes its name, its key and its monthly partitions
(audit.partitions.table_partition, as 0016 did). SQLite: a WITHOUT ROWID table, the
ids as a JSON array. The retention job's PostgreSQL function takes the batch's time
span without ids (audit.guard): the old one is dropped.

Backwards, one row per term and event again, each with its event's time read from the
event (ids whose event is gone are left out)."""

from datetime import timedelta

from django.db import migrations, models

from audit.models import EventIds

TABLE = "audit_eventterm"
NEW = f"{TABLE}__rebuilt"
ROW_EVENTS = 128  # audit.recording.TERM_ROW_EVENTS when this was written
KEY = '"organization_id", "term_hash", "occurred_at", "event_id"'
OLD_PURGE_TERMS = (
    "audit_purge_terms(bigint, bigint[], timestamptz, bigint, timestamptz, bigint, bigint[])"
)
NEW_PURGE_TERMS = "audit_purge_terms(bigint, bigint[], timestamptz, timestamptz, bigint[])"

_PG_GROUPED = f"""
INSERT INTO "{NEW}" SELECT organization_id, term_hash, max(occurred_at),
    (array_agg(event_id ORDER BY occurred_at DESC, event_id DESC))[1],
    CASE WHEN count(*) > 1 THEN min(occurred_at) END,
    CASE WHEN count(*) > 1 THEN array_agg(event_id ORDER BY occurred_at, event_id) END
FROM (SELECT *, (occurred_at AT TIME ZONE 'UTC')::date AS day, (row_number() OVER (
        PARTITION BY organization_id, term_hash, (occurred_at AT TIME ZONE 'UTC')::date
        ORDER BY occurred_at, event_id) - 1) / {ROW_EVENTS} AS chunk
      FROM "{TABLE}") AS t
GROUP BY organization_id, term_hash, day, chunk
"""
_PG_UNGROUPED = f"""
INSERT INTO "{NEW}" SELECT t.organization_id, t.term_hash, e.occurred_at, e.id
FROM "{TABLE}" t CROSS JOIN unnest(coalesce(t.event_ids, ARRAY[t.event_id])) AS u(id)
JOIN audit_event e ON e.id = u.id AND e.occurred_at >= coalesce(t.oldest_at, t.occurred_at)
    AND e.occurred_at <= t.occurred_at
ON CONFLICT DO NOTHING
"""
_SQLITE_UNGROUPED = f"""
INSERT INTO "{NEW}" SELECT t.organization_id, t.term_hash, e.occurred_at, e.id
FROM "{TABLE}" t, json_each(coalesce(t.event_ids, json_array(t.event_id))) u
JOIN audit_event e ON e.id = u.value
WHERE true ON CONFLICT DO NOTHING
"""


def _create(vendor: str, grouped: bool) -> str:
    time = "timestamp with time zone" if vendor == "postgresql" else "datetime"
    columns = [
        '"organization_id" bigint NOT NULL',
        '"term_hash" bigint NOT NULL',
        f'"occurred_at" {time} NOT NULL',
        '"event_id" bigint NOT NULL',
    ]
    if grouped:
        ids = "bigint[]" if vendor == "postgresql" else "text"
        columns += [f'"oldest_at" {time}', f'"event_ids" {ids}']  # NULL: a row of one
    if vendor == "postgresql":  # keyed once filled: faster, and the key is built compact
        return f'CREATE TABLE "{NEW}" ({", ".join(columns)})'
    return f'CREATE TABLE "{NEW}" ({", ".join(columns)}, PRIMARY KEY ({KEY})) WITHOUT ROWID'


def _sqlite_grouped(schema_editor) -> None:
    """SQLite: the rows grouped here (its aggregates do not promise an order)."""
    rows, group, last = [], [], None

    def flush():
        for start in range(0, len(group), ROW_EVENTS):
            chunk = group[start : start + ROW_EVENTS]
            if len(chunk) == 1:  # its time and id say it all (EventTerm)
                rows.append((*last[:2], *chunk[0], None, None))
                continue
            ids = "[" + ",".join(str(pk) for _, pk in chunk) + "]"
            rows.append((*last[:2], chunk[-1][0], chunk[-1][1], chunk[0][0], ids))

    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            f'SELECT organization_id, term_hash, CAST(occurred_at AS text), event_id FROM "{TABLE}" '
            "ORDER BY organization_id, term_hash, occurred_at, event_id"
        )
        for org, digest, at, pk in cursor.fetchall():
            key = (org, digest, at[:10])  # the UTC day of Django's "YYYY-MM-DD HH:MM:SS"
            if key != last:
                flush()
                group, last = [], key
            group.append((at, pk))
        flush()
        cursor.executemany(f'INSERT INTO "{NEW}" VALUES (%s, %s, %s, %s, %s, %s)', rows)


def _swap(schema_editor) -> None:
    """The rebuilt table takes the term table's name, key and (PostgreSQL) partitions."""
    from audit.partitions import (
        PARTITION_MONTHS_AHEAD,
        is_partitioned,
        longest_retention_days,
        month_add,
        month_start,
        table_partition,
    )

    conn, run = schema_editor.connection, schema_editor.execute
    run(f'DROP TABLE "{TABLE}"')
    run(f'ALTER TABLE "{NEW}" RENAME TO "{TABLE}"')
    if conn.vendor != "postgresql":
        return
    run(f'ALTER TABLE "{TABLE}" ADD CONSTRAINT "{TABLE}_pkey" PRIMARY KEY ({KEY})')
    if is_partitioned(conn):
        from django.utils import timezone

        table_partition(schema_editor, TABLE, "occurred_at")
        now = timezone.now()
        first = month_start(now - timedelta(days=longest_retention_days(conn)))
        run(
            "SELECT audit_partitions_ensure(%s, %s)",
            [first, month_add(month_start(now), PARTITION_MONTHS_AHEAD)],
        )
    run(f'ANALYZE "{TABLE}"')


def forwards(apps, schema_editor):
    from audit.guard import append_only_install

    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {OLD_PURGE_TERMS}")
    schema_editor.execute(_create(vendor, grouped=True))
    if vendor == "postgresql":
        schema_editor.execute(_PG_GROUPED)
    else:
        _sqlite_grouped(schema_editor)
    _swap(schema_editor)
    append_only_install(schema_editor)


def backwards(apps, schema_editor):
    from audit.guard import append_only_install

    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {NEW_PURGE_TERMS}")
    schema_editor.execute(_create(vendor, grouped=False))
    schema_editor.execute(_PG_UNGROUPED if vendor == "postgresql" else _SQLITE_UNGROUPED)
    _swap(schema_editor)
    append_only_install(schema_editor)


class Migration(migrations.Migration):
    dependencies = [("audit", "0016_partitions")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(forwards, backwards, elidable=False)],
            state_operations=[
                migrations.AddField(
                    model_name="eventterm",
                    name="oldest_at",
                    field=models.DateTimeField(null=True),
                ),
                migrations.AddField(
                    model_name="eventterm",
                    name="event_ids",
                    field=EventIds(null=True),
                ),
            ],
        )
    ]
