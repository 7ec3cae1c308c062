from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from audit.services import request_meta
from orgs.access import org_for_admin
from orgs.models import Organization

from .models import ExportRequest
from .services import ExportLimitReached, export_filter, export_request_create, manifest_path

READY_SOON = "We'll email you when your export is ready."


def _own_export(request: HttpRequest, org_id: int, export_id: int) -> ExportRequest:
    """The requester's export, else 404 (other admins included); then the admin check
    (403 for a requester who has since lost the admin role)."""
    export = get_object_or_404(
        ExportRequest.objects.select_related("organization"),
        pk=export_id,
        organization_id=org_id,
        requested_by_id=request.user.pk,
    )
    org_for_admin(request.user, org_id)
    return export


def _export_start(request: HttpRequest, org: Organization, data) -> ExportRequest | None:
    """Validates the filters in `data`, starts an export and says so in a message."""
    event_filter = export_filter(organization=org, user=request.user, filters=data)
    if not org.plan.audit_log:
        messages.error(request, f"The {org.plan.name} plan does not include the audit log.")
    elif not event_filter.is_valid():
        errors = "; ".join(e for errs in event_filter.errors.values() for e in errs)
        messages.error(request, f"Nothing was exported. Check the filters: {errors}")
    else:
        try:
            export = export_request_create(
                organization=org,
                requested_by=request.user,
                filters=event_filter.params(),
                filters_summary=event_filter.summary(),
                **request_meta(request),
            )
        except ExportLimitReached as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, READY_SOON)
            return export
    return None


@login_required
@require_GET
def export_list(request, org_id: int):
    org = org_for_admin(request.user, org_id)
    exports = list(ExportRequest.objects.filter(organization=org, requested_by=request.user)[:50])
    # The page polls ?rows=1 (the table alone) while an export is queued or running.
    template = (
        "exports/_export_table.html" if request.GET.get("rows") else "exports/export_list.html"
    )
    context = {"org": org, "nav": "exports", "exports": exports}
    return render(request, template, {**context, "pending": any(e.pending for e in exports)})


@login_required
@require_GET
def export_new(request, org_id: int):
    """The Export log dialog as a page of its own, for browsers without JavaScript."""
    org = org_for_admin(request.user, org_id)
    event_filter = export_filter(organization=org, user=request.user, filters=request.GET)
    return render(
        request, "exports/export_new.html", {"org": org, "nav": "events", "filter": event_filter}
    )


@login_required
@require_POST
def export_create(request, org_id: int):
    org = org_for_admin(request.user, org_id)
    data = request.POST.copy()
    data.pop("csrfmiddlewaretoken", None)
    # Back to the audit log as the admin was looking at it ("Last 7 days", not the
    # exact instants the export was given); re-encoded, so only a query string.
    query = QueryDict(data.pop("back", [""])[-1]).urlencode()
    _export_start(request, org, data)
    return redirect(reverse("audit:event-list", args=[org.pk]) + (f"?{query}" if query else ""))


@login_required
@require_GET
def export_download(request, org_id: int, export_id: int) -> HttpResponse:
    export = _own_export(request, org_id, export_id)
    if export.is_downloadable():
        try:
            file = open(export.file_path, "rb")  # noqa: SIM115 - FileResponse closes it
        except FileNotFoundError:
            pass
        else:
            return FileResponse(
                file, as_attachment=True, filename=export.download_name, content_type="text/csv"
            )
    expired = export.is_expired() or export.status == ExportRequest.Status.READY
    return render(
        request,
        "exports/export_download.html",
        {"org": export.organization, "nav": "exports", "export": export, "expired": expired},
        status=410 if expired else 200,
    )


@login_required
@require_GET
def export_manifest(request, org_id: int, export_id: int) -> HttpResponse:
    """The signed manifest beside a downloadable export (`python -m audit.verify export`)."""
    export = _own_export(request, org_id, export_id)
    if export.is_downloadable():
        try:
            file = open(manifest_path(export.file_path), "rb")  # noqa: SIM115 - FileResponse closes it
        except FileNotFoundError:
            raise Http404("This export has no manifest.") from None
        name = export.download_name.removesuffix(".csv") + ".manifest.json"
        return FileResponse(
            file, as_attachment=True, filename=name, content_type="application/json"
        )
    return redirect("exports:export-download", org_id, export_id)


@login_required
@require_POST
def export_again(request, org_id: int, export_id: int):
    """Export again with the filters of an earlier export (e.g. one whose link expired)."""
    export = _own_export(request, org_id, export_id)
    _export_start(request, export.organization, export.filters)
    return redirect("exports:export-list", org_id)
