import json
from datetime import UTC
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from orgs.access import org_for_admin
from orgs.models import Organization, Plan, Product

from .catalogue import CATEGORIES
from .charts import activity_chart
from .filters import EventFilter
from .geo import geo_credit
from .integrity import block_of, event_proof, integrity_status, public_keys
from .selectors import event_get, event_json, event_page, viewer_time_zone
from .services import (
    activity_setting_refusal,
    activity_setting_update,
    request_meta,
    stored_label,
)
from .settings_forms import ActivitySettingForm
from .tables import actor_html, event_rows, item_rows, local_time, location_text, rows_html


@login_required
@require_GET
@never_cache
def event_list(request, org_id: int):
    org = org_for_admin(request.user, org_id)
    if not org.plan.audit_log:
        return _audit_log_unavailable(request, org)
    tz = viewer_time_zone(request.user)
    events = EventFilter(request.GET, org=org, tz=tz)
    context = {"org": org, "nav": "events", "filter": events}
    if not events.is_valid():
        return render(request, "audit/event_list.html", context, status=400)
    page = event_page(events, request.GET.get("cursor"), scope=str(org.pk))
    items = events.query_items()
    query = urlencode(items)
    here = urlencode(items + [("cursor", page.cursor)]) if page.cursor else query  # for "back"
    context |= {
        "page": page,
        "rows": rows_html(event_rows(page.events, tz=tz, query=here)),
        "chart": activity_chart(events),
        "query": query,
        "integrity": integrity_status(org),
        "signing_keys": public_keys(),
        "geo_credit": geo_credit(),
    }
    return render(request, "audit/event_list.html", context)


@login_required
@require_GET
@never_cache
def event_detail(request, org_id: int, event_id: int):
    org = org_for_admin(request.user, org_id)
    event = event_get(org, event_id)
    tz = viewer_time_zone(request.user)
    context = {
        "org": org,
        "nav": "events",
        "event": event,
        "event_json": json.dumps(event_json(event, request), indent=2, ensure_ascii=False),
        "tz": tz,
        "local_time": local_time(event.occurred_at, tz),
        "utc_time": local_time(event.occurred_at, UTC),
        "recorded_time": local_time(event.recorded_at, tz),
        "actor": actor_html(event),
        "location": location_text(event),
        "geo_credit": geo_credit(),
        "context_items": item_rows(event.context),
        "container_items": item_rows(event.container),
        "back": request.GET.urlencode(),
        "sealed_in": block_of(org, (event.txid or 0, event.pk)),
    }
    return render(request, "audit/event_detail.html", context)


@login_required
@require_GET
@never_cache
def event_proof_download(request, org_id: int, event_id: int):
    """The event's inclusion proof as a JSON file, for `python -m audit.verify proof`."""
    org = org_for_admin(request.user, org_id)
    event = event_get(org, event_id)
    proof, why = event_proof(org, event)
    if proof is None:
        messages.warning(request, why)
        return redirect("audit:event-detail", org.pk, event.pk)
    response = JsonResponse({"data": proof}, json_dumps_params={"indent": 2})
    response["Content-Disposition"] = f'attachment; filename="event-{event.pk}-proof.json"'
    return response


@require_GET
def signing_keys(request):
    """The public keys that verify the audit log's blocks and export manifests (current
    and retired), for anyone: /.well-known/audit-log-signing-key."""
    return JsonResponse({"algorithm": "Ed25519", "keys": public_keys()})


def _audit_log_unavailable(request, org: Organization):
    plans = Plan.objects.filter(audit_log=True).order_by("id")
    context = {"org": org, "nav": "events", "plans": plans}
    return render(request, "audit/event_list_unavailable.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def activity_settings(request, org_id: int):
    org = org_for_admin(request.user, org_id)
    if request.method == "POST":
        return _activity_setting_save(request, org)
    products = Product.objects.filter(site__organization=org).select_related(
        "site", "activity_setting"
    )
    rows = [
        {
            "product": product,
            "stored": getattr(product, "activity_setting", None) is None
            or product.activity_setting.content_stored,
            "refusal": activity_setting_refusal(org, product),
        }
        for product in products
    ]
    context = {
        "org": org,
        "nav": "settings",
        "rows": rows,
        "refusal": activity_setting_refusal(org),
        "plans_with_setting": Plan.objects.filter(
            audit_log=True, user_created_activity=True, content_setting=True
        ),
        "entitlements": _plan_entitlements(org.plan),
    }
    return render(request, "audit/activity_settings.html", context)


def _activity_setting_save(request, org: Organization):
    refusal = activity_setting_refusal(org)
    if refusal:
        raise PermissionDenied(refusal)
    form = ActivitySettingForm(request.POST, org=org)
    if not form.is_valid():  # only a hand-made request gets here: the page sends valid choices
        messages.error(request, " ".join(e for errs in form.errors.values() for e in errs))
        return redirect("audit:activity-settings", org.pk)
    product, stored = form.cleaned_data["product"], form.content_stored
    changed = activity_setting_update(
        organization=org,
        product=product,
        content_stored=stored,
        actor_user=request.user,
        **request_meta(request),
    )
    state = stored_label(stored)
    if not changed:
        messages.info(request, f"User-created activity for {product} was already {state}.")
    elif stored:
        messages.success(
            request,
            f"User-created activity for {product} is now Stored: from now on its events "
            "keep page titles and issue keys.",
        )
    else:
        messages.success(
            request,
            f"User-created activity for {product} is now Not stored: from now on its events "
            "are recorded without page titles or issue keys. Earlier events keep theirs.",
        )
    return redirect("audit:activity-settings", org.pk)


def _plan_entitlements(plan: Plan) -> list[dict]:
    """Each activity category and whether `plan` records it, read from the plan's row
    so a staff edit in the Django admin shows at once."""
    rows = []
    kinds = plan.user_created_kinds
    for category in CATEGORIES:
        included = plan.audit_log and getattr(plan, category.plan_field)
        note = ""
        if included and category.key == "user_created" and kinds:
            labels = [Product.Kind(k).label if k in Product.Kind else k for k in kinds]
            note = "only " + " and ".join(labels)
        rows.append({"label": category.label, "included": included, "note": note})
    return rows
