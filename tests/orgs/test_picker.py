"""The organization picker at /."""

from django.urls import reverse

from orgs.models import Membership, Organization, Plan


def test_an_admin_of_several_orgs_picks_one(client, org, admin):
    labs = Organization.objects.create(
        name="Acme Labs", plan=Plan.objects.get(key="cloud-enterprise")
    )
    Membership.objects.create(organization=labs, user=admin, role=Membership.Role.ADMIN)
    member_only = Organization.objects.create(
        name="Hooli", plan=Plan.objects.get(key="guard-standard")
    )
    Membership.objects.create(organization=member_only, user=admin, role=Membership.Role.MEMBER)
    client.force_login(admin)
    response = client.get(reverse("orgs:org-picker"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "Acme Labs" in body and "Cloud Enterprise" in body
    assert reverse("audit:event-list", args=[org.pk]) in body
    assert reverse("audit:event-list", args=[labs.pk]) in body
    assert "Hooli" not in body


def test_an_admin_of_one_org_goes_straight_there(client, org, admin):
    client.force_login(admin)
    response = client.get(reverse("orgs:org-picker"))
    assert response.status_code == 302
    assert response["Location"] == reverse("audit:event-list", args=[org.pk])
    assert client.get(reverse("orgs:org-picker") + "?all=1").status_code == 200


def test_the_picker_needs_sign_in(client, db):
    response = client.get(reverse("orgs:org-picker"))
    assert response.status_code == 302
