"""Sign-in, sign-out, failed sign-in and the lockout after repeated failures, recorded
in the audit log of every organization where the account is a member ("User accounts"
activity), through orgs.services.

The attempted password never reaches an event: a failed sign-in records only the
account the attempt named, and only when that account exists. A sign-in refused
because of a lockout records nothing: the lockout was recorded once, when it began."""

from axes.signals import user_locked_out
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from audit.services import ANONYMOUS, Actor

from .backends import refused_by_lockout
from .services import account_event_record, account_for_email, sign_in_lockout_record


@receiver(user_logged_in, dispatch_uid="orgs.audit_user_logged_in")
def audit_user_logged_in(sender, request, user, **kwargs) -> None:
    account_event_record(
        user=user, action="user_logged_in", actor=Actor.for_user(user), request=request
    )


@receiver(user_logged_out, dispatch_uid="orgs.audit_user_logged_out")
def audit_user_logged_out(sender, request, user, **kwargs) -> None:
    if user is not None:  # signing out without a session is not an activity
        account_event_record(
            user=user, action="user_logged_out", actor=Actor.for_user(user), request=request
        )


@receiver(user_login_failed, dispatch_uid="orgs.audit_user_login_failed")
def audit_user_login_failed(sender, credentials, request=None, **kwargs) -> None:
    if refused_by_lockout(request):
        return
    # Only the attempted email is read from the credentials, never the password.
    user = account_for_email(str(credentials.get("username") or credentials.get("email") or ""))
    if user is None:
        return  # an email that names no account belongs to no organization's log
    account_event_record(user=user, action="user_login_failed", actor=ANONYMOUS, request=request)


@receiver(user_locked_out, dispatch_uid="orgs.audit_user_locked_out")
def audit_user_locked_out(sender, request, username, **kwargs) -> None:
    # axes signals again for each attempt refused while locked out: only the failure
    # that reached the limit begins the lockout.
    if not refused_by_lockout(request):
        sign_in_lockout_record(username=username, request=request)
