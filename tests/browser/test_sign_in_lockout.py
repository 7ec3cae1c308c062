"""Sign-in lockout as a person meets it: wrong passwords until the sign-in page says
the account is locked out from this address, and then the right password is refused
too. Screenshots: test-artifacts/screenshots/sign-in-*.png."""

import pytest
from django.conf import settings
from playwright.sync_api import expect

from audit.models import Event

from .conftest import screenshot, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

LOCKED = "Too many failed sign-ins for this account from your address. Try again in 15 minutes."


def test_wrong_passwords_lock_the_sign_in_and_the_page_says_so(page, live_server, org, admin):
    alert = page.get_by_role("alert")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        sign_in(page, live_server, admin.email, "not-my-password")
        expect(alert).to_contain_text("That email and password don't match an account")
    screenshot(page, "sign-in-1-failed")

    sign_in(page, live_server, admin.email, "not-my-password")
    expect(alert).to_have_text(LOCKED)
    expect(page.get_by_label("Email")).to_have_value(admin.email)
    screenshot(page, "sign-in-2-locked-out")

    response_status = []
    page.on("response", lambda r: r.request.method == "POST" and response_status.append(r.status))
    sign_in(page, live_server, admin.email.upper())  # the right password, another case
    expect(alert).to_have_text(LOCKED)
    assert response_status == [429]
    assert page.url.endswith("/accounts/login/")
    assert Event.objects.filter(action__key="user_login_locked_out").count() == 1

    page.get_by_role("link", name="Forgot your password?").click()
    expect(page.get_by_role("heading", name="Reset your password")).to_be_visible()
    screenshot(page, "sign-in-3-forgot-password")
