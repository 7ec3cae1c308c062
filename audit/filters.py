"""The one filter definition shared by the audit log page, the export and the API.

    events = EventFilter(request.GET, org=org, tz=viewer_time_zone(request.user))
    if events.is_valid():
        event_list(filters=events)      # audit.selectors: Event queryset, newest first;
                                        # never COUNT it (a search: by term hash)
        event_page(events, cursor, scope=str(org.pk))  # one keyset page
        event_walk(events, limit=10_000)  # keyset steps, newest first (the export)
        events.summary()   # ["Search: carol@acme.test", "Last 7 days", ...]
        events.params()    # JSON-serializable; EventFilter(params, ...) rebuilds it

It is a form, not a django-filter FilterSet: no parameter maps to a queryset filter of
its own (the window is range, from, to and the retention together; a search or several
activities change the query's shape to another index walk), so a FilterSet's filter
methods would do nothing and the selectors (audit/selectors.py) would still build the
queries. The form validates and returns typed values; the selectors turn them into
queries, one place for the page, the export and the API.

Parameters (all optional, from a plain GET form or the API's query string):
- `q`: an exact term: a user's name or email, a group name or a site name;
  case-insensitive, whole value, surrounding spaces ignored. Served by the EventTerm
  rows (organization, term hash, and per row its events' times and ids), never by LIKE.
- `range`: 24h, 7d (the default), 30d, 90d, 180d or custom.
- `from` / `to`: a date (YYYY-MM-DD, in the viewer's time zone; `to` includes its whole
  day), an exact ISO 8601 instant or epoch milliseconds (10 to 13 digits; `to` then is
  exclusive). Either one given makes the range custom, whatever `range` says, so typing
  a date without touching the preset still does what the admin expects.
- `action`: activity keys, repeatable; only the activities the plan records.
- For the API (not on the page's form): `actor` (repeatable: the actor's id, or email
  in any case), `ip` (repeatable: an exact address), `product` (repeatable: a product
  kind such as jira, or a product id) and `location`, a JSON array of objects with any
  of city, countryName, regionName: an event matches when every key of one object
  equals its own.

Whatever the filters say, nothing older than the plan's retention (plan.retention_days)
is ever returned, even before the purge job has removed it: a window reaching further
back is cut at the retention start (and `clipped` says so).

params() resolves a relative preset to the exact instants it meant when it was called
(`range=custom`, `from`/`to` as UTC ISO instants), so an export made from "Last 7 days"
and run later covers the same window the admin was looking at.
"""

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property, lru_cache
from zoneinfo import ZoneInfo

from django import forms
from django.utils import timezone
from django.utils.choices import BaseChoiceIterator
from django.utils.safestring import mark_safe

from orgs.models import Organization

from .catalogue import ACTIONS, CATEGORIES
from .forms import (
    MAX_SEARCH_LENGTH,
    RANGE_CHOICES,
    RANGE_DEFAULT,
    RANGE_HOURS,
    DateOrTimeField,
    EventFilterForm,
    as_end,
    as_start,
)
from .selectors import LOCATION_KEYS
from .services import activity_for_key, ip_valid, normalize_term
from .tables import html_text

RANGE_LABELS = dict(RANGE_CHOICES)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_PRODUCT_ID = 2**63 - 1
MAX_LOCATION_LENGTH = 2000
# The API's filters that the hourly counts behind the chart know nothing of.
ROW_FILTERS = ("actor", "ip", "product", "location")


def _recorded_categories(plan) -> tuple[str, ...]:
    """The keys of the categories `plan` records: all that the lists below depend on,
    so they are worked out once per process for each combination."""
    if not plan.audit_log:
        return ()
    return tuple(c.key for c in CATEGORIES if getattr(plan, c.plan_field))


def plan_actions(plan) -> list:
    """The catalogue actions whose category `plan` records, in catalogue order."""
    return list(_actions_of(_recorded_categories(plan)))


def action_choices(plan) -> list[tuple[str, list[tuple[str, str]]]]:
    """Activity choices grouped by category, as the Activity filter offers them."""
    return [(label, list(members)) for label, members in _choices_of(_recorded_categories(plan))]


@lru_cache(maxsize=64)
def _actions_of(categories: tuple[str, ...]) -> tuple:
    return tuple(a for a in ACTIONS if a.category in categories)


class _Choices(BaseChoiceIterator):
    """Choices already in Django's normalized shape: a ChoiceField and its widget take
    a BaseChoiceIterator as it is, where a list is normalized again (a hundred
    activities, twice) each time a filter is made."""

    def __init__(self, groups: tuple):
        self.groups = groups

    def __iter__(self):
        return iter(self.groups)


