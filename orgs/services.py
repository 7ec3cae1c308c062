"""Writes to accounts, organizations and plans, with what each records in the audit log.

The Django admin (orgs/admin.py), the sign-in views and signals, and the API call these;
each records through audit's one recording service. Staff and admin changes name who
made them and from where (`ChangeAuthor`)."""

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import Max
from django.http import HttpRequest
from django.utils import timezone

from audit.services import ANONYMOUS, Actor, event_record, item, request_meta, user_item

from .models import (
    Membership,
    Organization,
    PasswordResetRequest,
    Plan,
    Product,
    Site,
    User,
    VerifiedDomain,
    email_normalize,
)

PASSWORD_RESET_WINDOW = timedelta(hours=1)


def account_for_email(email: str | None) -> User | None:
    """The account an email names, in any case, or None."""
    if not email_normalize(email):
        return None
    try:
        return User.objects.get_by_natural_key(email)
    except User.DoesNotExist:
        return None


def account_event_record(
    *, user: User, action: str, actor: Actor, request: HttpRequest | None
) -> None:
    """Record `action` about `user` in every organization where the account is a member
    (an account belongs to no single organization), with the request's IP and agent."""
    meta = request_meta(request) if request is not None else {}
    for org in Organization.objects.filter(memberships__user=user).select_related("plan"):
        event_record(
            organization=org, action=action, actor=actor, context=[user_item(user)], **meta
        )


# Sign-in lockout (django-axes counts the failures; see orgs/backends.py)


def sign_in_lockout_record(*, username: str | None, request: HttpRequest | None) -> None:
    """The lockout of `username` began: recorded once, when it begins; an email that
    names no account is locked out all the same but belongs to no organization."""
    user = account_for_email(username)
    if user is not None:
        account_event_record(
            user=user, action="user_login_locked_out", actor=ANONYMOUS, request=request
        )


def sign_in_lockout_minutes_left(*, username: str | None, ip: str | None) -> int:
    """Whole minutes (at least 1) until a locked-out `username` may sign in from `ip`."""
    cool_off = settings.AXES_COOLOFF_TIME
    latest = AccessAttempt.objects.filter(username=username, ip_address=ip).aggregate(
        latest=Max("attempt_time")
    )["latest"]
    left = cool_off if latest is None else latest + cool_off - timezone.now()
    return max(1, math.ceil(left.total_seconds() / 60))


def sign_in_unlock_record(*, attempts: Iterable[AccessAttempt], request: HttpRequest) -> None:
    """Staff deleted these failed-attempt rows: `user_login_unlocked` once for each
    account whose sign-ins they were locking out (rows that lock nothing record nothing)."""
    since = timezone.now() - settings.AXES_COOLOFF_TIME
    usernames = {
        a.username
        for a in attempts
        if a.failures_since_start >= settings.AXES_FAILURE_LIMIT and a.attempt_time > since
    }
    actor = Actor.for_user(request.user)
    for username in sorted(u for u in usernames if u):
        user = account_for_email(username)
        if user is not None:
            account_event_record(
                user=user, action="user_login_unlocked", actor=actor, request=request
            )


# Password reset and change


def password_reset_allowed(*, email: str, ip: str | None) -> bool:
    """Whether a reset request for `email` from `ip` is within the limits (per email,
    per address, in the last hour). One that is counts towards them; one that is not,
    does not, so a refused flood never pushes the limit further out. The count is in
    the database, so it holds across web workers; the rows last an hour."""
    now = timezone.now()
    PasswordResetRequest.objects.filter(requested_at__lt=now - PASSWORD_RESET_WINDOW).delete()
    mine = PasswordResetRequest.objects.create(email=email_normalize(email), ip=ip)
    # Counting up to our own row, concurrent requests see each other in order.
    counted = PasswordResetRequest.objects.filter(
        requested_at__gte=now - PASSWORD_RESET_WINDOW, pk__lte=mine.pk
    )
    over = counted.filter(email=mine.email).count() > settings.PASSWORD_RESET_MAX_PER_EMAIL or (
        ip is not None and counted.filter(ip=ip).count() > settings.PASSWORD_RESET_MAX_PER_IP
    )
    if over:
        mine.delete()
    return not over


def password_reset_request_record(*, email: str, request: HttpRequest) -> None:
    """A reset was asked for `email`: recorded when it names an account (else nothing:
    no organization's log has it, and the page says the same either way)."""
    user = account_for_email(email)
    if user is not None:
        account_event_record(
            user=user, action="user_password_reset_requested", actor=ANONYMOUS, request=request
        )


def password_changed_record(*, user: User, request: HttpRequest) -> None:
    """`user` set a new password: on the change form, or through a reset link."""
    account_event_record(
        user=user, action="user_password_changed", actor=Actor.for_user(user), request=request
    )


# Changes to organizations and plans (the Django admin today, the API next)


@dataclass(frozen=True)
class ChangeAuthor:
    """Who makes a change and from where: recorded with it."""

    user: User
    ip: str | None = None
    user_agent: str = ""

    @classmethod
    def from_request(cls, request: HttpRequest) -> "ChangeAuthor":
        return cls(request.user, **request_meta(request))


