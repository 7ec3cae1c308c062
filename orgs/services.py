"""Writes about accounts: what sign-ins, lockouts, unlocks, password resets and password
changes record in the audit log, and the password reset throttle."""

import math
from collections.abc import Iterable
from datetime import timedelta

from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import Max
from django.http import HttpRequest
from django.utils import timezone

from audit.services import ANONYMOUS, Actor, event_record, request_meta, user_item

from .models import Organization, PasswordResetRequest, User, email_normalize

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
