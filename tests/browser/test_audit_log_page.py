"""The audit log page in a real browser: the demo admin signs in, picks the org,
searches an exact email, filters by an activity, changes the date range, pages to
older activities, opens a detail and copies its JSON. Screenshots of every step go to
test-artifacts/screenshots/audit-*.png."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from audit.demo import ADMIN_EMAIL, DEMO_PASSWORD, ActivityGenerator, demo_orgs_create
from audit.services import Actor, event_record, event_record_batch, item
from tests.browser.conftest import screenshot, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


@pytest.fixture
def demo():
    """The demo organizations, ~300 activities over the last 10 days in Acme
    Corporation, and a few by one known account."""
    acme = demo_orgs_create()[0]
    generator = ActivityGenerator(acme, seed=5)
    event_record_batch(organization=acme, specs=list(generator.specs(300, days=10)))
    carol = generator.accounts[0]
    for hours in (2, 30, 50):
        event_record(
            organization=acme,
            action="group_member_added",
            actor=generator.admins[0],
            context=[
                {"type": "user", "id": str(carol.pk), "name": carol.name, "email": carol.email},
                item("group", 1, "engineering"),
            ],
            occurred_at=timezone.now() - timedelta(hours=hours),
            ip="203.0.113.77",
        )
    event_record(
        organization=acme,
        action="group_created",
        actor=Actor.for_user(carol),
        context=[item("group", 9, "old-team")],
        occurred_at=timezone.now() - timedelta(days=20),
    )
    return acme, carol


def test_an_admin_searches_filters_pages_and_copies_an_event(page, live_server, demo):
    acme, carol = demo
    sign_in(page, live_server, ADMIN_EMAIL, DEMO_PASSWORD)
    expect(page.get_by_role("heading", name="Choose an organization")).to_be_visible()
    screenshot(page, "audit-01-picker")

    page.get_by_role("link", name="Acme Corporation").click()
    expect(page.get_by_role("heading", name="Audit log", exact=True)).to_be_visible()
    expect(page.locator(".event-table tbody tr")).to_have_count(50)
    expect(page.get_by_text("Activities are kept for 180 days")).to_be_visible()
    screenshot(page, "audit-02-audit-log")

    page.get_by_label("Search").fill(f"  {carol.email.upper()} ")
    page.get_by_role("button", name="Apply").click()
    rows = page.locator(".event-table tbody tr")
    expect(rows.first).to_contain_text(carol.name)
    assert "q=" in page.url
    screenshot(page, "audit-03-search-email")

    page.locator("#activity-chosen").click()
    page.get_by_label("Added user to group").check()
    page.get_by_role("button", name="Apply").click()
    expect(rows).to_have_count(3)
    expect(page.locator(".chart-head")).to_contain_text("3 activities")
    screenshot(page, "audit-04-filter-activity")

    page.get_by_label("Date range").select_option("24h")
    page.get_by_role("button", name="Apply").click()
    expect(rows).to_have_count(1)
    page.get_by_label("Date range").select_option("30d")
    page.get_by_label("Search").fill("")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator(".results-head")).to_contain_text("Last 30 days")
    screenshot(page, "audit-05-date-range")

    page.get_by_role("link", name="Clear").click()
    first_page = page.locator(".event-table tbody tr").first.inner_text()
    page.get_by_role("link", name="Older →").click()
    expect(page.get_by_role("link", name="← Newer")).to_be_visible()
    assert page.locator(".event-table tbody tr").first.inner_text() != first_page
    screenshot(page, "audit-06-older-page")

    page.locator("a.row-link").first.click()
    expect(page.get_by_role("heading", name="JSON")).to_be_visible()
    screenshot(page, "audit-07-detail")
    page.get_by_role("button", name="Copy JSON").click()
    expect(page.get_by_text("Copied to the clipboard.")).to_be_visible()
    copied = json.loads(page.evaluate("navigator.clipboard.readText()"))
    assert copied["type"] == "events"
    assert set(copied["attributes"]) >= {"time", "action", "actor", "location"}
    screenshot(page, "audit-08-copied")

    page.get_by_role("link", name="← Back to the audit log").click()
    expect(page.get_by_role("link", name="← Newer")).to_be_visible()


def test_bad_input_and_a_phone_sized_screen(browser, live_server, demo, settings):
    settings.SITE_URL = live_server.url
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    try:
        acme, carol = demo
        sign_in(page, live_server, ADMIN_EMAIL, DEMO_PASSWORD)
        page.goto(f"{live_server.url}/o/{acme.pk}/audit-log/")
        expect(page.locator(".event-table tbody tr").first).to_be_visible()
        screenshot(page, "audit-09-phone")
        page.goto(f"{live_server.url}/o/{acme.pk}/audit-log/?from=2026-13-45&q=nobody@nowhere.test")
        expect(page.get_by_role("alert")).to_contain_text("Enter a date as YYYY-MM-DD")
        screenshot(page, "audit-10-bad-input-phone")
        page.goto(f"{live_server.url}/o/{acme.pk}/audit-log/?q=nobody@nowhere.test")
        expect(page.get_by_text("No activities match “nobody@nowhere.test”")).to_be_visible()
        screenshot(page, "audit-11-no-results-phone")
    finally:
        context.close()


def test_keyboard_only_apply(page, live_server, demo):
    acme, carol = demo
    sign_in(page, live_server, ADMIN_EMAIL, DEMO_PASSWORD)
    page.goto(f"{live_server.url}/o/{acme.pk}/audit-log/")
    page.get_by_label("Search").focus()
    page.keyboard.type(carol.email)
    page.keyboard.press("Enter")
    expect(page.locator(".event-table tbody tr").first).to_contain_text(carol.name)


def test_sign_in_failure_account_page_and_a_plan_without_the_log(page, live_server, demo):
    page.goto(f"{live_server.url}/accounts/login/")
    screenshot(page, "audit-00-sign-in")
    sign_in(page, live_server, ADMIN_EMAIL, "wrong password")
    expect(page.get_by_role("alert")).to_contain_text("don't match an account")
    screenshot(page, "audit-00-sign-in-failed")

    sign_in(page, live_server, "admin@initech.test", DEMO_PASSWORD)  # Initech: no plan
    expect(page.get_by_text("The audit log isn't included in Initech's plan")).to_be_visible()
    screenshot(page, "audit-12-no-plan")

    page.get_by_role("link", name="admin@initech.test").click()
    page.get_by_label("Time zone").select_option("Australia/Sydney")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Times are now shown in Australia/Sydney.")).to_be_visible()
    screenshot(page, "audit-13-account")
