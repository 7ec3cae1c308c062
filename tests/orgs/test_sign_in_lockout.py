"""Sign-in throttling (django-axes): an account is locked out from one address after
AXES_FAILURE_LIMIT wrong passwords, for AXES_COOLOFF_MINUTES; the lockout is recorded
once, and staff unlocking it in the Django admin is recorded too."""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.test import Client
from django.utils import timezone

from audit.models import Event
from orgs.models import Membership
from tests.conftest import make_user

from .test_audited_actions import META, events, post_admin
from .test_settings import run_manage

LOCKED = "Too many failed sign-ins for this account from your address. Try again in 15 minutes."


def sign_in(client, email: str, password: str = "pw-for-tests", **meta):
    return client.post(
        "/accounts/login/", {"username": email, "password": password}, **{**META, **meta}
    )


def fail(client, email: str, times: int, **meta) -> list[int]:
    return [sign_in(client, email, "wrong", **meta).status_code for _ in range(times)]


@pytest.fixture
def two_orgs(org, other_org, admin):
    Membership.objects.create(user=admin, organization=other_org, role=Membership.Role.MEMBER)
    return org, other_org


def test_each_test_starts_with_axes_on_and_no_attempts(db):
    assert settings.AXES_ENABLED
    assert settings.AXES_HANDLER == "axes.handlers.database.AxesDatabaseHandler"
    assert settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"]]
    assert not AccessAttempt.objects.exists()


def test_wrong_passwords_lock_the_account_out_then_the_right_one_is_refused(client, admin):
    assert settings.AXES_FAILURE_LIMIT == 5
    assert fail(client, "alice@acme.test", 4) == [200] * 4
    locked = sign_in(client, "alice@acme.test", "wrong")
    assert locked.status_code == 429
    assert LOCKED in locked.content.decode()
    right = sign_in(client, "alice@acme.test")
    assert right.status_code == 429
    assert LOCKED in right.content.decode()
    assert not right.wsgi_request.user.is_authenticated
    assert "_auth_user_id" not in client.session


def test_the_lockout_is_the_sign_in_page_not_an_error(client, admin):
    fail(client, "alice@acme.test", 5)
    body = sign_in(client, "alice@acme.test").content.decode()
    assert 'class="site-header"' in body and "<h1>Sign in</h1>" in body
    assert 'role="alert"' in body
    assert "Forgot your password?" in body


def test_the_lockout_holds_whatever_the_case_of_the_email(client, admin):
    fail(client, "alice@acme.test", 2)
    fail(client, "ALICE@acme.test", 2)
    assert sign_in(client, " Alice@Acme.Test ", "wrong").status_code == 429
    assert sign_in(client, "ALICE@ACME.TEST").status_code == 429
    assert sign_in(client, "alice@acme.test").status_code == 429
    assert set(AccessAttempt.objects.values_list("username", flat=True)) == {"alice@acme.test"}


def test_the_lockout_is_per_address(client, admin):
    fail(client, "alice@acme.test", 5)
    assert sign_in(client, "alice@acme.test", REMOTE_ADDR="203.0.113.77").status_code == 302


def test_the_lockout_is_per_account(client, admin, member):
    fail(client, "alice@acme.test", 5)
    assert sign_in(Client(), "bob@acme.test").status_code == 302


def test_the_lockout_ends_after_the_cool_off(client, admin):
    fail(client, "alice@acme.test", 5)
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    assert sign_in(client, "alice@acme.test").status_code == 302


def test_the_message_counts_the_minutes_left(client, admin):
    fail(client, "alice@acme.test", 5)
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=14, seconds=5))
    body = sign_in(client, "alice@acme.test").content.decode()
    assert "Try again in 1 minute." in body


def test_the_lockout_is_recorded_once_in_every_org_of_the_account(client, two_orgs, admin):
    fail(client, "alice@acme.test", 5)
    fail(client, "alice@acme.test", 10)  # locked out: nothing more is recorded
    sign_in(client, "alice@acme.test")
    assert events("user_login_failed").count() == 5 * 2
    locked = list(events("user_login_locked_out"))
    assert {e.organization_id for e in locked} == {o.pk for o in two_orgs}
    assert len(locked) == 2
    event = locked[0]
    assert event.message == "Sign-ins as Alice Admin were locked out after repeated failures"
    assert (event.actor_name, event.actor_email) == ("Anonymous", "")
    assert event.context[0]["email"] == "alice@acme.test"
    assert (event.ip, event.user_agent) == ("198.51.100.23", "Mozilla/5.0 (audited test)")
    assert not events("user_logged_in").exists()


