"""Streams (README, "Streaming"): the destinations and their delivery log, the stream
actions added to the catalogue, and the every-minute schedule that starts a delivery
loop (audit.tasks.streams_deliver)."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

SCHEDULE_NAME = "audit: deliver streams"


def sync(apps, schema_editor):
    from audit.guard import catalogue_sync

    catalogue_sync(apps, schema_editor)


def schedule_create(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": "audit.tasks.streams_deliver",
            "schedule_type": "I",  # every `minutes`
            "minutes": 1,
            "repeats": -1,
        },
    )


def schedule_delete(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=SCHEDULE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0012_ingested_event"),
        ("orgs", "0008_max_webhooks_limit"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [
        migrations.CreateModel(
            name="Stream",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=100)),
                ("url", models.URLField(max_length=500, verbose_name="destination URL")),
                ("authorization", models.CharField(blank=True, max_length=1000)),
                ("categories", models.JSONField(blank=True, default=list)),
                ("product_kinds", models.JSONField(blank=True, default=list)),
                ("enabled", models.BooleanField(default=True)),
                ("paused_reason", models.CharField(blank=True, max_length=300)),
                ("secret", models.CharField(max_length=80)),
                ("previous_secret", models.CharField(blank=True, max_length=80)),
                ("previous_secret_until", models.DateTimeField(blank=True, null=True)),
                ("cursor_txid", models.BigIntegerField(default=0)),
                ("cursor_id", models.BigIntegerField(default=0)),
                ("failures", models.PositiveIntegerField(default=0)),
                ("first_failure_at", models.DateTimeField(blank=True, null=True)),
                ("next_attempt_at", models.DateTimeField(blank=True, null=True)),
                ("last_error", models.CharField(blank=True, max_length=300)),
                ("last_success_at", models.DateTimeField(blank=True, null=True)),
                ("lease_owner", models.CharField(blank=True, max_length=64)),
                ("lease_until", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "organization",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="streams",
                        to="orgs.organization",
                    ),
                ),
            ],
            options={
                "ordering": ["organization", "id"],
            },
        ),
        migrations.CreateModel(
            name="StreamAttempt",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("started_at", models.DateTimeField()),
                ("batch_id", models.CharField(max_length=40)),
                ("status_code", models.PositiveSmallIntegerField(blank=True, null=True)),
                ("error", models.CharField(blank=True, max_length=300)),
                ("batch_size", models.PositiveIntegerField(default=0)),
                ("latency_ms", models.PositiveIntegerField(default=0)),
                ("first_event_id", models.BigIntegerField(blank=True, null=True)),
                ("last_event_id", models.BigIntegerField(blank=True, null=True)),
                ("is_test", models.BooleanField(default=False)),
                (
                    "stream",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="attempts",
                        to="audit.stream",
                    ),
                ),
            ],
            options={
                "ordering": ["-id"],
                "indexes": [models.Index(fields=["stream", "id"], name="streamattempt_stream_id")],
            },
        ),
        migrations.RunPython(sync, migrations.RunPython.noop),
        migrations.RunPython(schedule_create, schedule_delete),
    ]
