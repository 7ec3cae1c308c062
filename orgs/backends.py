"""Sign-in throttling glue for django-axes (settings: AUTHENTICATION_BACKENDS, AXES_*)."""

from axes.backends import AxesStandaloneBackend
from axes.exceptions import AxesBackendPermissionDenied
from django.http import HttpRequest

from .models import email_normalize


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
