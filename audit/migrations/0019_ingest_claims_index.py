"""The index of the idempotency keys' claim times (0018). On PostgreSQL it is built
CONCURRENTLY, outside a transaction: products go on sending while it builds (a plain
CREATE INDEX would hold their inserts for as long as it takes, docs/deploy.md)."""

from django.db import migrations, models

INDEX, TABLE = "ingestedevent_claimed", "audit_ingestedevent"


def index_create(apps, schema_editor):
    concurrently = "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""
    schema_editor.execute(
        f'CREATE INDEX {concurrently}IF NOT EXISTS "{INDEX}" ON "{TABLE}" ("claimed_at")'
    )


def index_drop(apps, schema_editor):
    concurrently = "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""
    schema_editor.execute(f'DROP INDEX {concurrently}IF EXISTS "{INDEX}"')


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("audit", "0018_ingest_claims_purge")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddIndex(
                    model_name="ingestedevent",
                    index=models.Index(fields=["claimed_at"], name=INDEX),
                )
            ],
            database_operations=[migrations.RunPython(index_create, index_drop)],
        )
    ]
