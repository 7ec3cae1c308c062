from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from .access import admin_orgs
from .forms import AccountForm


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
