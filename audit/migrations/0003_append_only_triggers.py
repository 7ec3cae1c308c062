"""Append-only enforced by the database: triggers on audit_event and audit_eventterm
refuse UPDATE, DELETE (and TRUNCATE on PostgreSQL) except inside the retention job.
The SQL and how the job passes the guard are in audit/retention.py."""

from django.db import migrations


def install(apps, schema_editor):
    from audit.guard import append_only_install

    append_only_install(schema_editor)


def uninstall(apps, schema_editor):
    from audit.guard import append_only_uninstall

    append_only_uninstall(schema_editor)


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_catalogue")]
    operations = [migrations.RunPython(install, uninstall)]
