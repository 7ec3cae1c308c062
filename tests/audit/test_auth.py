"""Signing in and out: email and password, failures that reveal nothing, CSRF."""

from django.conf import settings
from django.test import Client
from django.urls import reverse

from orgs.models import Membership

from ..conftest import make_user

FAILED = "That email and password don't match an account"


def test_sign_in_takes_an_admin_of_one_org_straight_to_its_audit_log(client, org, admin):
    response = client.post(
        reverse("login"), {"username": "alice@acme.test", "password": "pw-for-tests"}
    )
    assert response.status_code == 302
    response = client.get(response["Location"])
    assert response.status_code == 302
    assert response["Location"] == reverse("audit:event-list", args=[org.pk])


def test_a_wrong_password_and_an_unknown_account_look_the_same(client, admin):
    wrong = client.post(reverse("login"), {"username": "alice@acme.test", "password": "nope"})
    unknown = client.post(reverse("login"), {"username": "who@acme.test", "password": "nope"})
    assert wrong.status_code == unknown.status_code == 200
    assert FAILED in wrong.content.decode() and FAILED in unknown.content.decode()
    strip = lambda r: r.content.decode().replace("alice@acme.test", "").replace("who@acme.test", "")  # noqa: E731
    strip_csrf = lambda s: __import__("re").sub(r'value="[A-Za-z0-9]{64}"', "", s)  # noqa: E731
    assert strip_csrf(strip(wrong)) == strip_csrf(strip(unknown))


def test_the_sign_in_form_has_labels_and_csrf(client, db):
    body = client.get(reverse("login")).content.decode()
    assert '<label for="id_username">Email</label>' in body
    assert '<label for="id_password">Password</label>' in body
    assert "csrfmiddlewaretoken" in body
    assert ">Sign in</button>" in body


def test_sign_in_without_csrf_is_refused(db, admin):
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        reverse("login"), {"username": "alice@acme.test", "password": "pw-for-tests"}
    )
    assert response.status_code == 403


def test_sign_out_ends_the_session(client, org, admin):
    client.force_login(admin)
    assert client.post(reverse("logout")).status_code == 302
    response = client.get(reverse("audit:event-list", args=[org.pk]))
    assert response.status_code == 302 and reverse("login") in response["Location"]


def test_sessions_expire():
    assert 0 < settings.SESSION_COOKIE_AGE <= 24 * 3600
    assert settings.SESSION_EXPIRE_AT_BROWSER_CLOSE


def test_the_account_page_sets_the_time_zone(client, admin):
    client.force_login(admin)
    url = reverse("orgs:account")
    assert client.get(url).status_code == 200
    response = client.post(url, {"time_zone": "Europe/Paris"})
    assert response.status_code == 302
    admin.refresh_from_db()
    assert admin.time_zone == "Europe/Paris"
    response = client.post(url, {"time_zone": "Mars/Olympus"})
    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()


def test_a_member_without_admin_role_sees_no_orgs(client, org):
    user = make_user("m@acme.test", org, Membership.Role.MEMBER)
    client.force_login(user)
    body = client.get(reverse("orgs:org-picker")).content.decode()
    assert "You are not an admin of any organization" in body
