"""Streams as an org admin clicks through them: the tab, Add stream (a form error
first), the signing secret shown once, Send test event, the delivery log."""

import pytest

from audit.models import Stream

from ..streams.conftest import receiver, verified  # noqa: F401  (the fixture)
from .conftest import screenshot, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


def test_add_a_stream_send_a_test_event_and_see_it_in_the_delivery_log(
    page,
    live_server,
    org,
    admin,
    receiver,  # noqa: F811
):
    sign_in(page, live_server, admin.email)
    page.goto(f"{live_server.url}/o/{org.pk}/audit-log/")
    page.get_by_role("navigation").get_by_role("link", name="Streams").click()
    page.get_by_role("heading", name="Streams", level=1).wait_for()
    screenshot(page, "streams-1-empty")

    page.get_by_role("button", name="Add stream").click()
    page.get_by_text("Give the stream a name").wait_for()
    screenshot(page, "streams-2-form-error")
    assert not Stream.objects.exists()

    page.get_by_label("Name").fill("Splunk HEC")
    page.get_by_label("Destination URL").fill(receiver.url)
    page.get_by_label("Authorization header").fill("Splunk 0000-secret-token")
    page.get_by_role("button", name="Add stream").click()
    secret = page.locator("#stream-secret")
    secret.wait_for()
    stream = Stream.objects.get()
    assert secret.inner_text().strip() == stream.secret
    assert "0000-secret-token" not in page.content()
    screenshot(page, "streams-3-added")

    page.get_by_role("button", name="Send test event").click()
    page.get_by_text("Test event sent to Splunk HEC").wait_for()
    row = page.locator("table tbody tr").first
    assert "204" in row.inner_text() and "TEST" in row.inner_text().upper()
    (request,) = receiver.requests
    assert verified(request, stream.secret)
    assert request.headers["Authorization"] == "Splunk 0000-secret-token"
    assert page.locator("#stream-secret").count() == 0, "the secret is shown once"
    screenshot(page, "streams-4-delivery-log")

    page.get_by_role("button", name="Pause").click()
    page.get_by_text("Stream Splunk HEC paused").wait_for()
    page.get_by_role("link", name="← Streams").click()
    page.get_by_role("heading", name="Streams", level=1).wait_for()
    screenshot(page, "streams-5-list-paused")
    assert "Paused" in page.locator("table").inner_text()
