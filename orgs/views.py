from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from audit.services import request_meta

from .access import admin_orgs, org_for_admin
from .backends import axes_username
from .forms import AccountForm, ApiKeyForm
from .models import ApiKey
from .services import (
    ChangeAuthor,
    api_key_refusal,
    password_changed_record,
    password_reset_allowed,
    password_reset_request_record,
    sign_in_lockout_minutes_left,
)
from .services import api_key_create as create_key
from .services import api_key_revoke as revoke_key

PASSWORD_RESET_OVER_LIMIT = "Too many password reset requests. Try again in an hour."


@login_required
@require_GET
def org_picker(request):
    """The organizations the account administers; straight to the audit log when
    there is only one (unless asked for the list with ?all=1)."""
    orgs = list(admin_orgs(request.user).order_by("name"))
    if len(orgs) == 1 and not request.GET.get("all"):
        return redirect("audit:event-list", orgs[0].pk)
    return render(request, "orgs/org_picker.html", {"orgs": orgs})


@login_required
@require_http_methods(["GET", "POST"])
def account(request):
    form = AccountForm(request.POST or None, instance=request.user)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Times are now shown in {form.cleaned_data['time_zone']}.")
        return redirect("orgs:account")
    return render(request, "orgs/account.html", {"form": form}, status=400 if form.errors else 200)


# Sign-in lockout (AXES_LOCKOUT_CALLABLE) and the password views of django.contrib.auth,
# each with what it records.


def sign_in_locked_out(request, original_response=None, credentials=None):
    """The sign-in page, saying why and for how long, when axes refuses a sign-in."""
    username = axes_username(request, credentials)
    minutes = sign_in_lockout_minutes_left(username=username, ip=request.axes_ip_address)
    locked_out = (
        "Too many failed sign-ins for this account from your address. "
        f"Try again in {minutes} minute{'' if minutes == 1 else 's'}."
    )
    form = AuthenticationForm(request, initial={"username": username or ""})
    context = {"form": form, "locked_out": locked_out}
    return render(request, "registration/login.html", context, status=429)


class PasswordResetView(auth_views.PasswordResetView):
    """Mails a reset link when the email names an account, within the per-email and
    per-address limits; the page says the same whether or not it does."""

    def form_valid(self, form):
        email, ip = form.cleaned_data["email"], request_meta(self.request)["ip"]
        if not password_reset_allowed(email=email, ip=ip):
            form.add_error(None, PASSWORD_RESET_OVER_LIMIT)
            return self.render_to_response(self.get_context_data(form=form), status=429)
        password_reset_request_record(email=email, request=self.request)
        self.extra_email_context = {"site_url": settings.SITE_URL}  # links like exports'
        return super().form_valid(form)


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    def form_valid(self, form):
        response = super().form_valid(form)
        password_changed_record(user=form.user, request=self.request)
        return response


class PasswordChangeView(auth_views.PasswordChangeView):
    def form_valid(self, form):
        response = super().form_valid(form)
        password_changed_record(user=form.user, request=self.request)
        return response


# Organization API keys (Security › Audit log › API keys)

API_KEY_SHOWN = "api_key_shown"  # session key: the new key's secret, until displayed once


def _api_key_page(request, org, form: ApiKeyForm, status: int = 200):
    now = timezone.now()
    keys = list(ApiKey.objects.filter(organization=org).select_related("created_by")[:200])
    for key in keys:
        key.current_status = ApiKey.Status(key.status_at(now))
    shown = request.session.get(API_KEY_SHOWN)
    if shown and shown.get("org") == org.pk and status == 200:
        del request.session[API_KEY_SHOWN]  # once: a reload shows it no more
    else:
        shown = None
    context = {
        "org": org,
        "nav": "api-keys",
        "form": form,
        "keys": keys,
        "shown": shown,
        "refusal": api_key_refusal(org),
    }
    return render(request, "orgs/api_key_list.html", context, status=status)


@login_required
@require_GET
@never_cache
def api_key_list(request, org_id: int):
    org = org_for_admin(request.user, org_id)
    return _api_key_page(request, org, ApiKeyForm())


@login_required
@require_POST
def api_key_create(request, org_id: int):
    org = org_for_admin(request.user, org_id)
    if refusal := api_key_refusal(org):
        messages.error(request, refusal)
        return redirect("orgs:api-key-list", org.pk)
    form = ApiKeyForm(request.POST)
    if not form.is_valid():
        return _api_key_page(request, org, form, status=400)
    key, secret = create_key(
        organization=org,
        name=form.cleaned_data["name"],
        days=form.cleaned_data["days"],
        by=ChangeAuthor.from_request(request),
    )
    request.session[API_KEY_SHOWN] = {"org": org.pk, "label": key.label, "secret": secret}
    messages.success(request, f"API key {key.label} created.")
    return redirect("orgs:api-key-list", org.pk)


@login_required
@require_POST
def api_key_revoke(request, org_id: int, key_id: int):
    org = org_for_admin(request.user, org_id)
    key = get_object_or_404(
        ApiKey.objects.select_related("organization__plan"), pk=key_id, organization=org
    )
    if revoke_key(key=key, by=ChangeAuthor.from_request(request)):
        messages.success(request, f"API key {key.label} revoked: it no longer works.")
    else:
        messages.info(request, f"API key {key.label} was already {key.status.lower()}.")
    return redirect("orgs:api-key-list", org.pk)
