"""The append-only guard grows: the hourly counts (an UPDATE may only add) and the
activity catalogue are guarded too; on PostgreSQL the guard opens only for the tables'
owner, and the retention job deletes through the owner's SECURITY DEFINER functions
(audit/guard.py), so the application role (DATABASE_APP_ROLE) cannot open it."""

from django.db import migrations


def install(apps, schema_editor):
    from audit.guard import append_only_install

    append_only_install(schema_editor)


class Migration(migrations.Migration):
    dependencies = [("audit", "0007_catalogue_hardening")]
    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
