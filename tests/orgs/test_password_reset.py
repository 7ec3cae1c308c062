"""Password reset (by email) and password change: pages in the site's look, reset
requests throttled per email and per address in the database, and both recorded."""

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit.models import Event
from orgs.models import Membership, PasswordResetRequest

from .test_audited_actions import META, events

RESET = "/accounts/password_reset/"
OVER = "Too many password reset requests. Try again in an hour."
NEW_PASSWORD = "a-new-long-passphrase-4821"


def request_reset(client, email: str, **meta):
    return client.post(RESET, {"email": email}, **{**META, **meta})


def reset_link(message) -> str:
    return re.search(r"https?://[^/\s]+(/accounts/reset/\S+/)", message.body).group(1)


def site_page(body: str) -> bool:
    return 'class="site-header"' in body and "Django administration" not in body


def test_the_sign_in_page_links_forgot_your_password(client, db):
    body = client.get(reverse("login")).content.decode()
    assert f'href="{reverse("password_reset")}"' in body
    assert "Forgot your password?" in body


def test_every_reset_and_change_page_looks_like_the_site(client, admin):
    for name in ("password_reset", "password_reset_done", "password_reset_complete"):
        response = client.get(reverse(name))
        assert response.status_code == 200 and site_page(response.content.decode()), name
    bad_link = client.get("/accounts/reset/MQ/bad-token/")
    assert bad_link.status_code == 200 and site_page(bad_link.content.decode())
    assert "This link has expired or was already used" in bad_link.content.decode()
    client.force_login(admin)
    for name in ("password_change", "password_change_done"):
        response = client.get(reverse(name))
        assert response.status_code == 200 and site_page(response.content.decode()), name
    assert f'href="{reverse("password_change")}"' in client.get("/account/").content.decode()


def test_a_reset_request_mails_the_account_and_is_recorded(client, org, other_org, admin):
    Membership.objects.create(user=admin, organization=other_org)
    response = request_reset(client, "ALICE@acme.test")
    assert response.status_code == 302 and response["Location"] == reverse("password_reset_done")
    assert [m.to for m in mail.outbox] == [["alice@acme.test"]]
    assert reset_link(mail.outbox[0]).startswith("/accounts/reset/")
    recorded = list(events("user_password_reset_requested"))
    assert {e.organization_id for e in recorded} == {org.pk, other_org.pk}
    event = recorded[0]
    assert event.message == "A password reset was requested for Alice Admin"
    assert (event.actor_name, event.actor_email) == ("Anonymous", "")
    assert (event.ip, event.user_agent) == ("198.51.100.23", "Mozilla/5.0 (audited test)")


def test_a_reset_request_for_no_account_looks_the_same_and_records_nothing(client, org, admin):
    response = request_reset(client, "nobody@acme.test")
    assert response.status_code == 302 and response["Location"] == reverse("password_reset_done")
    assert not mail.outbox
    assert not Event.objects.exists()


def test_reset_requests_are_limited_per_email(client, admin):
    assert [request_reset(client, "alice@acme.test").status_code for _ in range(3)] == [302] * 3
    refused = request_reset(client, "Alice@acme.test", REMOTE_ADDR="203.0.113.5")
    assert refused.status_code == 429
    assert OVER in refused.content.decode() and site_page(refused.content.decode())
    assert len(mail.outbox) == 3
    assert events("user_password_reset_requested").count() == 3


def test_the_limit_does_not_reveal_whether_an_account_exists(client, admin):
    for email in ("alice@acme.test", "nobody@acme.test"):
        for _ in range(3):
            request_reset(client, email)
    known = request_reset(Client(), "alice@acme.test", REMOTE_ADDR="203.0.113.6")
    unknown = request_reset(Client(), "nobody@acme.test", REMOTE_ADDR="203.0.113.6")
    assert known.status_code == unknown.status_code == 429
    strip = lambda r: re.sub(  # noqa: E731
        r'value="[A-Za-z0-9]{64}"|alice@acme.test|nobody@acme.test', "", r.content.decode()
    )
    assert strip(known) == strip(unknown)


def test_reset_requests_are_limited_per_address(client, db):
    statuses = [request_reset(client, f"n{i}@acme.test").status_code for i in range(10)]
    assert statuses == [302] * 10
    assert request_reset(client, "n10@acme.test").status_code == 429
    assert request_reset(client, "n10@acme.test", REMOTE_ADDR="203.0.113.7").status_code == 302


def test_refused_requests_do_not_count_and_the_limit_lasts_an_hour(client, admin):
    for _ in range(5):
        request_reset(client, "alice@acme.test")
    assert PasswordResetRequest.objects.count() == 3
    PasswordResetRequest.objects.update(requested_at=timezone.now() - timedelta(minutes=61))
    assert request_reset(client, "alice@acme.test").status_code == 302
    assert len(mail.outbox) == 4


def test_a_completed_reset_sets_the_password_and_is_recorded(client, org, admin):
    request_reset(client, "alice@acme.test")
    link = reset_link(mail.outbox[0])
    form_page = client.get(link, **META, follow=True)
    assert form_page.status_code == 200 and site_page(form_page.content.decode())
    response = client.post(
        form_page.redirect_chain[-1][0],
        {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
        **META,
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("password_reset_complete")
    event = events("user_password_changed", org).get()
    assert event.message == "Alice Admin changed their password"
    assert (event.actor_email, event.ip) == ("alice@acme.test", "198.51.100.23")
    signed_in = Client().post(
        "/accounts/login/", {"username": "alice@acme.test", "password": NEW_PASSWORD}, **META
    )
    assert signed_in.status_code == 302


def test_a_failed_reset_form_records_nothing(client, org, admin):
    request_reset(client, "alice@acme.test")
    form_page = client.get(reset_link(mail.outbox[0]), follow=True)
    response = client.post(
        form_page.redirect_chain[-1][0], {"new_password1": "x", "new_password2": "y"}, **META
    )
    assert response.status_code == 200
    assert not events("user_password_changed").exists()


def test_changing_the_password_is_recorded(client, org, admin):
    client.force_login(admin)
    data = {
        "old_password": "pw-for-tests",
        "new_password1": NEW_PASSWORD,
        "new_password2": NEW_PASSWORD,
    }
    response = client.post(reverse("password_change"), data, **META)
    assert response.status_code == 302
    assert response["Location"] == reverse("password_change_done")
    event = events("user_password_changed", org).get()
    assert event.message == "Alice Admin changed their password"
    assert event.actor_email == "alice@acme.test"
    assert (event.ip, event.user_agent) == ("198.51.100.23", "Mozilla/5.0 (audited test)")


def test_a_wrong_old_password_changes_nothing_and_records_nothing(client, org, admin):
    client.force_login(admin)
    data = {"old_password": "nope", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    response = client.post(reverse("password_change"), data, **META)
    assert response.status_code == 200
    assert "Your old password was entered incorrectly" in response.content.decode()
    assert not events("user_password_changed").exists()


@pytest.mark.parametrize("name", ["password_change", "password_change_done"])
def test_password_change_needs_a_sign_in(client, db, name):
    response = client.get(reverse(name))
    assert response.status_code == 302 and reverse("login") in response["Location"]
