"""The Integrity panel in a real browser, in its three states: nothing verified yet,
sealed and verified, and a failure naming what broke; and an event's inclusion proof,
downloaded from its page and checked offline. Screenshots: test-artifacts/screenshots/
integrity-*.png."""

import json

import pytest
from django.db import connection
from playwright.sync_api import expect

from audit.guard import append_only_install
from audit.integrity import verify_and_record
from audit.services import Actor, event_record, item
from tests.browser.conftest import screenshot, sign_in
from tests.conftest import GuardEditor, make_user, seal, verify_offline

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


def test_the_panel_shows_each_state_and_an_event_proof_checks_offline(
    page, live_server, org, admin, tmp_path
):
    carol = make_user("carol@acme.test", org, name="Carol Jones")
    for group in ("engineering", "design", "support"):
        event_record(
            organization=org,
            action="group_member_added",
            actor=Actor.for_user(admin),
            context=[item("user", carol.pk, carol.name), item("group", 1, group)],
            ip="203.0.113.9",
        )
    sign_in(page, live_server, admin.email)
    page.goto(f"{live_server.url}/o/{org.pk}/audit-log/")
    panel = page.locator("#integrity")
    expect(panel).to_contain_text("Nothing sealed yet")
    screenshot(page, "integrity-01-not-sealed")

    seal(org)
    verify_and_record(org)
    page.reload()
    expect(panel).to_contain_text("Sealed and verified up to")
    expect(panel).to_contain_text("4 events in 1 block")  # and the sign-in
    panel.scroll_into_view_if_needed()
    screenshot(page, "integrity-02-verified")

    row = page.get_by_role("row").filter(has_text="to group engineering")
    row.get_by_role("link").first.click()
    expect(page.locator("#event-integrity")).to_contain_text("Sealed in block 1")
    screenshot(page, "integrity-03-event-detail")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download inclusion proof").click()
    proof = tmp_path / "proof.json"
    download.value.save_as(proof)
    result = verify_offline("proof", str(proof), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr

    table = "audit_event"
    on = f" ON {table}" if connection.vendor == "postgresql" else ""
    try:  # a database owner changes a recorded event
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER IF EXISTS {table}_no_update{on}")
            cursor.execute(
                "UPDATE audit_event SET ip = '198.51.100.66' WHERE id = %s",
                [json.loads(proof.read_text())["data"]["event_id"]],
            )
    finally:
        append_only_install(GuardEditor())
    verify_and_record(org)
    page.goto(f"{live_server.url}/o/{org.pk}/audit-log/")
    expect(panel).to_contain_text("Integrity check failed")
    expect(panel).to_contain_text("was changed after it was recorded")
    screenshot(page, "integrity-04-failed")
