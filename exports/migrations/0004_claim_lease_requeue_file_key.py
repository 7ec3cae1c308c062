"""The running builder's lease, the re-enqueue count, the email claim and a random
file key per export; the stalled-exports schedule runs every 5 minutes under a name
that says what it now does (re-enqueue lost tasks, retry emails, fail stalled ones)."""

import uuid

import django.utils.timezone
from django.db import migrations, models

OLD_NAME = "exports: fail stalled exports"
NAME = "exports: recover stalled exports"


def file_keys_fill(apps, schema_editor):
    ExportRequest = apps.get_model("exports", "ExportRequest")
    for export in ExportRequest.objects.filter(file_key__isnull=True).only("pk"):
        ExportRequest.objects.filter(pk=export.pk).update(file_key=uuid.uuid4())


def schedule_every_5_minutes(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.filter(name=OLD_NAME).delete()
    Schedule.objects.update_or_create(
        name=NAME,
        defaults={
            "func": "exports.tasks.exports_stalled",
            "schedule_type": "I",
            "minutes": 5,
            "repeats": -1,
        },
    )


def schedule_hourly(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.filter(name=NAME).delete()
    Schedule.objects.update_or_create(
        name=OLD_NAME,
        defaults={"func": "exports.tasks.exports_stalled", "schedule_type": "H", "repeats": -1},
    )


class Migration(migrations.Migration):
    dependencies = [("exports", "0003_stalled_schedule")]

    operations = [
        migrations.AddField(
            model_name="exportrequest",
            name="enqueued_at",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.AddField(
            model_name="exportrequest",
            name="requeues",
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="exportrequest",
            name="claim_token",
            field=models.CharField(blank=True, max_length=32),
        ),
        migrations.AddField(
            model_name="exportrequest",
            name="lease_expires_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="exportrequest",
            name="email_claimed_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="exportrequest",
            name="email_attempts",
            field=models.PositiveSmallIntegerField(default=0),
        ),
        # A callable default on AddField gives every existing row the same value:
        # add it empty, fill one per row, then make it unique and required.
        migrations.AddField(
            model_name="exportrequest",
            name="file_key",
            field=models.UUIDField(null=True, editable=False),
        ),
        migrations.RunPython(file_keys_fill, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="exportrequest",
            name="file_key",
            field=models.UUIDField(default=uuid.uuid4, editable=False, unique=True),
        ),
        migrations.RunPython(schedule_every_5_minutes, schedule_hourly),
    ]
