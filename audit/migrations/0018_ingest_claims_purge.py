"""The ingest's idempotency keys get the time they were claimed, filled by the database
(the keys already there get this migration's time), for the retention job to remove
the keys claimed longer ago than any plan keeps events
(audit.retention.ingest_claims_purge). On PostgreSQL the column comes without a rewrite
of the table (now() is evaluated once). No index: the job walks the primary key, the ids
being in claim order."""

import django.db.models.functions.datetime
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0017_term_rows"),
        ("orgs", "0008_max_webhooks_limit"),
    ]

    operations = [
        migrations.AddField(
            model_name="ingestedevent",
            name="claimed_at",
            field=models.DateTimeField(
                db_default=django.db.models.functions.datetime.Now(), editable=False
            ),
        ),
    ]
