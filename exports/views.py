from django.contrib.auth.decorators import login_required
from django.http import Http404

from orgs.access import org_for_admin


@login_required
def export_list(request, org_id: int):
    org_for_admin(request.user, org_id)
    raise Http404("Exports are being built (issue 5)")
