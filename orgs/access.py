"""The one place that decides who may administer an organization."""

from django.core.exceptions import PermissionDenied
from django.db import connection
from django.http import Http404

from .models import Membership, Organization, Plan, User
from .sqlrows import ModelColumns, table

_ORG = ModelColumns(Organization, "o")
_PLAN = ModelColumns(Plan, "p")


def org_plan_sql(org_id: str) -> tuple[str, str]:
    """(the SELECT list, the JOINs) that read the organization whose id is the column
    `org_id`, with its plan, as aliases o and p; org_with_plan makes the values one."""
    joins = (
        f" JOIN {table(Organization)} o ON o.id = {org_id} JOIN {table(Plan)} p ON p.id = o.plan_id"
    )
    return f"{_ORG.sql()}, {_PLAN.sql()}", joins


def org_with_plan(values) -> Organization:
    """The organization, its plan loaded, of the values org_plan_sql's list reads."""
    org = _ORG.instance(values[: len(_ORG)])
    org.plan = _PLAN.instance(values[len(_ORG) :])
    return org


def org_for_admin(user: User, org_id: int) -> Organization:
    """The organization (its plan loaded) if `user` is one of its admins.

    Raises 404 when the user has no membership there (outsiders and staff alike
    learn nothing about it) and 403 when they are a member without the admin role.

    One SELECT of the membership, organization and plan, written out (orgs.sqlrows):
    every organization page runs it, and the ORM's select_related took most of its
    time to build."""
    row = None
    if user.is_authenticated:
        columns, joins = org_plan_sql("m.organization_id")
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT m.role, {columns} FROM {table(Membership)} m{joins}"
                " WHERE m.organization_id = %s AND m.user_id = %s",
                [org_id, user.pk],
            )
            row = cursor.fetchone()
    if row is None:
        raise Http404("No such organization")
    if row[0] != Membership.Role.ADMIN:
        raise PermissionDenied("Only organization admins can do this")
    return org_with_plan(row[1:])


def admin_orgs(user: User):
    return Organization.objects.filter(
        memberships__user=user, memberships__role=Membership.Role.ADMIN
    ).select_related("plan")


def account_is_managed(org: Organization, user: User) -> bool:
    return org.domains.filter(domain=user.email_domain).exists()
