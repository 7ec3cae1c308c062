from django.contrib.auth.decorators import login_required
from django.shortcuts import render


@login_required
def org_picker(request):
    memberships = request.user.memberships.filter(role="admin").select_related("organization__plan")
    return render(request, "orgs/org_picker.html", {"memberships": memberships})
