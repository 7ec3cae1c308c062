"""The audit log filter form: validates the query string and returns typed values.

The form only parses; audit/filters.py turns the values into a time window and a
query. Every message here is shown to an admin, so each says what to do."""

from datetime import date, datetime

from django import forms
from django.utils import timezone
from django.utils.dateparse import parse_datetime

MAX_SEARCH_LENGTH = 200

RANGE_CHOICES = [
    ("24h", "Last 24 hours"),
    ("7d", "Last 7 days"),
    ("30d", "Last 30 days"),
    ("90d", "Last 90 days"),
    ("180d", "Last 180 days"),
    ("custom", "Custom dates"),
]
RANGE_DEFAULT = "7d"
RANGE_HOURS = {"24h": 24, "7d": 7 * 24, "30d": 30 * 24, "90d": 90 * 24, "180d": 180 * 24}
# Parameters that take one value; a repeated one is an error rather than a guess.
SINGLE_VALUED = ("q", "range", "from", "to", "cursor")


class DateOrTimeField(forms.Field):
    """A calendar date (YYYY-MM-DD, as the page's date inputs send) or an exact ISO
    8601 instant (as EventFilter.params() writes). A date is read in the viewer's time
    zone by the filter; an instant without an offset is too."""

    widget = forms.DateInput(attrs={"type": "date"})
    default_error_messages = {
        "invalid": "“%(value)s” is not a date. Enter a date as YYYY-MM-DD (or an ISO 8601 "
        "instant, or epoch milliseconds).",
        "out_of_range": "Enter a date between the years 2000 and 2100.",
    }

    def to_python(self, value):
        value = (value or "").strip()
        if not value:
            return None
        try:
            if len(value) == 10:
                parsed: date | datetime = date.fromisoformat(value)
            else:
                parsed = parse_datetime(value.replace(" ", "+", 1) if "T" in value else value)
                if parsed is None:
                    raise ValueError
        except ValueError:
            raise forms.ValidationError(
                self.error_messages["invalid"], code="invalid", params={"value": value[:40]}
            ) from None
        if not 2000 <= parsed.year <= 2100:
            raise forms.ValidationError(self.error_messages["out_of_range"], code="out_of_range")
        return parsed


class EventFilterForm(forms.Form):
    """The fields themselves are declared on the FilterSet (audit/filters.py); this
    class adds the checks that span fields or look at the raw query string."""

    def clean(self):
        cleaned = super().clean()
        getlist = getattr(self.data, "getlist", None)
        if getlist is not None:
            for name in SINGLE_VALUED:
                if len(getlist(name)) > 1 and name in self.fields:
                    self.add_error(name, "Give this only once: the link repeats it.")
        start, end = cleaned.get("from"), cleaned.get("to")
        tz = getattr(self, "tz", timezone.get_current_timezone())
        if start is not None and end is not None:
            start_at = as_start(start, tz)
            end_at = as_end(end, tz)
            if start_at >= end_at:
                self.add_error("to", "The end date is before the start date.")
        return cleaned


def as_start(value: date | datetime, tz) -> datetime:
    """The first instant of a `from` value: a date starts at midnight in `tz`."""
    if isinstance(value, datetime):
        return value if timezone.is_aware(value) else value.replace(tzinfo=tz)
    return datetime(value.year, value.month, value.day, tzinfo=tz)


def as_end(value: date | datetime, tz) -> datetime:
    """The exclusive end of a `to` value: a date includes its whole day in `tz`."""
    if isinstance(value, datetime):
        return value if timezone.is_aware(value) else value.replace(tzinfo=tz)
    next_day = date.fromordinal(value.toordinal() + 1)
    return datetime(next_day.year, next_day.month, next_day.day, tzinfo=tz)
