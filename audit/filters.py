"""The one filter definition shared by the audit log page, the export and the API.

    events = EventFilter(request.GET, org=org, tz=ZoneInfo(request.user.time_zone))
    if events.is_valid():
        events.qs          # Event queryset: the org, the retention window, the filters,
                           # newest first (-occurred_at, -id); never COUNT it
        events.summary()   # ["Search: carol@acme.test", "Last 7 days", ...]
        events.params()    # JSON-serializable; EventFilter(params, ...) rebuilds it

Parameters (all optional, all from a plain GET form):
- `q`: an exact term: a user's name or email, a group name or a site name;
  case-insensitive, whole value, surrounding spaces ignored. Served by the EventTerm
  index (organization, term, occurred_at, event), never by LIKE.
- `range`: 24h, 7d (the default), 30d, 90d, 180d or custom.
- `from` / `to`: a date (YYYY-MM-DD, in the viewer's time zone; `to` includes its whole
  day) or an exact ISO 8601 instant (`to` then is exclusive). Either one given makes
  the range custom, whatever `range` says, so typing a date without touching the
  preset still does what the admin expects.
- `action`: activity keys, repeatable; only the activities the plan records.

Whatever the filters say, nothing older than the plan's retention (plan.retention_days)
is ever returned, even before the purge job has removed it: a window reaching further
back is cut at the retention start (and `clipped` says so).

params() resolves a relative preset to the exact instants it meant when it was called
(`range=custom`, `from`/`to` as UTC ISO instants), so an export made from "Last 7 days"
and run later covers the same window the admin was looking at.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo

import django_filters
from django.db.models import QuerySet
from django.utils import timezone

from orgs.models import Organization

from .catalogue import ACTIONS, CATEGORIES, CATEGORY_BY_KEY
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
from .models import Event, EventTerm
from .services import activity_for_key, normalize_term

RANGE_LABELS = dict(RANGE_CHOICES)


def plan_actions(plan) -> list:
    """The catalogue actions whose category `plan` records, in catalogue order."""
    if not plan.audit_log:
        return []
    return [a for a in ACTIONS if getattr(plan, CATEGORY_BY_KEY[a.category].plan_field)]


def action_choices(plan) -> list[tuple[str, list[tuple[str, str]]]]:
    """Activity choices grouped by category, as the Activity filter offers them."""
    actions = plan_actions(plan)
    groups = []
    for category in CATEGORIES:
        members = [(a.key, a.label) for a in actions if a.category == category.key]
        if members:
            groups.append((category.label, members))
    return groups


class DateOrTimeFilter(django_filters.Filter):
    field_class = DateOrTimeField


@dataclass(frozen=True)
class Window:
    """The instants the filter covers: start inclusive, end exclusive (None: now and on)."""

    start: datetime
    end: datetime | None
    clipped: bool  # the filter asked for more than retention keeps


class EventFilter(django_filters.FilterSet):
    """The FilterSet, bound to one organization and one viewer's time zone."""

    q = django_filters.CharFilter(
        label="Search",
        method="_applied_in_filter_queryset",
        max_length=MAX_SEARCH_LENGTH,
        error_messages={
            "max_length": f"Search for at most {MAX_SEARCH_LENGTH} characters: "
            "an exact name, email, group or site."
        },
    )
    range = django_filters.ChoiceFilter(
        label="Date range",
        choices=RANGE_CHOICES,
        empty_label=None,
        method="_applied_in_filter_queryset",
        error_messages={"invalid_choice": "Choose a date range from the list."},
    )
    action = django_filters.MultipleChoiceFilter(
        label="Activity",
        choices=[],
        method="_applied_in_filter_queryset",
        error_messages={"invalid_choice": "Unknown activity “%(value)s”: choose from the list."},
    )

    class Meta:
        model = Event
        fields: list[str] = []
        form = EventFilterForm

    def _applied_in_filter_queryset(self, queryset, name, value):
        return queryset

    def __init__(self, data=None, *, org: Organization, tz=None, now: datetime | None = None):
        super().__init__(data if data is not None else {}, queryset=Event.objects.all())
        self.org = org
        self.tz = tz or ZoneInfo("UTC")
        self.now = now or timezone.now()
        self.filters["action"].extra["choices"] = action_choices(org.plan)

    # -- the form ---------------------------------------------------------------------

    @property
    def form(self):
        if not hasattr(self, "_form"):
            form = super().form
            form.tz = self.tz
            form.fields["range"].initial = RANGE_DEFAULT
            retention_day = self.retention_start.astimezone(self.tz).date().isoformat()
            today = self.now.astimezone(self.tz).date().isoformat()
            for name in ("from", "to"):
                form.fields[name].widget.attrs.update(min=retention_day, max=today)
        return self._form

    @cached_property
    def data_clean(self) -> dict:
        """The valid values, with defaults; only call after is_valid()."""
        cleaned = self.form.cleaned_data
        return {
            "q": normalize_term(cleaned.get("q") or ""),
            "range": cleaned.get("range") or RANGE_DEFAULT,
            "from": cleaned.get("from"),
            "to": cleaned.get("to"),
            "action": list(dict.fromkeys(cleaned.get("action") or [])),
        }

    @property
    def is_custom(self) -> bool:
        d = self.data_clean
        return d["range"] == "custom" or d["from"] is not None or d["to"] is not None

    @cached_property
    def retention_start(self) -> datetime:
        return self.now - timedelta(days=self.org.plan.retention_days)

    @cached_property
    def window(self) -> Window:
        d = self.data_clean
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
        keys = self.data_clean["action"]
        if not keys or len(keys) >= len(plan_actions(self.org.plan)):
            return []
        return [activity_for_key(k).pk for k in keys]

    # -- the query --------------------------------------------------------------------

    @property
    def qs(self) -> QuerySet:
        if not hasattr(self, "_qs"):
            self._qs = (
                self.filter_queryset(self.queryset) if self.is_valid() else Event.objects.none()
            )
        return self._qs

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        if not self.org.plan.audit_log:
            return queryset.none()
        qs = queryset.filter(organization=self.org, **self._time_lookups("occurred_at"))
        if self.action_ids:
            qs = qs.filter(action_id__in=self.action_ids)
        if self.data_clean["q"]:
            qs = qs.filter(id__in=self.term_queryset().values("event_id"))
        return qs.order_by("-occurred_at", "-id")

    def term_queryset(self) -> QuerySet:
        """The EventTerm rows of the search, in the window; walk them by primary key."""
        terms = EventTerm.objects.filter(
            organization=self.org, term=self.data_clean["q"], **self._time_lookups("occurred_at")
        )
        if self.action_ids:
            terms = terms.filter(event__action_id__in=self.action_ids)
        return terms

    def _time_lookups(self, field: str) -> dict:
        lookups = {f"{field}__gte": self.window.start}
        if self.window.end is not None:
            lookups[f"{field}__lt"] = self.window.end
        return lookups

    def keyset_slice(
        self, position: tuple[datetime, int] | None, newer: bool, limit: int
    ) -> list[Event]:
        """Up to `limit` events strictly older (or, with `newer`, newer) than
        `position` = (occurred_at, id), nearest first; used by selectors.event_page.

        Each shape of filter takes the path its index serves: the events index for
        the plain list and one activity, the term index for a search, and one
        index walk per activity merged for several activities."""
        if not self.is_valid() or not self.org.plan.audit_log:
            return []
        from .selectors import keyset_events, keyset_union_ids

        if self.data_clean["q"]:
            terms = keyset_events(self.term_queryset(), position, newer, id_field="event_id")
            qs = Event.objects.filter(id__in=terms.values("event_id")[:limit])
        elif len(self.action_ids) > 1:
            base = Event.objects.filter(organization=self.org, **self._time_lookups("occurred_at"))
            ids = keyset_union_ids(base, self.action_ids, position, newer, limit)
            qs = Event.objects.filter(id__in=ids)
        else:
            qs = keyset_events(self.qs, position, newer)
        order = ("occurred_at", "id") if newer else ("-occurred_at", "-id")
        return list(qs.select_related("action").order_by(*order)[:limit])

    # -- describing it ----------------------------------------------------------------

    def summary(self) -> list[str]:
        """Short human phrases for the filters in force, for the export dialog and email."""
        if not self.is_valid():
            return []
        d = self.data_clean
        phrases = []
        if d["q"]:
            phrases.append(f"Search: {d['q']}")
        phrases.append(self.range_label())
        if d["action"]:
            labels = [activity_for_key(k).label for k in d["action"]]
            phrases.append("Activity: " + ", ".join(labels))
        else:
            phrases.append("All activities")
        return phrases

    def range_label(self) -> str:
        d = self.data_clean
        if not self.is_custom:
            return RANGE_LABELS[d["range"]]
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
        d = self.data_clean
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
        return params

    def query_items(self) -> list[tuple[str, str]]:
        """The filters as the page's own query string (relative presets kept), for
        links that keep them: paging, detail and back."""
        if not self.is_valid():
            return []
        d = self.data_clean
        items = [("q", d["q"])] if d["q"] else []
        if self.is_custom:
            items.append(("range", "custom"))
            for name in ("from", "to"):
                if d[name] is not None:
                    items.append((name, _query_value(d[name])))
        else:
            items.append(("range", d["range"]))
        items += [("action", key) for key in d["action"]]
        return items

    # -- what the form shows ------------------------------------------------------------

    @property
    def range_value(self) -> str:
        """The preset the Date range control shows, from the raw input."""
        data = self.form.data
        if (data.get("from") or "").strip() or (data.get("to") or "").strip():
            return "custom"
        value = data.get("range") or RANGE_DEFAULT
        return value if value in RANGE_LABELS else RANGE_DEFAULT

    def activity_groups(self) -> list[tuple[str, list[tuple[str, str, bool]]]]:
        """The Activity choices by category, each with whether it is ticked."""
        getlist = getattr(self.form.data, "getlist", None)
        raw = getlist("action") if getlist else self.form.data.get("action") or []
        chosen = set([raw] if isinstance(raw, str) else raw)
        return [
            (category, [(key, label, key in chosen) for key, label in members])
            for category, members in action_choices(self.org.plan)
        ]

    @property
    def activity_summary(self) -> str:
        ticked = [label for _, members in self.activity_groups() for _, label, on in members if on]
        if not ticked:
            return "All activities"
        if len(ticked) == 1:
            return ticked[0]
        return f"{len(ticked)} activities"

    def error_list(self) -> list[str]:
        """Every problem with the input, each prefixed by the control it concerns."""
        messages = []
        for name, errors in self.form.errors.items():
            label = self.form.fields[name].label if name in self.form.fields else ""
            messages += [f"{label}: {error}" if label else error for error in errors]
        return messages

    def is_default(self) -> bool:
        return self.query_items() == [("range", RANGE_DEFAULT)]


def _instant(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _query_value(value) -> str:
    if isinstance(value, datetime) and timezone.is_aware(value):
        return _instant(value)
    return value.isoformat()


# `from` is a Python keyword, so these two are added by name.
EventFilter.base_filters["from"] = DateOrTimeFilter(
    label="From", method="_applied_in_filter_queryset"
)
EventFilter.base_filters["to"] = DateOrTimeFilter(label="To", method="_applied_in_filter_queryset")
