"""What the audit log shows of an event: the rows of its table, rendered by the partial
templates/audit/_event_rows.html, and the cells the detail page shares.

The rows are one page of events already fetched by keyset: nothing here paginates or
orders (that would COUNT and OFFSET). Each cell is worked out here, once, as text or
escaped HTML, so the template only places it."""

from collections.abc import Iterable
from zoneinfo import ZoneInfo

from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from .models import Event


def local_time(value, tz: ZoneInfo) -> str:
    local = value.astimezone(tz)
    return f"{local.day} {local:%b %Y, %H:%M:%S}"


def event_rows(events: Iterable[Event], *, tz: ZoneInfo, query: str = "") -> list[dict]:
    """The table's cells for `events`, each row a dict (what the template reads
    fastest): the time and its link to the event's page (keeping `query`, the page's
    filters), actor, activity, details, product and site, location and IP."""
    rows = []
    detail_base = None
    for event in events:
        if detail_base is None:  # one reverse() per page: /o/<org>/audit-log/events/<id>/
            detail_base = reverse("audit:event-detail", args=[event.organization_id, 0])[:-2]
        url = f"{detail_base}{event.pk}/"
        rows.append(
            {
                "url": f"{url}?{query}" if query else url,
                "time": local_time(event.occurred_at, tz),
                "actor": actor_html(event),
                "activity": event.action.label,
                "details": event.message,
                "product": two_lines(event.product_name, event.site_name),
                "location": two_lines(location_text(event), event.ip or ""),
            }
        )
    return rows


def item_rows(items: list) -> list[tuple[str, str]]:
    """Context or container items as (name, what it is) for people to read."""
    rows = []
    for it in items or []:
        name = it.get("name") or it.get("email") or it.get("id") or "(not stored)"
        kind = str(it.get("type") or "")
        if it.get("email") and it.get("name"):
            kind += f" · {it['email']}"
        rows.append((str(name), kind))
    return rows


def location_text(event: Event) -> str:
    return ", ".join(p for p in (event.city, event.region, event.country) if p)


def two_lines(first: str, second: str):
    if not first and not second:
        return mark_safe('<span class="muted">—</span>')
    if not second:
        return first
    if not first:
        return format_html('<span class="sub">{}</span>', second)
    return format_html('{}<span class="sub">{}</span>', first, second)


def actor_html(event: Event):
    if event.actor_type == Event.ActorType.SYSTEM:
        return "System"
    if event.actor_type == Event.ActorType.ANONYMOUS:
        return "Anonymous"
    if event.actor_type == Event.ActorType.API_TOKEN:
        return two_lines(event.actor_name or "API token", "API token")
    if event.actor_type == Event.ActorType.PRODUCT:
        return two_lines(event.actor_name or "Product", "Product")
    email = breakable_email(event.actor_email)
    return two_lines(event.actor_name or email, email if event.actor_name else "")


def breakable_email(email: str):
    """An email that may wrap before its @ rather than mid-word in a narrow column."""
    local, at, domain = email.rpartition("@")
    if not at:
        return email
    return format_html("{}<wbr>@{}", local, domain)
