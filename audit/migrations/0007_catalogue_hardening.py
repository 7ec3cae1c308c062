"""Adds the hardening actions to the catalogue (lockouts, password resets, plan
entitlement changes, held purges)."""

from importlib import import_module

from django.db import migrations

sync_catalogue = import_module("audit.migrations.0002_catalogue").sync_catalogue


class Migration(migrations.Migration):
    dependencies = [("audit", "0006_eventterm_without_rowid")]
    operations = [migrations.RunPython(sync_catalogue, migrations.RunPython.noop)]
