import json
from datetime import UTC
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from orgs.access import org_for_admin
from orgs.models import Organization, Plan

from .charts import activity_chart
from .filters import EventFilter
from .selectors import event_get, event_json, event_page, viewer_time_zone
from .tables import EventTable, actor_html, item_rows, local_time, location_text


@login_required
@require_GET
@never_cache
def event_list(request, org_id: int):
    org = org_for_admin(request.user, org_id)
    if not org.plan.audit_log:
        return _audit_log_unavailable(request, org)
    tz = viewer_time_zone(request.user)
    events = EventFilter(request.GET, org=org, tz=tz)
    valid = events.is_valid()
    page = event_page(events, request.GET.get("cursor"), scope=str(org.pk)) if valid else None
    query = urlencode(events.query_items())
    context = {
        "org": org,
        "nav": "events",
        "filter": events,
        "page": page,
        "table": EventTable(page.events if page else [], tz=tz, query=query),
        "chart": activity_chart(events) if valid else None,
        "query": query,
    }
    return render(request, "audit/event_list.html", context, status=200 if valid else 400)


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
        "context_items": item_rows(event.context),
        "container_items": item_rows(event.container),
        "back": request.GET.urlencode(),
    }
    return render(request, "audit/event_detail.html", context)


def _audit_log_unavailable(request, org: Organization):
    plans = Plan.objects.filter(audit_log=True).order_by("id")
    context = {"org": org, "nav": "events", "plans": plans}
    return render(request, "audit/event_list_unavailable.html", context)


@login_required
def activity_settings(request, org_id: int):
    org_for_admin(request.user, org_id)
    raise Http404("Activity settings are being built (issue 4)")
