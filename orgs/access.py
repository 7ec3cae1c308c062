"""The one place that decides who may administer an organization."""

from django.core.exceptions import PermissionDenied
from django.http import Http404

from .models import Membership, Organization, User


def org_for_admin(user: User, org_id: int) -> Organization:
    """The organization if `user` is one of its admins.

    Raises 404 when the user has no membership there (outsiders and staff alike
    learn nothing about it) and 403 when they are a member without the admin role."""
    membership = (
        (
            Membership.objects.select_related("organization__plan")
            .filter(organization_id=org_id, user_id=user.pk)
            .first()
        )
        if user.is_authenticated
        else None
    )
    if membership is None:
        raise Http404("No such organization")
    if membership.role != Membership.Role.ADMIN:
        raise PermissionDenied("Only organization admins can do this")
    return membership.organization


def admin_orgs(user: User):
    return Organization.objects.filter(
        memberships__user=user, memberships__role=Membership.Role.ADMIN
    ).select_related("plan")


def account_is_managed(org: Organization, user: User) -> bool:
    return org.domains.filter(domain=user.email_domain).exists()
