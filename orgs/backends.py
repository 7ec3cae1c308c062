"""The sign-in backends (settings.AUTHENTICATION_BACKENDS): django-axes' throttling glue
(AXES_*), then email and password."""

from axes.backends import AxesStandaloneBackend
from axes.exceptions import AxesBackendPermissionDenied
from django.contrib.auth.backends import ModelBackend
from django.db import connection
from django.http import HttpRequest

from .models import User, email_normalize
from .sqlrows import ModelColumns, table

_USER = ModelColumns(User, "u")


def axes_username(request: HttpRequest, credentials: dict | None) -> str | None:
    """The account axes counts failures for: the email as stored, so ADMIN@acme.test
    and admin@acme.test add up to one lockout."""
    if credentials is not None:
        email = credentials.get("username")
    else:
        email = getattr(request, "POST", {}).get("username")
    return email_normalize(email) if email else None


class LockoutBackend(AxesStandaloneBackend):
    """axes' check, before any password is looked at. A sign-in it refuses is marked on
    the request, so the audit receivers (orgs/signals.py) record nothing for it: the
    lockout itself was recorded once, when it began."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            # Not a sign-in over HTTP (Django's LoginView and the admin always pass the
            # request): the test client's login(), a shell. Nothing to throttle by.
            return None
        try:
            return super().authenticate(request, username, password, **kwargs)
        except AxesBackendPermissionDenied:
            request.sign_in_locked_out = True
            raise


def refused_by_lockout(request: HttpRequest | None) -> bool:
    return bool(getattr(request, "sign_in_locked_out", False))


class AccountBackend(ModelBackend):
    """Django's ModelBackend (email and password, active accounts only), with the account
    of a signed-in session read by one written-out SELECT (orgs.sqlrows): every signed-in
    request reads it, and the ORM's get() cost 0.3 of its 0.4 ms to build."""

    def get_user(self, user_id):
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {_USER.sql()} FROM {table(User)} u WHERE u.id = %s", [user_id])
            row = cursor.fetchone()
        if row is None:
            return None
        user = _USER.instance(row)
        return user if self.user_can_authenticate(user) else None
