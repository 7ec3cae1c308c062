"""The hourly schedule that fails exports whose worker died on every retry, so the
requester hears of it and the Exports page stops waiting. Made once, by name."""

from django.db import migrations

NAME = "exports: fail stalled exports"


def schedule_create(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=NAME,
        defaults={"func": "exports.tasks.exports_stalled", "schedule_type": "H", "repeats": -1},
    )


def schedule_delete(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("exports", "0002_purge_schedule")]

    operations = [migrations.RunPython(schedule_create, schedule_delete)]
