"""The hourly django-q2 schedule of orgs.tasks.api_keys_hourly (API key expiry).
update_or_create on a fixed name, so running the migrations again never adds a
second schedule."""

from django.db import migrations

NAME = "orgs: API key expiry, hourly"
FUNC = "orgs.tasks.api_keys_hourly"


def schedule_create(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=NAME, defaults={"func": FUNC, "schedule_type": "H", "repeats": -1}
    )


def schedule_delete(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("orgs", "0005_api_keys"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(schedule_create, schedule_delete)]
