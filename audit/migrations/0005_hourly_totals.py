"""Per-hour totals for the unfiltered chart, an index for the Activity-filtered one,
and the totals of the events already recorded."""

import django.db.models.deletion
from django.db import migrations, models


def backfill(apps, schema_editor):
    counts = apps.get_model("audit", "EventHourlyCount")._meta.db_table
    totals = apps.get_model("audit", "EventHourlyTotal")._meta.db_table
    schema_editor.execute(
        f"INSERT INTO {totals} (organization_id, hour, count) "
        f"SELECT organization_id, hour, SUM(count) FROM {counts} GROUP BY organization_id, hour"
    )


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0004_retention_schedule"),
        ("orgs", "0002_plans"),
    ]

    operations = [
        migrations.CreateModel(
            name="EventHourlyTotal",
            fields=[
                ("pk", models.CompositePrimaryKey("organization", "hour", blank=True, editable=False,
                                                  primary_key=True, serialize=False)),
                ("organization", models.ForeignKey(db_index=False,
                                                   on_delete=django.db.models.deletion.DO_NOTHING,
                                                   related_name="+", to="orgs.organization")),
                ("hour", models.DateTimeField()),
                ("count", models.PositiveIntegerField(default=0)),
            ],
        ),
        migrations.AddIndex(
            model_name="eventhourlycount",
            index=models.Index(fields=["organization", "action", "hour", "count"],
                               name="hourly_org_action_hour"),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
