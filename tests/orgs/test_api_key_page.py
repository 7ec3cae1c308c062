"""Security › Audit log › API keys: create (the secret shown once), list, revoke."""

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from audit.models import Event
from orgs.models import ApiKey, Membership
from orgs.services import ChangeAuthor, api_key_authenticate, api_key_create
from tests.conftest import plan


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def list_url(org):
    return reverse("orgs:api-key-list", args=[org.pk])


def create_url(org):
    return reverse("orgs:api-key-create", args=[org.pk])


def revoke_url(key):
    return reverse("orgs:api-key-revoke", args=[key.organization_id, key.pk])


@pytest.fixture
def admin_client(client, admin, org):
    client.force_login(admin)
    client.org = org
    return client


@pytest.fixture
def key(org, admin):
    return api_key_create(organization=org, name="Nightly", days=7, by=ChangeAuthor(admin))[0]


def test_the_page_is_under_the_audit_log(org):
    assert list_url(org) == f"/o/{org.pk}/audit-log/api-keys/"


def test_the_page_lists_keys_with_creator_times_and_status(
    admin_client, org, key, django_assert_max_num_queries
):
    api_key_create(organization=org, name="Other", by=None)
    with django_assert_max_num_queries(8):
        response = admin_client.get(list_url(org))
    html = response.content.decode()
    assert response.status_code == 200
    assert f"alk_{key.prefix}_" in html and "Nightly" in html
    assert "Alice Admin" in html and "Command line" in html
    assert "Never" in html and "active" in html
    assert 'href="/api/docs"' in html and "API documentation" in html
    assert 'aria-current="page">API keys' in html
    assert key.secret_hash not in html


def test_creating_shows_the_secret_once(admin_client, org):
    response = admin_client.post(create_url(org), {"name": "SIEM", "days": "90"})
    assert response.status_code == 302 and response["Location"] == list_url(org)
    key = ApiKey.objects.get()
    assert key.name == "SIEM" and (key.expires_at - key.created_at).days == 90
    first = admin_client.get(list_url(org))
    secret = first.context["shown"]["secret"]
    assert api_key_authenticate(secret=secret, ip=None).pk == key.pk
    assert secret in first.content.decode()
    assert "It won't be shown again" in first.content.decode()
    assert "no-store" in first["Cache-Control"]
    again = admin_client.get(list_url(org))
    assert secret not in again.content.decode()
    assert secret.split("_", 2)[2] not in str(dict(admin_client.session))
    assert Event.objects.filter(action__key="audit_log_api_key_created").count() == 1


def test_the_secret_waits_for_its_own_organizations_page(admin_client, org, other_org, admin):
    Membership.objects.create(user=admin, organization=other_org, role="admin")
    admin_client.post(create_url(org), {"name": "SIEM", "days": "30"})
    assert admin_client.get(list_url(other_org)).context["shown"] is None
    assert admin_client.get(list_url(org)).context["shown"] is not None


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"name": "", "days": "30"}, "Give the key a name."),
        ({"name": "x", "days": "0"}, "Choose 1, 7, 30, 60, 90, 180 or 365 days."),
        ({"name": "x", "days": "400"}, "Choose 1, 7, 30, 60, 90, 180 or 365 days."),
        ({"name": "x", "days": "ten"}, "Choose 1, 7, 30, 60, 90, 180 or 365 days."),
        ({"name": "x" * 101, "days": "30"}, "at most 100 characters"),
    ],
)
def test_bad_input_is_a_form_error_and_creates_nothing(admin_client, org, data, error):
    response = admin_client.post(create_url(org), data)
    assert response.status_code == 400
    assert error in response.content.decode()
    assert 'aria-invalid="true"' in response.content.decode()
    assert not ApiKey.objects.exists()


def test_revoking(admin_client, key):
    response = admin_client.post(revoke_url(key))
    assert response.status_code == 302
    assert messages_of(response) == [f"API key {key.label} revoked: it no longer works."]
    key.refresh_from_db()
    assert key.status == "revoked"
    html = admin_client.get(list_url(key.organization)).content.decode()
    assert "revoked" in html and revoke_url(key) not in html
    again = admin_client.post(revoke_url(key))
    assert messages_of(again) == [f"API key {key.label} was already revoked."]
    assert Event.objects.filter(action__key="audit_log_api_key_revoked").count() == 1


def test_another_organizations_key_is_a_404(admin_client, other_org, outsider):
    theirs = api_key_create(organization=other_org, name="x", by=ChangeAuthor(outsider))[0]
    url = reverse("orgs:api-key-revoke", args=[theirs.organization_id, theirs.pk])
    assert admin_client.post(url).status_code == 404  # not an admin of Globex
    mine = reverse("orgs:api-key-revoke", args=[admin_client.org.pk, theirs.pk])
    assert admin_client.post(mine).status_code == 404  # not a key of Acme
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_outsiders_get_404_and_members_403(client, org, outsider, member):
    client.force_login(outsider)
    assert client.get(list_url(org)).status_code == 404
    assert client.post(create_url(org), {"name": "x", "days": "30"}).status_code == 404
    client.force_login(member)
    assert client.get(list_url(org)).status_code == 403
    assert client.post(create_url(org), {"name": "x", "days": "30"}).status_code == 403
    assert not ApiKey.objects.exists()


def test_revoke_by_outsider_or_member_is_refused(client, key, outsider, member):
    client.force_login(outsider)
    assert client.post(revoke_url(key)).status_code == 404
    client.force_login(member)
    assert client.post(revoke_url(key)).status_code == 403
    key.refresh_from_db()
    assert key.revoked_at is None


def test_signed_out_goes_to_sign_in(client, org):
    response = client.get(list_url(org))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_wrong_methods_are_405(admin_client, org, key):
    assert admin_client.post(list_url(org)).status_code == 405
    assert admin_client.get(create_url(org)).status_code == 405
    assert admin_client.get(revoke_url(key)).status_code == 405


def test_a_plan_without_the_audit_log_refuses_keys(admin_client, org):
    org.plan = plan("none")
    org.save()
    page = admin_client.get(list_url(org))
    assert page.status_code == 200
    assert f"The {org.plan.name} plan does not include the audit log." in page.content.decode()
    assert create_url(org) not in page.content.decode()
    response = admin_client.post(create_url(org), {"name": "x", "days": "30"})
    assert response.status_code == 302
    assert messages_of(response) == [f"The {org.plan.name} plan does not include the audit log."]
    assert not ApiKey.objects.exists()
