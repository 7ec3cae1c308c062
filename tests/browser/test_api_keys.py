"""API keys as an org admin clicks through them: the tab, Create key, the key shown
once and copied, Revoke after a confirmation."""

import pytest

from orgs.models import ApiKey
from orgs.services import ChangeAuthor, api_key_authenticate, api_key_create

from .conftest import screenshot, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


def test_create_copy_and_revoke_a_key(page, live_server, org, admin):
    earlier, _ = api_key_create(organization=org, name="Old backup", days=7, by=ChangeAuthor(admin))
    api_key_authenticate(secret=_, ip="198.51.100.4")
    sign_in(page, live_server, admin.email)
    page.goto(f"{live_server.url}/o/{org.pk}/audit-log/")
    page.get_by_role("navigation").get_by_role("link", name="API keys").click()
    page.get_by_role("heading", name="API keys", level=1).wait_for()
    assert page.get_by_role("link", name="API documentation").get_attribute("href") == "/api/docs"
    screenshot(page, "api-keys-1-list")

    # A bad name is a form error, not a 500, and creates nothing.
    page.get_by_role("button", name="Create key").click()
    page.get_by_text("Give the key a name.").wait_for()
    screenshot(page, "api-keys-2-form-error")
    assert ApiKey.objects.count() == 1

    page.get_by_label("Name").fill("SIEM export")
    page.get_by_label("Expires after").select_option("90")
    page.get_by_role("button", name="Create key").click()
    secret_box = page.locator("#api-key-secret")
    secret_box.wait_for()
    secret = secret_box.inner_text().strip()
    assert secret.startswith("alk_")
    page.get_by_role("button", name="Copy key").click()
    page.get_by_text("Copied to the clipboard.").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    screenshot(page, "api-keys-3-created")
    key = ApiKey.objects.get(name="SIEM export")
    assert api_key_authenticate(secret=secret, ip="203.0.113.9").pk == key.pk

    page.reload()
    assert page.locator("#api-key-secret").count() == 0
    assert secret not in page.content()

    # Dismissing the confirmation revokes nothing; accepting it does.
    row = page.locator(f"#api-key-{key.pk}")
    page.once("dialog", lambda dialog: dialog.dismiss())
    row.get_by_role("button", name="Revoke").click()
    page.wait_for_timeout(300)
    key.refresh_from_db()
    assert key.revoked_at is None
    messages = []
    page.once("dialog", lambda dialog: (messages.append(dialog.message), dialog.accept()))
    row.get_by_role("button", name="Revoke").click()
    page.get_by_text(f"API key {key.label} revoked: it no longer works.").wait_for()
    assert "Scripts using it stop working at once" in messages[0]
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert "Revoked" in page.locator(f"#api-key-{key.pk}").text_content()
    screenshot(page, "api-keys-4-revoked")

    # A phone-sized screen: the table scrolls inside its frame, the form follows.
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, "api-keys-5-narrow")
    assert earlier.prefix in page.content()


def test_the_api_documentation_opens_from_the_keys_tab(page, live_server, org, admin):
    """Swagger UI at /api/docs renders under the site's Content-Security-Policy (the
    page fixture fails on any refusal) and calls the API with a key."""
    _, secret = api_key_create(organization=org, name="Docs", days=7, by=ChangeAuthor(admin))
    sign_in(page, live_server, admin.email)
    page.goto(f"{live_server.url}/o/{org.pk}/audit-log/")
    page.get_by_role("navigation").get_by_role("link", name="API keys").click()
    page.get_by_role("link", name="API documentation").click()
    page.wait_for_url(f"{live_server.url}/api/docs")
    page.locator(".swagger-ui .info .title").filter(
        has_text="Organization audit log API"
    ).wait_for()
    operations = page.locator(".opblock-summary-path")
    operations.first.wait_for()
    paths = {text.replace("\u200b", "") for text in operations.all_inner_texts()}
    assert "/admin/v1/orgs/{org_id}/events" in paths
    assert "/admin/v2/orgs/{org_id}/events-stream" in paths
    screenshot(page, "api-docs")

    # Authorize with the key, then Try it out on GET /admin/v1/orgs.
    page.get_by_role("button", name="Authorize").first.click()
    # Two schemes are offered: organization API keys and ingest keys.
    scheme = page.locator(".modal-ux form").filter(has_text="ApiKeyAuth")
    scheme.locator("input").fill(secret)
    scheme.locator("button.authorize").click()  # its name is "Apply credentials"
    page.locator(".modal-ux button.btn-done").first.click()
    block = page.locator("#operations-v1-v1_orgs")
    block.locator(".opblock-summary").click()
    block.get_by_role("button", name="Try it out").click()
    block.get_by_role("button", name="Execute").click()
    body = block.locator(".responses-wrapper .live-responses-table .response-col_description pre")
    body.first.wait_for()
    assert f'"name": "{org.name}"' in body.first.inner_text()
    screenshot(page, "api-docs-try-it-out")
