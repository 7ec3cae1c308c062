"""Adds the hardening actions to the catalogue (lockouts, password resets, plan
entitlement changes, held purges). The catalogue is guarded from migration 0003 on:
audit.guard.catalogue_sync opens the guard for this migration's transaction."""

from django.db import migrations


def sync(apps, schema_editor):
    from audit.guard import catalogue_sync

    catalogue_sync(apps, schema_editor)


class Migration(migrations.Migration):
    dependencies = [("audit", "0006_eventterm_without_rowid")]
    operations = [migrations.RunPython(sync, migrations.RunPython.noop)]
