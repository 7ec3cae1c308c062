"""The events stream's order: on PostgreSQL each event carries the id of the transaction
that recorded it (a column default, so INSERT and COPY fill it without naming it), with
an index (organization, txid, id); on SQLite, where one writer commits at a time and ids
are handed out in commit order, an index (organization, id). Adding a column changes no
trigger (ALTER TABLE ... ADD COLUMN does not rebuild the table)."""

from django.db import migrations, models


def forwards(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(
            "ALTER TABLE audit_event ADD COLUMN txid bigint "
            "DEFAULT (pg_current_xact_id()::text::bigint)"
        )
        schema_editor.execute(
            "CREATE INDEX event_org_stream ON audit_event (organization_id, txid, id)"
        )
    else:
        schema_editor.execute("ALTER TABLE audit_event ADD COLUMN txid bigint NULL")
        schema_editor.execute("CREATE INDEX event_org_stream ON audit_event (organization_id, id)")


def backwards(apps, schema_editor):
    schema_editor.execute("DROP INDEX IF EXISTS event_org_stream")
    schema_editor.execute("ALTER TABLE audit_event DROP COLUMN txid")


class Migration(migrations.Migration):
    dependencies = [("audit", "0010_event_actor_type_anonymous")]
    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(forwards, backwards)],
            state_operations=[
                migrations.AddField(
                    model_name="event",
                    name="txid",
                    field=models.BigIntegerField(blank=True, editable=False, null=True),
                )
            ],
        )
    ]
