"""Emails name one account whatever their case: existing rows are stored stripped and
lower-case, then the database refuses two emails that differ only in case."""

from collections import defaultdict

import django.db.models.functions.text
from django.db import migrations, models


def emails_normalize(apps, schema_editor):
    User = apps.get_model("orgs", "User")
    by_email = defaultdict(list)
    for pk, email in User.objects.values_list("pk", "email"):
        by_email[email.strip().lower()].append((pk, email))
    clashes = {k: v for k, v in by_email.items() if len(v) > 1}
    if clashes:
        # Two accounts for one person: which one keeps the memberships and the history
        # is a decision for staff, not for a migration.
        listed = "; ".join(" / ".join(f"#{pk} {e}" for pk, e in v) for v in clashes.values())
        raise RuntimeError(
            "Accounts whose emails differ only in case must be merged or renamed in the "
            f"Django admin before this migration: {listed}"
        )
    for normalized, [(pk, email)] in by_email.items():
        if email != normalized:
            User.objects.filter(pk=pk).update(email=normalized)


class Migration(migrations.Migration):
    dependencies = [("orgs", "0002_plans")]
    operations = [
        migrations.RunPython(emails_normalize, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="user",
            constraint=models.UniqueConstraint(
                django.db.models.functions.text.Lower("email"),
                name="user_email_ci_unique",
                violation_error_message="An account with this email already exists",
            ),
        ),
    ]
