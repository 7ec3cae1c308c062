"""Carry the audit log's filter into the export forms and links."""

from urllib.parse import urlencode

from django import template
from django.conf import settings

register = template.Library()


def _pairs(event_filter) -> list[tuple[str, str]]:
    pairs = []
    for name, value in event_filter.params().items():
        for one in value if isinstance(value, list | tuple) else [value]:
            if one is not None and one != "":
                pairs.append((name, str(one)))
    return pairs


@register.simple_tag
def filter_fields(event_filter) -> list[tuple[str, str]]:
    """(name, value) pairs for hidden inputs that rebuild `event_filter`."""
    return _pairs(event_filter)


@register.simple_tag
def filter_query(event_filter) -> str:
    """The page's own query string for `event_filter` (relative presets such as "Last
    7 days" kept), for the link to the confirmation page."""
    return urlencode(event_filter.query_items())


@register.simple_tag
def export_max_rows() -> str:
    return f"{settings.EXPORT_MAX_ROWS:,}"
