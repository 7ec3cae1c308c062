"""The audit log table: one page of events, already fetched by keyset.

The table never paginates or orders itself (that would COUNT and OFFSET); it only
renders the rows it is given, newest first."""

from zoneinfo import ZoneInfo

import django_tables2 as tables
from django.urls import reverse
from django.utils.html import conditional_escape, format_html
from django.utils.safestring import SafeString, mark_safe

from .models import Event

# Labels for the one-card-per-row layout on phones, where the header row is hidden.
SHORT_LABELS = {"time": "Time", "product": "Product", "location": "Location"}


def local_time(value, tz: ZoneInfo) -> str:
    local = value.astimezone(tz)
    return f"{local.day} {local:%b %Y, %H:%M:%S}"


class EventTable(tables.Table):
    time = tables.Column("Date and time", accessor="occurred_at", orderable=False)
    actor = tables.Column("Actor", accessor="actor_name", orderable=False)
    activity = tables.Column("Activity", accessor="action", orderable=False)
    details = tables.Column("Details", accessor="message", orderable=False)
    product = tables.Column("Product and site", accessor="site_name", orderable=False)
    location = tables.Column("Location and IP", accessor="ip", orderable=False)

    class Meta:
        model = Event
        fields: list[str] = []
        sequence = ("time", "actor", "activity", "details", "product", "location")
        orderable = False
        empty_text = ""
        attrs = {"class": "event-table"}

    def __init__(self, data, *, tz: ZoneInfo, query: str = "", **kwargs):
        super().__init__(data, **kwargs)
        self.tz = tz
        self.query = query
        self.columns["time"].column.verbose_name = f"Date and time ({tz})"
        self._detail_url = None

    def detail_url(self, record: Event) -> str:
        # One reverse() per page, not per row: the pattern is /o/<org>/audit-log/events/<id>/.
        if self._detail_url is None:
            self._detail_url = reverse("audit:event-detail", args=[record.organization_id, 0])
            self._detail_url = self._detail_url[: -len("0/")]
        url = f"{self._detail_url}{record.pk}/"
        return f"{url}?{self.query}" if self.query else url

    def body_html(self) -> SafeString:
        """The rows as HTML. Rendering each cell through django-tables2's BoundRow and
        the template engine cost more than every query of the page together, so the
        columns declared above are rendered here directly by their render_ methods."""
        names = list(self.sequence)
        headers = [conditional_escape(SHORT_LABELS.get(n, self.columns[n].header)) for n in names]
        renderers = [getattr(self, f"render_{n}") for n in names]
        rows = []
        for record in self.data.data:
            cells = "".join(
                f'<td class="col-{name}" data-label="{header}">'
                f'<span class="cell">{conditional_escape(render(record))}</span></td>'
                for name, header, render in zip(names, headers, renderers, strict=True)
            )
            rows.append(f"<tr>{cells}</tr>")
        return mark_safe("\n".join(rows))  # every value above went through conditional_escape

    def render_time(self, record: Event):
        url = self.detail_url(record)
        return format_html(
            '<a href="{}" class="row-link">{}<span class="visually-hidden">: view details'
            "</span></a>",
            url,
            local_time(record.occurred_at, self.tz),
        )

    def render_actor(self, record: Event):
        return actor_html(record)

    def render_activity(self, record: Event):
        return record.action.label

    def render_details(self, record: Event):
        return record.message

    def render_product(self, record: Event):
        return two_lines(record.product_name, record.site_name)

    def render_location(self, record: Event):
        return two_lines(location_text(record), record.ip or "")


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
