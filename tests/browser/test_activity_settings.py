"""An admin turns Jira's user-created content to Not stored and sees the audit log
record later Jira activity without the issue key; a plan without the setting shows
the controls disabled."""

import pytest
from playwright.sync_api import expect

from audit.services import Actor, event_record, item
from orgs.models import Membership, Organization, Product, Site
from tests.browser.conftest import screenshot, sign_in
from tests.conftest import make_user, plan

# Transactional (live_server), restoring the plans the migrations made afterwards.
pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

ISSUE_KEY = "HR-1234"


def an_org(name: str, plan_key: str, site_name: str):
    org = Organization.objects.create(name=name, plan=plan(plan_key))
    site = Site.objects.create(organization=org, name=site_name)
    jira = Product.objects.create(site=site, kind=Product.Kind.JIRA)
    confluence = Product.objects.create(site=site, kind=Product.Kind.CONFLUENCE)
    return org, jira, confluence


def edit_issue(org, user, jira, key: str) -> None:
    result = event_record(
        organization=org,
        action="issue_edited",
        actor=Actor.for_user(user),
        product=jira,
        context=[item("issue", 99, key)],
        ip="203.0.113.5",
    )
    assert result.recorded, result.reason


def test_not_stored_hides_the_issue_key_in_the_audit_log(page, live_server):
    org, jira, _ = an_org("Acme", "guard-premium", "acme.example.net")
    admin = make_user("alice@acme.test", org, Membership.Role.ADMIN, name="Alice Admin")
    edit_issue(org, admin, jira, "HR-1")  # before the change: keeps its key

    sign_in(page, live_server, admin.email)
    page.goto(f"{live_server.url}/o/{org.pk}/audit-log/settings/")
    expect(page.get_by_role("heading", name="Activity settings")).to_be_visible()
    jira_form = page.get_by_role("group", name="Jira on acme.example.net")
    expect(jira_form.get_by_label("Stored", exact=True)).to_be_checked()
    expect(page.get_by_role("heading", name="What your plan includes")).to_be_visible()
    screenshot(page, "settings-1-stored")

    jira_form.get_by_label("Not stored", exact=True).check()
    jira_form.get_by_role("button", name="Save").click()
    expect(page.locator(".messages")).to_contain_text(
        "User-created activity for Jira on acme.example.net is now Not stored"
    )
    jira_form = page.get_by_role("group", name="Jira on acme.example.net")
    expect(jira_form.get_by_label("Not stored", exact=True)).to_be_checked()
    confluence_form = page.get_by_role("group", name="Confluence on acme.example.net")
    expect(confluence_form.get_by_label("Stored", exact=True)).to_be_checked()
    screenshot(page, "settings-2-saved-not-stored")

    edit_issue(org, admin, jira, ISSUE_KEY)
    page.goto(f"{live_server.url}/o/{org.pk}/audit-log/")
    table = page.get_by_role("table", name="Activities")
    expect(table).to_contain_text("Alice Admin edited an issue")
    expect(table).not_to_contain_text(ISSUE_KEY)
    expect(table).to_contain_text("Alice Admin edited HR-1")  # recorded before: unchanged
    expect(table).to_contain_text(
        "Alice Admin changed user-created activity for Jira from Stored to Not stored"
    )
    screenshot(page, "settings-3-audit-log")


def test_a_plan_without_the_setting_explains_and_disables(page, live_server):
    org, _, _ = an_org("Globex", "guard-standard", "globex.example.net")
    admin = make_user("gary@globex.test", org, Membership.Role.ADMIN, name="Gary Admin")
    sign_in(page, live_server, admin.email)
    page.goto(f"{live_server.url}/o/{org.pk}/audit-log/settings/")
    expect(page.get_by_role("note")).to_contain_text(
        "The Guard Standard plan does not include user-created activity settings."
    )
    jira_form = page.get_by_role("group", name="Jira on globex.example.net")
    expect(jira_form.get_by_role("button", name="Save")).to_be_disabled()
    expect(jira_form.get_by_label("Not stored", exact=True)).to_be_disabled()
    screenshot(page, "settings-4-plan-without-setting")


def test_staff_see_the_settings_inline_on_the_organization(page, live_server):
    org, jira, _ = an_org("Acme", "guard-premium", "acme.example.net")
    from audit.models import ActivitySetting
    from orgs.models import User

    ActivitySetting.objects.create(organization=org, product=jira, content_stored=False)
    User.objects.create_superuser("staff@acme.test", "pw-for-tests", name="Sam Staff")
    sign_in(page, live_server, "staff@acme.test")
    page.goto(f"{live_server.url}/staff/orgs/organization/{org.pk}/change/")
    inline = page.locator("#activity_settings-group")
    expect(inline).to_contain_text("Jira on acme.example.net")
    expect(inline.get_by_role("checkbox")).not_to_be_checked()
    inline.scroll_into_view_if_needed()
    screenshot(page, "settings-5-django-admin-inline")
