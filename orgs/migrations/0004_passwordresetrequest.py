import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("orgs", "0003_email_case_insensitive")]
    operations = [
        migrations.CreateModel(
            name="PasswordResetRequest",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("email", models.CharField(max_length=254)),
                ("ip", models.GenericIPAddressField(blank=True, null=True)),
                ("requested_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                "indexes": [
                    models.Index(fields=["email", "requested_at"], name="pwreset_email_time"),
                    models.Index(fields=["ip", "requested_at"], name="pwreset_ip_time"),
                    models.Index(fields=["requested_at"], name="pwreset_time"),
                ],
            },
        ),
    ]
