"""The export flow as an admin clicks it: Export log -> the dialog -> Export -> the
Exports page shows Ready -> download. Under pytest the cluster runs tasks in-process,
so the export is ready by the time the page has redirected."""

import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.services import Actor, EventSpec, event_record_batch, item

from .conftest import screenshot, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


@pytest.fixture(autouse=True)
def private_storage(settings, tmp_path):
    settings.PRIVATE_STORAGE_DIR = tmp_path / "private"


@pytest.fixture
def events(org, admin):
    now = timezone.now()
    specs = [
        EventSpec(
            action="group_created" if n % 2 else "group_deleted",
            actor=Actor.for_user(admin),
            occurred_at=now - timedelta(minutes=n + 1),
            context=[item("group", n, f"team-{n}")],
            ip="203.0.113.9",
        )
        for n in range(12)
    ]
    return event_record_batch(organization=org, specs=specs).event_ids


def test_export_log_dialog_to_download(page, live_server, org, admin, events, tmp_path):
    sign_in(page, live_server, admin.email)
    page.goto(f"{live_server.url}/o/{org.pk}/audit-log/?range=24h&action=group_created")
    page.get_by_role("link", name="Export log").click()
    dialog = page.get_by_role("dialog")
    assert dialog.is_visible()
    assert "Last 24 hours" in dialog.inner_text()
    assert "Activity: Created group" in dialog.inner_text()
    assert "up to the newest 10,000 activities" in dialog.inner_text()
    screenshot(page, "exports-1-dialog")

    dialog.get_by_role("button", name="Export", exact=True).click()
    page.get_by_text("We'll email you when your export is ready.").wait_for()
    assert "range=24h" in page.url  # back to the page as it was
    screenshot(page, "exports-2-message")

    page.get_by_role("navigation").get_by_role("link", name="Exports").click()
    page.get_by_text("Ready", exact=True).wait_for()
    row = page.locator(".export-table tbody tr").first
    assert "Activity: Created group" in row.inner_text()
    assert row.locator("td.num").inner_text() == "6"
    screenshot(page, "exports-3-list")

    with page.expect_download() as info:
        row.get_by_role("link", name="Download audit log").click()
    download = info.value
    assert download.suggested_filename.startswith("audit-log-acme-")
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
    assert [int(r["Event ID"]) for r in rows] == events[1::2]
    assert {r["Activity key"] for r in rows} == {"group_created"}


def test_without_javascript_the_button_opens_the_confirmation_page(
    browser, live_server, settings, org, admin, events
):
    context = browser.new_context(
        java_script_enabled=False, viewport={"width": 1366, "height": 900}
    )
    page = context.new_page()
    try:
        sign_in(page, live_server, admin.email)
        page.goto(f"{live_server.url}/o/{org.pk}/audit-log/?range=7d")
        page.get_by_role("link", name="Export log").click()
        page.get_by_role("heading", name="Export the audit log").wait_for()
        assert "Last 7 days" in page.content()
        screenshot(page, "exports-4-confirm-no-js")
        page.get_by_role("button", name="Export", exact=True).click()
        page.get_by_text("We'll email you when your export is ready.").wait_for()
    finally:
        context.close()


def test_the_exports_page_updates_itself_while_an_export_runs(page, live_server, org, admin):
    from exports.models import ExportRequest
    from exports.services import export_file_build

    export = ExportRequest.objects.create(
        organization=org, requested_by=admin, filters={}, filters_summary=["Last 7 days"]
    )
    sign_in(page, live_server, admin.email)
    page.goto(f"{live_server.url}/o/{org.pk}/audit-log/exports/")
    page.get_by_text("Queued", exact=True).wait_for()
    screenshot(page, "exports-5-queued")
    export_file_build(export_id=export.pk)  # the worker finishes meanwhile
    page.get_by_text("Ready", exact=True).wait_for(timeout=10_000)
    assert page.get_by_role("link", name="Download audit log").is_visible()


def test_an_expired_link_offers_export_again(page, live_server, org, admin, events):
    from exports.models import ExportRequest

    now = timezone.now()
    export = ExportRequest.objects.create(
        organization=org,
        requested_by=admin,
        status="ready",
        filters={"range": "7d"},
        filters_summary=["Last 7 days", "All activities"],
        finished_at=now - timedelta(days=2),
        expires_at=now - timedelta(days=1),
        row_count=12,
    )
    sign_in(page, live_server, admin.email)
    page.goto(f"{live_server.url}/o/{org.pk}/audit-log/exports/{export.pk}/download/")
    page.get_by_role("heading", name="This link has expired").wait_for()
    screenshot(page, "exports-6-expired")
    page.get_by_role("button", name="Export again").click()
    page.get_by_text("We'll email you when your export is ready.").wait_for()
    page.get_by_text("Ready", exact=True).wait_for()
    screenshot(page, "exports-7-exported-again")