@lru_cache(maxsize=64)
def _choices_of(categories: tuple[str, ...]) -> _Choices:
    actions = _actions_of(categories)
    groups = []
    for category in CATEGORIES:
        members = tuple((a.key, a.label) for a in actions if a.category == category.key)
        if members:
            groups.append((category.label, members))
    return _Choices(tuple(groups))


@lru_cache(maxsize=64)
def _keys_of(categories: tuple[str, ...]) -> frozenset[str]:
    return frozenset(a.key for a in _actions_of(categories))


@lru_cache(maxsize=512)
def _groups_of(categories: tuple[str, ...], ticked: frozenset[str]) -> list:
    return [
        (category, [(key, label, key in ticked) for key, label in members])
        for category, members in _choices_of(categories)
    ]


@lru_cache(maxsize=512)
def _fieldsets_html(categories: tuple[str, ...], ticked: frozenset[str]) -> str:
    h = html_text
    return mark_safe(  # noqa: S308 - every value is escaped by html_text
        "\n".join(
            f"<fieldset><legend>{h(category)}</legend>"
            + "".join(
                f'<label class="check"><input type="checkbox" name="action" '
                f'value="{h(key)}"{" checked" if on else ""}> {h(label)}</label>'
                for key, label, on in actions
            )
            + "</fieldset>"
            for category, actions in _groups_of(categories, ticked)
        )
    )


class InstantField(DateOrTimeField):
    """A date or ISO instant (DateOrTimeField), or epoch milliseconds as the API sends."""

    def to_python(self, value):
        text = (value or "").strip()
        if text.isascii() and text.isdigit() and 10 <= len(text) <= 13:
            moment = EPOCH + timedelta(milliseconds=int(text))
            if not 2000 <= moment.year <= 2100:
                raise forms.ValidationError(
                    self.error_messages["out_of_range"], code="out_of_range"
                )
            return moment
        return super().to_python(value)


class RepeatedField(forms.Field):
    """A repeatable parameter (`?ip=a&ip=b`): each value stripped and checked by
    `parse`, which returns the typed value or raises ValueError; blanks are ignored."""

    widget = forms.MultipleHiddenInput

    def __init__(self, *, parse, invalid: str, max_length: int = 254, **kwargs):
        super().__init__(required=False, **kwargs)
        self.parse, self.invalid, self.max_length = parse, invalid, max_length

    def to_python(self, value) -> list:
        values = [value] if isinstance(value, str) else list(value or [])
        typed = []
        for raw in values:
            text = str(raw).strip()
            if not text:
                continue
            try:
                if len(text) > self.max_length or "\x00" in text:  # no column stores NUL
                    raise ValueError(text)
                one = self.parse(text)
            except ValueError:
                raise forms.ValidationError(self.invalid % {"value": text[:40]}) from None
            if one not in typed:
                typed.append(one)
        return typed


def _ip(text: str) -> str:
    address = ip_valid(text)
    if address is None:
        raise ValueError(text)
    return address


def _product(text: str) -> int | str:
    """A product id (digits) or a product kind key (`jira`)."""
    if text.isascii() and text.isdigit():
        if int(text) > MAX_PRODUCT_ID:
            raise ValueError(text)
        return int(text)
    return text


class LocationField(forms.CharField):
    """A JSON array of objects with any of city, countryName, regionName (strings);
    never split on commas, since place names hold them."""

    default_error_messages = {
        "invalid": 'Give locations as a JSON array such as [{"city": "Berlin", '
        '"countryName": "Germany"}]; each object with at least one of '
        + ", ".join(LOCATION_KEYS)
        + ", each a string."
    }

    def to_python(self, value) -> list[dict[str, str]]:
        text = super().to_python(value)
        if not text:
            return []
        try:
            places = json.loads(text)
        except (ValueError, RecursionError):
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid") from None
        if not isinstance(places, list) or not places or not all(map(_is_place, places)):
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        return places


def _is_place(place) -> bool:
    return (
        isinstance(place, dict)
        and bool(place)
        and all(
            k in LOCATION_KEYS and isinstance(v, str) and "\x00" not in v for k, v in place.items()
        )
    )


@dataclass(frozen=True)
class Window:
    """The instants the filter covers: start inclusive, end exclusive (None: now and on)."""

    start: datetime
    end: datetime | None
    clipped: bool  # the filter asked for more than retention keeps


