from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.views.decorators.http import require_GET

from orgs.access import org_for_admin


@login_required
@require_GET
def event_list(request, org_id: int):
    org_for_admin(request.user, org_id)
    raise Http404("The audit log page is being built (issue 3)")


@login_required
@require_GET
def event_detail(request, org_id: int, event_id: int):
    org_for_admin(request.user, org_id)
    raise Http404("The event detail is being built (issue 3)")


@login_required
def activity_settings(request, org_id: int):
    org_for_admin(request.user, org_id)
    raise Http404("Activity settings are being built (issue 4)")
