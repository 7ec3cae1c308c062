"""What the audit log shows of an event: the rows of its table (`event_rows`, made into
HTML by `rows_html`), and the cells the detail page shares.

The rows are one page of events already fetched by keyset: nothing here paginates or
orders (that would COUNT and OFFSET). Each cell is worked out here, once, as text or
escaped HTML, so the template only places it."""

import html
from collections.abc import Iterable
from zoneinfo import ZoneInfo

from django.urls import reverse
from django.utils.safestring import SafeData, SafeString, mark_safe

from .models import Event

MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def local_time(value, tz: ZoneInfo) -> str:
    """`value` in `tz` as "9 Nov 2026, 13:30:05" (by hand: strftime showed in profiles)."""
    t = value.astimezone(tz)
    return (
        f"{t.day} {MONTH_NAMES[t.month - 1]} {t.year}, {t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    )


def event_rows(events: Iterable[Event], *, tz: ZoneInfo, query: str = "") -> list[dict]:
    """The table's cells for `events`, each row a dict (what the template reads
    fastest): the time and its link to the event's page (keeping `query`, the page's
    filters), actor, activity, details, product and site, location and IP.

    Cells are HTML already (SafeString). An actor, activity or product and site that
    repeats on the page (most do) is escaped once and reused."""
    rows = []
    detail_base = None
    suffix = f"/?{html.escape(query)}" if query else "/"
    actors: dict[tuple, SafeString] = {}
    activities: dict[int, SafeString] = {}
    products: dict[tuple, SafeString] = {}
    for event in events:
        if detail_base is None:  # one reverse() per page: /o/<org>/audit-log/events/<id>/
            detail_base = reverse("audit:event-detail", args=[event.organization_id, 0])[:-2]
        actor_key = (event.actor_type, event.actor_name, event.actor_email)
        actor = actors.get(actor_key)
        if actor is None:
            actor = actors[actor_key] = _safe(actor_html(event))
        activity = activities.get(event.action_id)
        if activity is None:
            activity = activities[event.action_id] = _safe(event.action.label)
        product_key = (event.product_kind, event.site_name)
        product = products.get(product_key)
        if product is None:
            product = products[product_key] = _safe(two_lines(event.product_name, event.site_name))
        rows.append(
            {
                "url": SafeString(f"{detail_base}{event.pk}{suffix}"),
                "time": SafeString(local_time(event.occurred_at, tz)),  # digits and letters
                "actor": actor,
                "activity": activity,
                "details": event.message,
                "product": product,
                "location": two_lines(location_text(event), event.ip or ""),
            }
        )
    return rows


def _safe(value) -> SafeString:
    return SafeString(html_text(value))


def html_text(value) -> str:
    """`value` as HTML: itself when already safe, else escaped, as the template engine
    does, without Django's lazy-string checks on every call (a page makes hundreds)."""
    return value if isinstance(value, SafeData) else html.escape(str(value))


def rows_html(rows: list[dict]) -> str:
    """The table's rows as HTML, each cell escaped unless already safe. Built here, not
    by a template loop, which cost several milliseconds of server time a page. data-label
    names the cell in the one-card-per-row layout on phones, where the header row is
    hidden."""
    h = html_text
    return mark_safe(  # noqa: S308 - every value is escaped by html_text
        "\n".join(
            '<tr><td class="col-time" data-label="Time"><span class="cell">'
            f'<a href="{h(r["url"])}" class="row-link">{h(r["time"])}'
            '<span class="visually-hidden">: view details</span></a></span></td>'
            '<td class="col-actor" data-label="Actor"><span class="cell">'
            f"{h(r['actor'])}</span></td>"
            f'<td class="col-activity" data-label="Activity"><span class="cell">{h(r["activity"])}'
            "</span></td>"
            f'<td class="col-details" data-label="Details"><span class="cell">{h(r["details"])}'
            "</span></td>"
            f'<td class="col-product" data-label="Product"><span class="cell">{h(r["product"])}'
            "</span></td>"
            f'<td class="col-location" data-label="Location"><span class="cell">'
            f"{h(r['location'])}</span></td></tr>"
            for r in rows
        )
    )


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


# SafeString() rather than mark_safe() in the cells below: the same for a str, without
# mark_safe's check of its argument for lazy strings, a few hundred times a page.
_DASH = SafeString('<span class="muted">—</span>')


def two_lines(first: str, second: str):
    if not first and not second:
        return _DASH
    if not second:
        return first
    if not first:
        return SafeString(f'<span class="sub">{html_text(second)}</span>')
    return SafeString(f'{html_text(first)}<span class="sub">{html_text(second)}</span>')


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
    return SafeString(f"{html.escape(local)}<wbr>@{html.escape(domain)}")