def org_change_record(
    *, by: ChangeAuthor, organization: Organization, action: str, plan: Plan | None = None, **fields
) -> None:
    event_record(
        organization=organization,
        action=action,
        actor=Actor.for_user(by.user),
        ip=by.ip,
        user_agent=by.user_agent,
        plan=plan,
        **fields,
    )


ROLE_LABELS = dict(Membership.Role.choices)


def _role(role: str) -> str:
    return ROLE_LABELS.get(role, role)


def membership_record(*, by: ChangeAuthor, membership: Membership, action: str) -> None:
    """org_member_added or org_member_removed, with the membership's role."""
    org_change_record(
        by=by,
        organization=membership.organization,
        action=action,
        context=[user_item(membership.user)],
        details={"role": _role(membership.role)},
    )


def memberships_before(pks: Iterable[int | None]) -> dict[int, Membership]:
    """The memberships `pks` as they are now, before a save changes them."""
    pks = [pk for pk in pks if pk is not None]
    rows = Membership.objects.filter(pk__in=pks).select_related("user", "organization__plan")
    return {m.pk: m for m in rows}


def membership_change_record(
    *, by: ChangeAuthor, membership: Membership, before: Membership | None
) -> None:
    """Records what a save changed, given the row as it was (None: it is new): added,
    moved (removed + added), or a role change (admin added / removed, role changed)."""
    if before is None:
        membership_record(by=by, membership=membership, action="org_member_added")
        return
    if (before.organization_id, before.user_id) != (membership.organization_id, membership.user_id):
        membership_record(by=by, membership=before, action="org_member_removed")
        membership_record(by=by, membership=membership, action="org_member_added")
        return
    if before.role == membership.role:
        return
    if membership.role == Membership.Role.ADMIN:
        action = "org_admin_added"
    elif before.role == Membership.Role.ADMIN:
        action = "org_admin_removed"
    else:
        action = "org_member_role_changed"
    org_change_record(
        by=by,
        organization=membership.organization,
        action=action,
        context=[user_item(membership.user)],
        details={"old": _role(before.role), "new": _role(membership.role)},
    )


def account_memberships_removed_record(*, by: ChangeAuthor, users) -> None:
    """Deleting accounts ends their memberships: each organization records the removal."""
    memberships = Membership.objects.filter(user__in=users)
    for membership in memberships.select_related("user", "organization__plan"):
        membership_record(by=by, membership=membership, action="org_member_removed")


def domain_record(*, by: ChangeAuthor, domain: VerifiedDomain, action: str) -> None:
    """domain_verified or domain_removed."""
    org_change_record(
        by=by,
        organization=domain.organization,
        action=action,
        context=[item("domain", domain.pk, domain.domain)],
    )


def site_added_record(*, by: ChangeAuthor, site: Site) -> None:
    org_change_record(by=by, organization=site.organization, action="site_added", site=site)


def product_added_record(*, by: ChangeAuthor, product: Product) -> None:
    org_change_record(
        by=by, organization=product.site.organization, action="product_added", product=product
    )


def _records_org_activity(plan: Plan) -> bool:
    return plan.audit_log and plan.admin_activity


def _ruling_plan(new: Plan, old: Plan) -> Plan:
    """Whose rules record a change between two plans: the new one's when it records
    organization activity, else the old one's. So a change that ends a log (a downgrade,
    an entitlement switched off) is still its last event, and one that starts a log its
    first."""
    return new if _records_org_activity(new) else old


def plan_retention_refusal(days: int | None) -> str:
    """Why `days` cannot be a plan's retention, or ""."""
    minimum = settings.AUDIT_MIN_RETENTION_DAYS
    if days is not None and days < minimum:
        return f"Retention must be at least {minimum} days (AUDIT_MIN_RETENTION_DAYS)."
    return ""


def _setting_text(plan: Plan, name: str) -> str:
    value = getattr(plan, name)
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value) if value != "" else "(blank)"


def plan_changes(before: Plan, after: Plan) -> list[tuple[str, str, str]]:
    """(setting label, old, new) for each entitlement that differs."""
    changes = []
    for field in Plan._meta.concrete_fields:
        if field.primary_key or field.name == "key":
            continue
        old, new = _setting_text(before, field.name), _setting_text(after, field.name)
        if old != new:
            changes.append((str(field.verbose_name), old, new))
    return changes


def plan_update_record(*, by: ChangeAuthor, before: Plan, after: Plan) -> None:
    """Records `org_plan_updated`, one event per changed setting, in every organization
    on the plan: a plan's entitlements and retention are each such organization's
    business."""
    changes = plan_changes(before, after)
    ruling = _ruling_plan(after, before)
    for org in Organization.objects.filter(plan=after).order_by("pk"):
        for setting, old, new in changes:
            org_change_record(
                by=by,
                organization=org,
                action="org_plan_updated",
                details={"plan": after.name, "setting": setting, "old": old, "new": new},
                plan=ruling,
            )


def organization_plan_change_record(
    *, by: ChangeAuthor, organization: Organization, old_plan: Plan
) -> None:
    """Records `org_plan_changed` (old -> new plan names) under the ruling plan's rules."""
    org_change_record(
        by=by,
        organization=organization,
        action="org_plan_changed",
        details={"old": old_plan.name, "new": organization.plan.name},
        plan=_ruling_plan(organization.plan, old_plan),
    )
