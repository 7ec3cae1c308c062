"""Sign-in, sign-out and failed sign-in, recorded in the audit log of every
organization where the account is a member ("User accounts" activity).

The attempted password never reaches an event: a failed sign-in records only the
account the attempt named, and only when that account exists."""

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from audit.models import Event
from audit.services import Actor, event_record, request_meta, user_item

from .models import Organization, User

# Whoever typed a wrong password is unknown: the account is what was acted on.
ANONYMOUS = Actor(Event.ActorType.SYSTEM, "", "Anonymous", "")


def _meta(request) -> dict:
    return request_meta(request) if request is not None else {}


def _record_for_member_orgs(user: User, action: str, actor: Actor, request) -> None:
    meta = _meta(request)
    for org in Organization.objects.filter(memberships__user=user).select_related("plan"):
        event_record(
            organization=org, action=action, actor=actor, context=[user_item(user)], **meta
        )


@receiver(user_logged_in, dispatch_uid="orgs.audit_user_logged_in")
def audit_user_logged_in(sender, request, user, **kwargs) -> None:
    _record_for_member_orgs(user, "user_logged_in", Actor.for_user(user), request)


@receiver(user_logged_out, dispatch_uid="orgs.audit_user_logged_out")
def audit_user_logged_out(sender, request, user, **kwargs) -> None:
    if user is not None:  # signing out without a session is not an activity
        _record_for_member_orgs(user, "user_logged_out", Actor.for_user(user), request)


@receiver(user_login_failed, dispatch_uid="orgs.audit_user_login_failed")
def audit_user_login_failed(sender, credentials, request=None, **kwargs) -> None:
    # Only the attempted email is read from the credentials, never the password.
    email = str(credentials.get("username") or credentials.get("email") or "").strip()
    user = User.objects.filter(email__iexact=email).first() if email else None
    if user is None:
        return  # an email that names no account belongs to no organization's log
    _record_for_member_orgs(user, "user_login_failed", ANONYMOUS, request)
