import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from audit.services import Actor, EventSpec, Location, event_record_batch, item

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def private_storage(settings, tmp_path):
    settings.PRIVATE_STORAGE_DIR = tmp_path / "private"
    settings.SITE_URL = "https://audit.example.com"
    return settings.PRIVATE_STORAGE_DIR


@pytest.fixture
def clock(monkeypatch):
    """Time travel: clock.now is what django.utils.timezone.now() returns."""

    class Clock:
        now = NOW

        def __call__(self):
            return self.now

        def advance(self, **delta):
            self.now += timedelta(**delta)

    fake = Clock()
    monkeypatch.setattr(timezone, "now", fake)
    return fake


def spec(action="group_created", ago=timedelta(hours=1), now=NOW, **kw) -> EventSpec:
    kw.setdefault("context", [item("group", 1, "engineering")])
    return EventSpec(action=action, occurred_at=now - ago, **kw)


def record_many(org, specs) -> list[int]:
    return event_record_batch(organization=org, specs=specs).event_ids


def full_spec(admin, ago=timedelta(hours=1), **kw) -> EventSpec:
    """An event with every column filled."""
    return spec(
        "group_member_added",
        ago=ago,
        actor=Actor.for_user(admin),
        context=[item("user", 9, "Carol Jones"), item("group", 3, "engineering")],
        ip="203.0.113.9",
        user_agent="Mozilla/5.0 (pytest)",
        location=Location("Australia", "New South Wales", "Sydney"),
        **kw,
    )


def parse_csv(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
