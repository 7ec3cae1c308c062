"""Copies audit/catalogue.py into the Activity table. A later migration that adds
actions runs the same function again: it creates new keys and updates labels."""

from django.db import migrations


def sync_catalogue(apps, schema_editor):
    from audit.catalogue import ACTIONS

    Activity = apps.get_model("audit", "Activity")
    for position, action in enumerate(ACTIONS):
        Activity.objects.update_or_create(
            key=action.key,
            defaults=dict(label=action.label, category=action.category,
                          user_created=action.user_created, template=action.template,
                          position=position),
        )


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]
    operations = [migrations.RunPython(sync_catalogue, migrations.RunPython.noop)]
