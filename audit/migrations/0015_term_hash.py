"""Search terms by their 64-bit hash (audit.recording.term_hash) instead of their text:
fixed-width rows, and the table with its primary key about a quarter smaller (at 10M
events the terms took 5.4 GB beside 6.0 GB for the events themselves; issue 16, 6b).

The table is rebuilt with the same four columns in the same key order, the text
replaced by its hash: (organization_id, term_hash, occurred_at, event_id). The hash
is computed by the database in one INSERT ... SELECT: PostgreSQL's sha256(); SQLite
calls term_hash itself, registered on the migration's connection. The two give the
same value (tests/audit/test_term_hash.py). SQLite keeps its WITHOUT ROWID table
(migration 0006). Two terms of one event with the same hash keep one row: the search
re-checks every event it finds anyway.

The retention job's PostgreSQL function takes hashes now (audit.guard): the old one,
which took the terms' text, is dropped. Backwards, the terms' text is derived again
from the events, exactly as recording and the retention job derive it."""

import json

from django.db import migrations, models

TABLE = "audit_eventterm"
NEW = f"{TABLE}__hashed"
PG_HASH = "('x' || left(encode(sha256(convert_to(term, 'UTF8')), 'hex'), 16))::bit(64)::bigint"
OLD_PURGE_TERMS = (
    "audit_purge_terms(bigint, varchar[], timestamptz, bigint, timestamptz, bigint, bigint[])"
)
NEW_PURGE_TERMS = (
    "audit_purge_terms(bigint, bigint[], timestamptz, bigint, timestamptz, bigint, bigint[])"
)
KEY = '"organization_id", "{term}", "occurred_at", "event_id"'


def _create(vendor: str, table: str, term_type: str) -> list[str]:
    """The term table with `term_type` for its term column, keyed as EventTerm."""
    term = "term_hash" if term_type == "bigint" else "term"
    if vendor == "postgresql":
        return [
            f'CREATE TABLE "{table}" ("organization_id" bigint NOT NULL, '
            f'"{term}" {term_type} NOT NULL, "occurred_at" timestamp with time zone NOT NULL, '
            f'"event_id" bigint NOT NULL, '
            f'CONSTRAINT "{table}_pkey" PRIMARY KEY ({KEY.format(term=term)}))'
        ]
    return [
        f'CREATE TABLE "{table}" ("organization_id" bigint NOT NULL, '
        f'"{term}" {term_type} NOT NULL, "occurred_at" datetime NOT NULL, '
        f'"event_id" bigint NOT NULL, PRIMARY KEY ({KEY.format(term=term)})) WITHOUT ROWID'
    ]


def _swap(vendor: str) -> list[str]:
    """Drops the old table and gives the new one its name (and its key's name)."""
    sql = [f'DROP TABLE "{TABLE}"', f'ALTER TABLE "{NEW}" RENAME TO "{TABLE}"']
    if vendor == "postgresql":
        sql.append(f'ALTER TABLE "{TABLE}" RENAME CONSTRAINT "{NEW}_pkey" TO "{TABLE}_pkey"')
    return sql


def forwards(apps, schema_editor):
    from audit.guard import append_only_install
    from audit.recording import term_hash

    conn = schema_editor.connection
    vendor = conn.vendor
    if vendor == "sqlite":
        conn.ensure_connection()
        conn.connection.create_function("audit_term_hash", 1, term_hash, deterministic=True)
        digest = "audit_term_hash(term)"
    else:
        digest = PG_HASH
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {OLD_PURGE_TERMS}")
    statements = [
        *_create(vendor, NEW, "bigint"),
        f'INSERT INTO "{NEW}" ("organization_id", "term_hash", "occurred_at", "event_id") '
        f'SELECT "organization_id", {digest}, "occurred_at", "event_id" FROM "{TABLE}" '
        "WHERE true ON CONFLICT DO NOTHING",  # WHERE: SQLite reads ON as a join's without it
        *_swap(vendor),
    ]
    for sql in statements:
        schema_editor.execute(sql, params=None)
    append_only_install(schema_editor)


def backwards(apps, schema_editor):
    from audit.guard import append_only_install
    from audit.recording import event_terms

    conn = schema_editor.connection
    vendor = conn.vendor
    if vendor == "postgresql":
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {NEW_PURGE_TERMS}")
    for sql in _create(vendor, NEW, "varchar(200)"):
        schema_editor.execute(sql, params=None)
    keys = dict(apps.get_model("audit", "Activity").objects.values_list("pk", "key"))
    insert = (
        f'INSERT INTO "{NEW}" ("organization_id", "term", "occurred_at", "event_id") '
        "VALUES (%s, %s, %s, %s)"
    )
    # SQLite: the stored text as it is (a datetime read back would be written differently).
    when = "occurred_at" if vendor == "postgresql" else "CAST(occurred_at AS text)"
    last = 0
    with conn.cursor() as read, conn.cursor() as write:
        while True:
            read.execute(
                f"SELECT id, organization_id, {when}, action_id, actor_type, actor_name, "
                "actor_email, site_name, context, container, details FROM audit_event "
                "WHERE id > %s ORDER BY id LIMIT 5000",
                [last],
            )
            rows = read.fetchall()
            if not rows:
                break
            last = rows[-1][0]
            terms = []
            for pk, org, at, action, a_type, name, email, site, ctx, cnt, details in rows:

                def loaded(value):
                    return json.loads(value) if isinstance(value, str) else (value or [])

                derived = event_terms(
                    actor_type=a_type,
                    actor_name=name,
                    actor_email=email,
                    site_name=site,
                    items=[*loaded(ctx), *loaded(cnt)],
                    action=keys.get(action, ""),
                    details=loaded(details),
                )
                terms += [(org, term, at, pk) for term in derived]
            write.executemany(insert, terms)
    for sql in _swap(vendor):
        schema_editor.execute(sql, params=None)
    append_only_install(schema_editor)


class Migration(migrations.Migration):
    dependencies = [("audit", "0014_integrity")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(forwards, backwards, elidable=False)],
            state_operations=[
                migrations.RemoveField(model_name="eventterm", name="term"),
                migrations.AddField(
                    model_name="eventterm",
                    name="term_hash",
                    field=models.BigIntegerField(default=None),
                    preserve_default=False,
                ),
                migrations.AlterField(
                    model_name="eventterm",
                    name="pk",
                    field=models.CompositePrimaryKey(
                        "organization",
                        "term_hash",
                        "occurred_at",
                        "event",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
            ],
        )
    ]
