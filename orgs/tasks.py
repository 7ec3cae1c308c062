"""django-q2 entry points of the orgs app: each calls services."""

from .ratelimit import rate_limit_purge
from .services import api_key_uses_purge, api_keys_expire

API_KEYS_SCHEDULE_NAME = "orgs: API key expiry, hourly"
API_KEYS_SCHEDULE_FUNC = "orgs.tasks.api_keys_hourly"


def api_keys_hourly() -> dict[str, int]:
    """Run hourly by the schedule migration orgs 0006 creates: records the expiry of
    keys that expired since the last run, removes use rows of past hours and finished
    rate-limit windows."""
    return {
        "expired": api_keys_expire(),
        "uses_removed": api_key_uses_purge(),
        "rate_windows_removed": rate_limit_purge(),
    }
