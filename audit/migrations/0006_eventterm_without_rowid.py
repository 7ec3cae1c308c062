"""On SQLite, the search-term table becomes a WITHOUT ROWID table: its composite
primary key is then the table itself, so every term is written (and purged) once,
where a rowid table writes it twice (the row, then the key's automatic index).
Recording and the retention job both spend most of their time on term rows.

PostgreSQL has no such choice; nothing changes there. A later migration that makes
Django rebuild this table on SQLite (most AlterFields do) would bring back a rowid
table without the guard's triggers: tests/audit/test_append_only_db.py and
tests/audit/test_query_plans.py fail if that happens."""

from django.db import migrations

TABLE = "audit_eventterm"
COLUMNS = '"term", "occurred_at", "event_id", "organization_id"'
CREATE = (
    'CREATE TABLE "{table}" ("term" varchar(200) NOT NULL, "occurred_at" datetime NOT NULL, '
    '"event_id" bigint NOT NULL, "organization_id" bigint NOT NULL, '
    'PRIMARY KEY ("organization_id", "term", "occurred_at", "event_id")){options}'
)


def rebuild(schema_editor, options: str) -> None:
    """Copies the terms into a new table made with `options`, in key order; the old
    table goes with its triggers, which the guard then reinstalls."""
    from audit.guard import append_only_install

    if schema_editor.connection.vendor != "sqlite":
        return
    new = f"{TABLE}__rebuilt"
    for sql in (
        CREATE.format(table=new, options=options),
        f'INSERT INTO "{new}" ({COLUMNS}) SELECT {COLUMNS} FROM "{TABLE}" '
        'ORDER BY "organization_id", "term", "occurred_at", "event_id"',
        f'DROP TABLE "{TABLE}"',
        f'ALTER TABLE "{new}" RENAME TO "{TABLE}"',
    ):
        schema_editor.execute(sql, params=None)
    append_only_install(schema_editor)


def forwards(apps, schema_editor):
    rebuild(schema_editor, " WITHOUT ROWID")


def backwards(apps, schema_editor):
    rebuild(schema_editor, "")


class Migration(migrations.Migration):
    dependencies = [("audit", "0005_hourly_totals")]
    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