def test_an_unknown_email_is_locked_out_too_but_records_nothing(client, org, admin):
    fail(client, "nobody@acme.test", 5)
    assert sign_in(client, "nobody@acme.test", "wrong").status_code == 429
    assert not Event.objects.exists()


def test_the_admin_sign_in_is_locked_out_too(client, staff):
    for _ in range(5):
        client.post("/staff/login/", {"username": "staff@acme.test", "password": "x"}, **META)
    response = client.post(
        "/staff/login/", {"username": "staff@acme.test", "password": "pw-for-tests"}, **META
    )
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


# Staff unlock in the Django admin


@pytest.fixture
def staff_client(staff):
    client = Client()
    client.force_login(staff)
    return client


def test_staff_unlock_on_the_attempt_page_is_recorded(client, staff_client, two_orgs, admin):
    fail(client, "alice@acme.test", 5)
    attempt = AccessAttempt.objects.get()
    path = f"/staff/axes/accessattempt/{attempt.pk}/delete/"
    assert staff_client.get(path).status_code == 200
    post_admin(staff_client, path, {"post": "yes"})
    assert not AccessAttempt.objects.exists()
    unlocked = list(events("user_login_unlocked"))
    assert {e.organization_id for e in unlocked} == {o.pk for o in two_orgs}
    event = unlocked[0]
    assert event.message == "Sam Staff unlocked sign-ins as Alice Admin"
    assert (event.actor_email, event.ip) == ("staff@acme.test", "198.51.100.23")
    assert event.context[0]["email"] == "alice@acme.test"
    assert sign_in(client, "alice@acme.test").status_code == 302


def test_staff_bulk_unlock_is_recorded_once_per_account(client, staff_client, org, admin):
    fail(client, "alice@acme.test", 5)
    fail(client, "alice@acme.test", 5, REMOTE_ADDR="203.0.113.8")  # a second lockout
    fail(client, "nobody@acme.test", 5)
    pks = list(AccessAttempt.objects.values_list("pk", flat=True))
    assert len(pks) == 3
    data = {"action": "delete_selected", "_selected_action": pks, "post": "yes"}
    post_admin(staff_client, "/staff/axes/accessattempt/", data)
    assert not AccessAttempt.objects.exists()
    assert events("user_login_unlocked", org).count() == 1


def test_deleting_an_attempt_that_locks_nothing_records_nothing(client, staff_client, org, admin):
    fail(client, "alice@acme.test", 2)
    attempt = AccessAttempt.objects.get()
    post_admin(staff_client, f"/staff/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert not events("user_login_unlocked").exists()


def test_the_account_with_no_membership_can_be_locked_and_unlocked(client, staff_client):
    make_user("loner@example.test")
    fail(client, "loner@example.test", 5)
    assert sign_in(client, "loner@example.test").status_code == 429
    attempt = AccessAttempt.objects.get()
    post_admin(staff_client, f"/staff/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert sign_in(client, "loner@example.test").status_code == 302


# Settings from the environment


def axes_settings(**env: str) -> str:
    code = (
        "from django.conf import settings as s; print(s.AXES_ENABLED, s.AXES_FAILURE_LIMIT,"
        " s.AXES_COOLOFF_TIME, s.TRUSTED_PROXY_COUNT, s.AXES_CLIENT_IP_CALLABLE)"
    )
    result = run_manage("shell", "-c", code, **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_axes_settings_come_from_the_environment():
    assert axes_settings() == "True 5 0:15:00 0 audit.services.client_ip"
    assert (
        axes_settings(
            AXES_ENABLED="false",
            AXES_FAILURE_LIMIT="3",
            AXES_COOLOFF_MINUTES="60",
            TRUSTED_PROXY_COUNT="1",
        )
        == "False 3 1:00:00 1 audit.services.client_ip"
    )
