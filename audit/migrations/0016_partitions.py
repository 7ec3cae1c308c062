"""PostgreSQL: the events, their search terms and the hourly counts become tables
partitioned by month of their time (audit.partitions), converted in place whatever
their columns are, and the daily task that makes the months ahead is scheduled.
SQLite: nothing changes.

Migrating backwards leaves the tables partitioned (nothing in the schema of earlier
migrations depends on it); migrating forwards again converts only what is not."""

from django.db import migrations


def forwards(apps, schema_editor):
    from audit.partitions import tables_partition
    from audit.tasks import partitions_schedule_ensure

    if schema_editor.connection.vendor != "postgresql":
        return
    tables_partition(schema_editor)
    partitions_schedule_ensure(apps.get_model("django_q", "Schedule"))


def backwards(apps, schema_editor):
    from audit.tasks import PARTITIONS_SCHEDULE_NAME

    apps.get_model("django_q", "Schedule").objects.filter(name=PARTITIONS_SCHEDULE_NAME).delete()


class Migration(migrations.Migration):
    # Re-pointed at merge if another migration comes between.
    dependencies = [("audit", "0015_term_hash")]
    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
