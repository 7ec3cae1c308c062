"""An email names one account whatever its case: stored stripped and lower-case,
unique case-insensitively in the database, signed in with in any case."""

import importlib

import pytest
from django.apps import apps
from django.db import IntegrityError, transaction

from orgs.models import User

from .test_audited_actions import META, admin_form, events

TAKEN = "An account with this email already exists"


def sign_in(client, email: str, password: str = "pw-for-tests"):
    return client.post("/accounts/login/", {"username": email, "password": password}, **META)


def user_form(client, path: str) -> dict:
    data = admin_form(client, path)
    for empty_multiple_choice in ("groups", "user_permissions"):
        data.pop(empty_multiple_choice)
    return data


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


def test_sign_in_ignores_the_case_of_the_email(client, org, admin):
    response = sign_in(client, " ALICE@Acme.TEST ")
    assert response.status_code == 302
    assert response.wsgi_request.user == admin
    assert events("user_logged_in", org).get().actor_email == "alice@acme.test"
    assert not events("user_login_failed").exists()


def test_the_manager_stores_one_form_of_the_email(db):
    user = User.objects.create_user("  Bob@Example.TEST ", "pw")
    assert user.email == "bob@example.test"
    assert User.objects.get_by_natural_key("BOB@example.test ") == user
    staff = User.objects.create_superuser("Root@Example.Test", "pw")
    assert staff.email == "root@example.test"


def test_the_database_refuses_an_email_that_differs_only_in_case(admin):
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.create(email="Alice@ACME.test")  # around the manager's normalization
    assert User.objects.filter(email__iexact="alice@acme.test").count() == 1


def test_the_manager_refuses_an_email_that_differs_only_in_case(admin):
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.create_user("ALICE@acme.test", "pw")


def test_staff_cannot_add_an_account_whose_email_differs_only_in_case(staff_client, admin):
    data = {"email": "Alice@acme.test", "name": "", "password1": "", "password2": ""}
    data["usable_password"] = "false"
    response = staff_client.post("/staff/orgs/user/add/", data, **META)
    assert response.status_code == 200
    assert TAKEN in response.content.decode()
    assert User.objects.filter(email__iexact="alice@acme.test").count() == 1


def test_staff_add_an_account_with_its_email_normalized(staff_client, db):
    data = {"email": " New.Person@Acme.TEST ", "name": "New", "usable_password": "false"}
    data.update(password1="", password2="")
    response = staff_client.post("/staff/orgs/user/add/", data, **META)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert User.objects.filter(email="new.person@acme.test").exists()


def test_staff_cannot_change_an_email_to_another_accounts_in_another_case(
    staff_client, admin, member
):
    path = f"/staff/orgs/user/{member.pk}/change/"
    data = user_form(staff_client, path)
    data["email"] = "ALICE@ACME.TEST"
    response = staff_client.post(path, data, **META)
    assert response.status_code == 200
    assert TAKEN in response.content.decode()
    member.refresh_from_db()
    assert member.email == "bob@acme.test"


def test_staff_change_an_email_normalized_and_may_change_only_its_case(staff_client, member):
    path = f"/staff/orgs/user/{member.pk}/change/"
    data = user_form(staff_client, path)
    data["email"] = "BOB@acme.test"  # its own email in another case is not "taken"
    response = staff_client.post(path, data, **META)
    assert response.status_code == 302, response.content.decode()[:2000]
    member.refresh_from_db()
    assert member.email == "bob@acme.test"


def test_a_failed_sign_in_in_another_case_is_recorded_for_the_one_account(client, org, admin):
    sign_in(client, "ALICE@ACME.test", "wrong")
    event = events("user_login_failed", org).get()
    assert event.context[0]["email"] == "alice@acme.test"


def test_the_migration_lowers_existing_emails(admin):
    User.objects.filter(pk=admin.pk).update(email="  Alice@Acme.TEST ")
    migration = importlib.import_module("orgs.migrations.0003_email_case_insensitive")
    migration.emails_normalize(apps, None)
    admin.refresh_from_db()
    assert admin.email == "alice@acme.test"