class EventFilter(EventFilterForm):
    """The filter, bound to one organization and one viewer's time zone."""

    q = forms.CharField(
        label="Search",
        required=False,
        max_length=MAX_SEARCH_LENGTH,
        error_messages={
            "max_length": f"Search for at most {MAX_SEARCH_LENGTH} characters: "
            "an exact name, email, group or site."
        },
    )
    range = forms.ChoiceField(
        label="Date range",
        required=False,
        choices=RANGE_CHOICES,
        initial=RANGE_DEFAULT,
        error_messages={"invalid_choice": "Choose a date range from the list."},
    )
    action = forms.MultipleChoiceField(
        label="Activity",
        required=False,
        error_messages={"invalid_choice": "Unknown activity “%(value)s”: choose from the list."},
    )
    actor = RepeatedField(
        label="Actor", parse=str, invalid="“%(value)s” is too long for an actor id or email."
    )
    ip = RepeatedField(
        label="IP address", parse=_ip, invalid="“%(value)s” is not an IPv4 or IPv6 address."
    )
    product = RepeatedField(
        label="Product",
        parse=_product,
        max_length=40,
        invalid="“%(value)s” is not a product: give a product id or kind such as jira.",
    )
    location = LocationField(label="Location", required=False, max_length=MAX_LOCATION_LENGTH)

    def __init__(self, data=None, *, org: Organization, tz=None, now: datetime | None = None):
        super().__init__(data if data is not None else {})
        self.org = org
        self.tz = tz or ZoneInfo("UTC")
        self.now = now or timezone.now()
        self.categories = _recorded_categories(org.plan)
        self.fields["action"].choices = _choices_of(self.categories)
        retention_day = self.retention_start.astimezone(self.tz).date().isoformat()
        today = self.now.astimezone(self.tz).date().isoformat()
        for name in ("from", "to"):
            self.fields[name].widget.attrs.update(min=retention_day, max=today)

    # -- cleaning: typed values with defaults --------------------------------------------

    def clean_q(self) -> str:
        return normalize_term(self.cleaned_data.get("q") or "")

    def clean_range(self) -> str:
        return self.cleaned_data.get("range") or RANGE_DEFAULT

    def clean_action(self) -> list[str]:
        return list(dict.fromkeys(self.cleaned_data.get("action") or []))

    def clean(self):
        cleaned = super().clean()
        getlist = getattr(self.data, "getlist", None)
        if getlist is not None and len(getlist("location")) > 1:
            self.add_error("location", "Give this only once: the link repeats it.")
        return cleaned

    @property
    def is_custom(self) -> bool:
        d = self.cleaned_data
        return d["range"] == "custom" or d["from"] is not None or d["to"] is not None

    @cached_property
    def retention_start(self) -> datetime:
        return self.now - self.org.plan.retention

    @cached_property
    def window(self) -> Window:
        d = self.cleaned_data
        if self.is_custom:
            start = as_start(d["from"], self.tz) if d["from"] else self.retention_start
            end = as_end(d["to"], self.tz) if d["to"] else None
        else:
            start = self.now - timedelta(hours=RANGE_HOURS[d["range"]])
            end = None
        clipped = start < self.retention_start
        return Window(max(start, self.retention_start), end, clipped)

    @cached_property
    def action_ids(self) -> list[int]:
        """Activity ids to filter on; [] means every activity (also when every one the
        plan records is chosen, which is the same set and a cheaper query)."""
        keys = self.cleaned_data["action"]
        if not keys or len(keys) >= len(_actions_of(self.categories)):
            return []
        return [activity_for_key(k).pk for k in keys]

    @property
    def has_row_filters(self) -> bool:
        """Whether actor, ip, product or location narrow the events (ROW_FILTERS)."""
        return any(self.cleaned_data[name] for name in ROW_FILTERS)

    # -- describing it ----------------------------------------------------------------

    def summary(self) -> list[str]:
        """Short human phrases for the filters in force, for the export dialog and email."""
        return list(self._summary)

    @cached_property  # the page shows it twice; the filter never changes once made
    def _summary(self) -> list[str]:
        if not self.is_valid():
            return []
        d = self.cleaned_data
        phrases = [f"Search: {d['q']}"] if d["q"] else []
        phrases.append(self.range_label())
        if d["action"]:
            labels = [activity_for_key(k).label for k in d["action"]]
            phrases.append("Activity: " + ", ".join(labels))
        else:
            phrases.append("All activities")
        for name in ROW_FILTERS:
            if d[name]:
                values = [_location_text(v) if name == "location" else str(v) for v in d[name]]
                phrases.append(f"{self.fields[name].label}: " + ", ".join(values))
        return phrases

    def range_label(self) -> str:
        if not self.is_custom:
            return RANGE_LABELS[self.cleaned_data["range"]]
        start, end = self.window.start.astimezone(self.tz), self.window.end
        zone = str(self.tz)

        def when(value: datetime, is_end: bool) -> str:
            local = value.astimezone(self.tz)
            if local.hour == local.minute == local.second == local.microsecond == 0:
                day = (local - timedelta(days=1)) if is_end else local
                return f"{day.day} {day:%b %Y}"
            return f"{local.day} {local:%b %Y %H:%M}"

        if end is None:
            return f"From {when(start, False)} to now ({zone})"
        return f"{when(start, False)} – {when(end, True)} ({zone})"

    def params(self) -> dict:
        """The cleaned filters as JSON-ready data that rebuilds this filter, with the
        window resolved to absolute UTC instants (see the module docstring)."""
        if not self.is_valid():
            raise ValueError("params() needs a valid filter")
        d = self.cleaned_data
        end = self.window.end or self.now
        params: dict = {
            "range": "custom",
            "from": _instant(self.window.start),
            "to": _instant(end),
        }
        if d["q"]:
            params["q"] = d["q"]
        if d["action"]:
            params["action"] = list(d["action"])
        return params | dict(self._row_filter_items())

    def query_items(self) -> list[tuple[str, str]]:
        """The filters as the page's own query string (relative presets kept), for
        links that keep them: paging, detail and back."""
        return list(self._query_items)

    @cached_property  # the page, its links and the export dialog each ask for it
    def _query_items(self) -> list[tuple[str, str]]:
        if not self.is_valid():
            return []
        d = self.cleaned_data
        items = [("q", d["q"])] if d["q"] else []
        if self.is_custom:
            items.append(("range", "custom"))
            for name in ("from", "to"):
                if d[name] is not None:
                    items.append((name, _query_value(d[name])))
        else:
            items.append(("range", d["range"]))
        items += [("action", key) for key in d["action"]]
        for name, value in self._row_filter_items():
            items += [(name, value)] if isinstance(value, str) else [(name, v) for v in value]
        return items

    def _row_filter_items(self) -> list[tuple[str, str | list[str]]]:
        d = self.cleaned_data
        items: list[tuple[str, str | list[str]]] = [
            (name, [str(v) for v in d[name]]) for name in ("actor", "ip", "product") if d[name]
        ]
        if d["location"]:
            items.append(("location", json.dumps(d["location"], ensure_ascii=False)))
        return items

    # -- what the form shows ------------------------------------------------------------

    @property
    def range_value(self) -> str:
        """The preset the Date range control shows, from the raw input."""
        data = self.data
        if (data.get("from") or "").strip() or (data.get("to") or "").strip():
            return "custom"
        value = data.get("range") or RANGE_DEFAULT
        return value if value in RANGE_LABELS else RANGE_DEFAULT

    def range_options(self) -> str:
        """The Date range control's options as HTML, the current preset selected."""
        current = self.range_value
        return mark_safe(  # noqa: S308 - every value is escaped by html_text
            "".join(
                f'<option value="{html_text(value)}"{" selected" if value == current else ""}>'
                f"{html_text(label)}</option>"
                for value, label in self.fields["range"].choices
            )
        )

    @cached_property
    def _ticked(self) -> frozenset[str]:
        """The activities ticked in the raw input that the dropdown offers."""
        getlist = getattr(self.data, "getlist", None)
        raw = getlist("action") if getlist else self.data.get("action") or []
        chosen = set([raw] if isinstance(raw, str) else raw)
        return frozenset(k for k in chosen if k in _keys_of(self.categories))

    @cached_property
    def activity_groups(self) -> list[tuple[str, list[tuple[str, str, bool]]]]:
        """The Activity choices by category, each with whether it is ticked."""
        return _groups_of(self.categories, self._ticked)

    def activity_fieldsets(self) -> str:
        """The Activity dropdown's checkboxes, a fieldset per category, as HTML: made
        here because a template loop over a hundred checkboxes cost as much server time
        as the rest of the page, and kept per set of categories and ticks (most pages
        tick none)."""
        return _fieldsets_html(self.categories, self._ticked)

    @property
    def activity_summary(self) -> str:
        ticked = [label for _, members in self.activity_groups for _, label, on in members if on]
        if not ticked:
            return "All activities"
        if len(ticked) == 1:
            return ticked[0]
        return f"{len(ticked)} activities"

    def error_list(self) -> list[str]:
        """Every problem with the input, each prefixed by the control it concerns."""
        messages = []
        for name, errors in self.errors.items():
            label = self.fields[name].label if name in self.fields else ""
            messages += [f"{label}: {error}" if label else error for error in errors]
        return messages

    def is_default(self) -> bool:
        return self.query_items() == [("range", RANGE_DEFAULT)]


# `from` is a Python keyword, so these two are added by name.
EventFilter.base_fields["from"] = InstantField(label="From", required=False)
EventFilter.base_fields["to"] = InstantField(label="To", required=False)


def _instant(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _query_value(value) -> str:
    if isinstance(value, datetime) and timezone.is_aware(value):
        return _instant(value)
    return value.isoformat()


def _location_text(place: dict[str, str]) -> str:
    return ", ".join(place[k] for k in ("city", "regionName", "countryName") if k in place)
