"""The plans of the vendor's entitlement table (DESIGN.md). Staff may edit them later."""

from django.db import migrations

PLANS = [
    dict(key="none", name="No plan", audit_log=False, admin_activity=False, retention_days=180),
    dict(key="guard-standard", name="Guard Standard", audit_log=True, admin_activity=True,
         retention_days=180),
    dict(key="guard-premium", name="Guard Premium", audit_log=True, admin_activity=True,
         user_created_activity=True, classification_activity=True, api_token_activity=True,
         export_activity=True, content_setting=True, streaming=True, max_webhooks=3,
         retention_days=180),
    dict(key="cloud-enterprise", name="Cloud Enterprise", audit_log=True, admin_activity=True,
         user_created_activity=True, user_created_product_kinds="jira,confluence",
         classification_activity=False, api_token_activity=True, export_activity=True,
         content_setting=True, streaming=True, max_webhooks=3, retention_days=180),
]


def create_plans(apps, schema_editor):
    Plan = apps.get_model("orgs", "Plan")
    for values in PLANS:
        Plan.objects.update_or_create(key=values["key"], defaults=values)


class Migration(migrations.Migration):
    dependencies = [("orgs", "0001_initial")]
    operations = [migrations.RunPython(create_plans, migrations.RunPython.noop)]
