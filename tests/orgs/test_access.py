"""org_for_admin, the one access check of every organization page, read by one
written-out SELECT (orgs.sqlrows): it must decide exactly as before."""

from datetime import datetime

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import Http404

from orgs.access import org_for_admin
from orgs.models import Membership, Organization, Plan

from ..conftest import make_user


def test_it_gives_the_admin_the_org_and_its_plan_in_one_query(
    org, admin, django_assert_num_queries
):
    with django_assert_num_queries(1):
        found = org_for_admin(admin, org.pk)
        assert found.plan.key == "guard-premium"
        assert found.plan.audit_log is True
        assert isinstance(found.plan.retention_days, int)
        assert isinstance(found.created_at, datetime) and found.created_at.tzinfo is not None
    assert found == org and found.name == org.name
    assert found.plan == Plan.objects.get(key="guard-premium")


def test_it_hides_the_org_from_outsiders_staff_and_the_signed_out(org, outsider, staff):
    for user in (outsider, staff, AnonymousUser()):
        with pytest.raises(Http404):
            org_for_admin(user, org.pk)


def test_it_refuses_members_who_are_not_admins(org, member):
    with pytest.raises(PermissionDenied):
        org_for_admin(member, org.pk)


def test_it_follows_a_role_change_at_once(org, admin):
    Membership.objects.filter(organization=org, user=admin).update(role=Membership.Role.MEMBER)
    with pytest.raises(PermissionDenied):
        org_for_admin(admin, org.pk)
    Membership.objects.filter(organization=org, user=admin).delete()
    with pytest.raises(Http404):
        org_for_admin(admin, org.pk)


def test_it_reads_the_plan_as_it_is_now(org, admin):
    Plan.objects.filter(key="guard-premium").update(retention_days=400, name="Renamed")
    found = org_for_admin(admin, org.pk)
    assert (found.plan.retention_days, found.plan.name) == (400, "Renamed")


def test_an_admin_of_one_org_gets_nothing_of_another(org, other_org, admin):
    make_user("eve@globex.test", other_org, Membership.Role.ADMIN)
    with pytest.raises(Http404):
        org_for_admin(admin, other_org.pk)
    with pytest.raises(Http404):
        org_for_admin(admin, Organization.objects.order_by("-pk").first().pk + 1000)
