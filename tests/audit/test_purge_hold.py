"""A purge that would remove more than AUDIT_PURGE_MAX_SHARE of an organization's log
is held: nothing removed, the log says so, staff get an email (a real SMTP server)."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from audit.models import Event
from audit.retention import PURGE_HOLD_MIN_EVENTS, audit_log_purge
from audit.services import EventSpec, event_record_batch


@pytest.fixture
def smtp(settings, smtp_inbox):
    inbox, port = smtp_inbox
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    return inbox


def fill(org, expired: int, kept: int) -> None:
    now = timezone.now()
    specs = [
        EventSpec(action="group_created", occurred_at=now - timedelta(days=200, minutes=i))
        for i in range(expired)
    ]
    specs += [
        EventSpec(action="group_created", occurred_at=now - timedelta(days=1, minutes=i))
        for i in range(kept)
    ]
    event_record_batch(organization=org, specs=specs)


def test_a_purge_of_most_of_the_log_is_held_and_staff_are_told(org, staff, smtp):
    fill(org, expired=PURGE_HOLD_MIN_EVENTS, kept=1000)  # half the log: over 25%
    result = audit_log_purge(organizations=[org], pause=0)
    assert result.events == 0
    assert result.orgs[0].held == PURGE_HOLD_MIN_EVENTS
    assert Event.objects.filter(organization=org, action__key="group_created").count() == 2000
    held = Event.objects.get(organization=org, action__key="audit_log_purge_held")
    assert held.message == (
        "System held back removing 1000 expired activities: more than the safety limit"
    )
    (mail,) = smtp.messages
    assert mail["To"] == "staff@acme.test"
    assert mail["Subject"] == "Audit log purge held for Acme"
    assert f"purge_audit_log --org {org.pk} --allow-large" in mail.get_content()


def test_an_operator_releases_a_held_purge_and_it_is_recorded(org, staff, smtp, capsys):
    fill(org, expired=PURGE_HOLD_MIN_EVENTS, kept=1000)
    call_command("purge_audit_log", "--org", str(org.pk), "--allow-large")
    assert "removed 1,000 events" in capsys.readouterr().out
    assert Event.objects.filter(organization=org, action__key="group_created").count() == 1000
    assert Event.objects.filter(organization=org, action__key="audit_log_purged").exists()
    assert smtp.messages == []


def test_a_usual_days_purge_is_not_held(org, staff, smtp):
    fill(org, expired=PURGE_HOLD_MIN_EVENTS, kept=4000)  # 20%
    assert audit_log_purge(organizations=[org], pause=0).events == PURGE_HOLD_MIN_EVENTS
    assert not Event.objects.filter(action__key="audit_log_purge_held").exists()


def test_a_small_log_empties_as_its_retention_says(org, staff, smtp):
    fill(org, expired=10, kept=1)
    assert audit_log_purge(organizations=[org], pause=0).events == 10


def test_dry_run_names_the_hold(org, staff, smtp, capsys):
    fill(org, expired=PURGE_HOLD_MIN_EVENTS, kept=10)
    call_command("purge_audit_log", "--dry-run")
    assert "held: 1,000 expired events are more than 25% of the log" in capsys.readouterr().out
    assert smtp.messages == []
    assert not Event.objects.filter(action__key="audit_log_purge_held").exists()
