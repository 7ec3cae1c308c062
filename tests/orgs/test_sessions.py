"""The session store (orgs.sessions): Django's database sessions read by a
written-out SELECT, with Django's expiry and sign-out intact."""

from datetime import timedelta

from django.contrib.sessions.models import Session
from django.urls import reverse
from django.utils import timezone

from ..conftest import url as org_url


def test_a_signed_in_session_opens_the_page(client, org, admin):
    client.force_login(admin)
    assert client.get(org_url("audit:event-list", org)).status_code == 200


def test_an_expired_session_signs_the_user_out(client, org, admin):
    client.force_login(admin)
    Session.objects.update(expire_date=timezone.now() - timedelta(seconds=1))
    response = client.get(org_url("audit:event-list", org))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_a_deleted_session_signs_the_user_out(client, org, admin):
    client.force_login(admin)
    Session.objects.all().delete()
    assert client.get(org_url("audit:event-list", org)).status_code == 302


def test_signing_out_ends_the_session_for_every_copy_of_the_cookie(client, org, admin):
    client.force_login(admin)
    cookie = client.cookies["sessionid"].value
    client.post(reverse("logout"))
    client.cookies["sessionid"] = cookie  # replayed, e.g. from another tab or a thief
    assert client.get(org_url("audit:event-list", org)).status_code == 302


def test_a_forged_session_key_is_an_empty_session(client, org):
    client.cookies["sessionid"] = "x" * 32
    assert client.get(org_url("audit:event-list", org)).status_code == 302
    assert client.session.session_key != "x" * 32


def test_a_session_whose_account_was_deactivated_or_deleted_signs_the_user_out(client, org, admin):
    """The session's account is read by orgs.backends.AccountBackend: an inactive one
    is no one, as with Django's ModelBackend, and so is one that is gone."""
    client.force_login(admin)
    page = org_url("audit:event-list", org)
    assert client.get(page).status_code == 200
    type(admin).objects.filter(pk=admin.pk).update(is_active=False)
    assert client.get(page).status_code == 302
    client.force_login(admin)  # active again: signed in again, then the account goes
    type(admin).objects.filter(pk=admin.pk).update(is_active=True)
    assert client.get(page).status_code == 200
    type(admin).objects.filter(pk=admin.pk).delete()
    assert client.get(page).status_code == 302


def test_a_session_whose_password_changed_elsewhere_signs_the_user_out(client, org, admin):
    """Django's session hash check still applies to the account AccountBackend reads."""
    client.force_login(admin)
    page = org_url("audit:event-list", org)
    admin.set_password("a brand new password 123")
    admin.save()
    assert client.get(page).status_code == 302


def test_a_session_signed_in_by_djangos_model_backend_stays_signed_in(client, org, admin):
    """Sessions from before orgs.backends.AccountBackend name Django's ModelBackend."""
    client.force_login(admin, backend="django.contrib.auth.backends.ModelBackend")
    assert client.get(org_url("audit:event-list", org)).status_code == 200
