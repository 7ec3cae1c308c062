"""Each row of the entitlement table (DESIGN.md) decides what is recorded."""

import pytest

from audit.catalogue import ACTIONS
from audit.models import Event
from audit.services import Actor, event_record, item
from orgs.models import Organization, Plan, Product, Site

# category -> {plan key: recorded?}
ENTITLEMENTS = {
    "site_users": {
        "none": False,
        "guard-standard": True,
        "guard-premium": True,
        "cloud-enterprise": True,
    },
    "groups": {
        "none": False,
        "guard-standard": True,
        "guard-premium": True,
        "cloud-enterprise": True,
    },
    "organization": {
        "none": False,
        "guard-standard": True,
        "guard-premium": True,
        "cloud-enterprise": True,
    },
    "security_policies": {
        "none": False,
        "guard-standard": True,
        "guard-premium": True,
        "cloud-enterprise": True,
    },
    "user_accounts": {
        "none": False,
        "guard-standard": True,
        "guard-premium": True,
        "cloud-enterprise": True,
    },
    "audit_log": {
        "none": False,
        "guard-standard": True,
        "guard-premium": True,
        "cloud-enterprise": True,
    },
    "user_created": {
        "none": False,
        "guard-standard": False,
        "guard-premium": True,
        "cloud-enterprise": True,
    },
    "classification": {
        "none": False,
        "guard-standard": False,
        "guard-premium": True,
        "cloud-enterprise": False,
    },
    "api_tokens": {
        "none": False,
        "guard-standard": False,
        "guard-premium": True,
        "cloud-enterprise": True,
    },
    "exports": {
        "none": False,
        "guard-standard": False,
        "guard-premium": True,
        "cloud-enterprise": True,
    },
}
CASES = [(cat, plan, want) for cat, plans in ENTITLEMENTS.items() for plan, want in plans.items()]


@pytest.mark.parametrize(("category", "plan_key", "recorded"), CASES)
def test_plan_decides_what_is_recorded(db, category, plan_key, recorded):
    org = Organization.objects.create(name="Org", plan=Plan.objects.get(key=plan_key))
    product = Product.objects.create(
        site=Site.objects.create(organization=org, name="s.example"), kind="confluence"
    )
    action = next(a for a in ACTIONS if a.category == category)
    result = event_record(
        organization=org, action=action.key, product=product, context=[item("page", 1, "A page")]
    )
    assert result.recorded is recorded
    assert Event.objects.filter(organization=org).count() == (1 if recorded else 0)
    if not recorded:
        assert Plan.objects.get(key=plan_key).name in result.reason


def test_no_plan_explains_the_audit_log_is_not_included(db):
    org = Organization.objects.create(name="Org", plan=Plan.objects.get(key="none"))
    result = event_record(organization=org, action="group_created")
    assert result.reason == "The No plan plan does not include the organization audit log."


def test_cloud_enterprise_records_user_created_activity_only_for_jira_and_confluence(db):
    org = Organization.objects.create(name="Org", plan=Plan.objects.get(key="cloud-enterprise"))
    site = Site.objects.create(organization=org, name="s.example")
    bitbucket = Product.objects.create(site=site, kind="bitbucket")
    jira = Product.objects.create(site=site, kind="jira")
    refused = event_record(
        organization=org, action="page_viewed", product=bitbucket, actor=Actor(name="x")
    )
    assert not refused.recorded and "only for jira, confluence, not Bitbucket" in refused.reason
    assert event_record(organization=org, action="issue_viewed", product=jira).recorded


def test_staff_edits_to_a_plan_take_effect_at_once(db):
    org = Organization.objects.create(name="Org", plan=Plan.objects.get(key="guard-standard"))
    assert not event_record(organization=org, action="api_token_used").recorded
    Plan.objects.filter(key="guard-standard").update(api_token_activity=True)
    org.refresh_from_db()
    assert event_record(organization=org, action="api_token_used").recorded
