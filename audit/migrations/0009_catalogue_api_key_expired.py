"""Adds audit_log_api_key_expired to the catalogue."""

from django.db import migrations


def sync(apps, schema_editor):
    from audit.guard import catalogue_sync

    catalogue_sync(apps, schema_editor)


class Migration(migrations.Migration):
    dependencies = [("audit", "0008_guard_counts_catalogue_roles")]
    operations = [migrations.RunPython(sync, migrations.RunPython.noop)]
