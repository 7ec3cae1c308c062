"""Tamper evidence: each event's hash (a nullable column: events recorded before this
migration are hashed from their row when first sealed, see audit.integrity), the
blocks, retention marks and verification results, the append-only guard on blocks
and marks, two catalogue actions, and the sealing and daily verification schedules.

Depends on 0012; migration 0013 (streams) is being added on another branch and the
dependency is re-pointed when both are merged."""

import django.db.models.deletion
from django.db import migrations, models


def hash_column_add(apps, schema_editor):
    # ADD COLUMN, not Django's AddField: on SQLite that rebuilds the table (a copy of
    # every event) and drops its triggers.
    kind = "bytea" if schema_editor.connection.vendor == "postgresql" else "blob"
    schema_editor.execute(f"ALTER TABLE audit_event ADD COLUMN hash {kind} NULL")


def hash_column_drop(apps, schema_editor):
    schema_editor.execute("ALTER TABLE audit_event DROP COLUMN hash")


def guard_and_catalogue(apps, schema_editor):
    from audit.guard import append_only_install, catalogue_sync

    append_only_install(schema_editor)
    catalogue_sync(apps, schema_editor)


def schedules_create(apps, schema_editor):
    from audit.tasks import integrity_schedules_ensure

    integrity_schedules_ensure(apps.get_model("django_q", "Schedule"))


def schedules_delete(apps, schema_editor):
    from audit.tasks import SEAL_SCHEDULE_NAME, VERIFY_SCHEDULE_NAME

    apps.get_model("django_q", "Schedule").objects.filter(
        name__in=[SEAL_SCHEDULE_NAME, VERIFY_SCHEDULE_NAME]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0013_streams"),
        ("orgs", "0008_max_webhooks_limit"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(hash_column_add, hash_column_drop)],
            state_operations=[
                migrations.AddField(
                    model_name="event",
                    name="hash",
                    field=models.BinaryField(blank=True, editable=False, max_length=32, null=True),
                )
            ],
        ),
        migrations.CreateModel(
            name="Block",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("sequence", models.PositiveBigIntegerField()),
                ("first_txid", models.BigIntegerField(null=True)),
                ("first_event_id", models.BigIntegerField()),
                ("last_txid", models.BigIntegerField(null=True)),
                ("last_event_id", models.BigIntegerField()),
                ("event_count", models.PositiveIntegerField()),
                ("total_events", models.PositiveBigIntegerField()),
                ("merkle_root", models.CharField(max_length=64)),
                ("previous_hash", models.CharField(max_length=64)),
                ("block_hash", models.CharField(max_length=64)),
                ("key_id", models.CharField(max_length=16)),
                ("signature", models.CharField(max_length=100)),
                ("sealed_at", models.DateTimeField()),
                ("leaves", models.BinaryField()),
                ("organization", models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name="+", to="orgs.organization")),
            ],
            options={
                "constraints": [models.UniqueConstraint(fields=("organization", "sequence"), name="block_org_sequence")],
            },
        ),
        migrations.CreateModel(
            name="IntegrityCheck",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("checked_at", models.DateTimeField()),
                ("ok", models.BooleanField()),
                ("blocks", models.PositiveBigIntegerField(default=0)),
                ("events", models.PositiveBigIntegerField(default=0)),
                ("sealed_until", models.DateTimeField(null=True)),
                ("problem", models.TextField(blank=True)),
                ("retention_note", models.TextField(blank=True)),
                ("organization", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+", to="orgs.organization")),
            ],
            options={
                "indexes": [models.Index(fields=["organization", "-checked_at"], name="check_org_time")],
            },
        ),
        migrations.CreateModel(
            name="RetentionMark",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("cutoff", models.DateTimeField()),
                ("purged_at", models.DateTimeField()),
                ("events", models.PositiveBigIntegerField()),
                ("organization", models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name="+", to="orgs.organization")),
            ],
            options={
                "indexes": [models.Index(fields=["organization", "cutoff"], name="retentionmark_org")],
            },
        ),
        migrations.RunPython(guard_and_catalogue, migrations.RunPython.noop),
        migrations.RunPython(schedules_create, schedules_delete),
    ]
