"""The daily retention job's django-q2 schedule. A migration runs once per database,
whatever the number of web or worker processes; running it again (migrating back and
forth) finds the schedule by name and leaves one."""

from django.db import migrations


def schedule_create(apps, schema_editor):
    from audit.tasks import retention_schedule_ensure

    retention_schedule_ensure(apps.get_model("django_q", "Schedule"))


def schedule_delete(apps, schema_editor):
    from audit.tasks import SCHEDULE_NAME

    apps.get_model("django_q", "Schedule").objects.filter(name=SCHEDULE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0003_append_only_triggers"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]
    operations = [migrations.RunPython(schedule_create, schedule_delete)]
