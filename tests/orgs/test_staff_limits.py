"""What even a staff superuser cannot do: run code on the worker, edit the catalogue,
shorten retention below the minimum or flush the database; and what a plan change
leaves in the log of every organization on the plan."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ, Schedule

from audit.models import Activity, Event
from audit.retention import audit_log_purge
from audit.services import event_record
from orgs.models import Organization, Plan
from tests.conftest import plan


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


def schedule_form(**overrides) -> dict:
    data = {
        "name": "innocent",
        "func": "os.system",
        "args": "'touch /tmp/pwned'",
        "schedule_type": "O",
        "repeats": "-1",
        "next_run_0": "2026-01-01",
        "next_run_1": "00:00:00",
        "cluster": "",
        "kwargs": "",
        "hook": "",
        "minutes": "",
        "cron": "",
        "intended_date_kind": "",
    }
    return data | overrides


def test_staff_cannot_add_a_task_schedule(staff_client):
    url = reverse("admin:django_q_schedule_add")
    assert staff_client.get(url).status_code == 403
    assert staff_client.post(url, schedule_form()).status_code == 403
    assert not Schedule.objects.filter(name="innocent").exists()


def test_staff_cannot_change_or_delete_the_retention_schedule(staff_client):
    job = Schedule.objects.get(name="audit-log-retention-daily")
    change = reverse("admin:django_q_schedule_change", args=[job.pk])
    page = staff_client.get(change)
    assert page.status_code == 200  # monitoring: staff may look
    assert b'name="_save"' not in page.content
    response = staff_client.post(
        change, schedule_form(name=job.name, func="django.core.management.call_command")
    )
    assert response.status_code == 403
    delete = reverse("admin:django_q_schedule_delete", args=[job.pk])
    assert staff_client.post(delete, {"post": "yes"}).status_code == 403
    job.refresh_from_db()
    assert job.func == "audit.tasks.audit_log_purge_daily"


def test_staff_cannot_queue_or_resubmit_tasks(staff_client):
    assert staff_client.get(reverse("admin:django_q_ormq_add")).status_code == 403
    changelist = reverse("admin:django_q_failure_changelist")
    assert staff_client.get(changelist).status_code == 200
    response = staff_client.post(changelist, {"action": "resubmit_task", "_selected_action": []})
    assert not OrmQ.objects.exists()
    assert response.status_code in (200, 302)


def test_staff_cannot_edit_the_catalogue(staff_client):
    activity = Activity.objects.get(key="user_login_failed")
    url = reverse("admin:audit_activity_change", args=[activity.pk])
    assert staff_client.get(url).status_code == 200  # read-only view
    response = staff_client.post(
        url,
        {
            "key": "renamed",
            "label": "Nothing happened",
            "category": activity.category,
            "template": "x",
            "position": 0,
        },
    )
    assert response.status_code == 403
    activity.refresh_from_db()
    assert (activity.key, activity.label) == ("user_login_failed", "Failed login")


def plan_form(p: Plan, **overrides) -> dict:
    data = {}
    for field in Plan._meta.concrete_fields:
        if field.primary_key or field.name == "key":
            continue
        value = getattr(p, field.name)
        if isinstance(value, bool):
            if value:
                data[field.name] = "on"
        else:
            data[field.name] = value
    for name, value in overrides.items():
        if value is False:
            data.pop(name, None)
        else:
            data[name] = value
    return data


@pytest.mark.parametrize(
    "days, message",
    [
        (1, "Retention must be at least 180 days"),
        # A typo such as this would put the retention job's cutoff before year 1.
        (1_000_000, "Retention can be at most 36,500 days (100 years)."),
    ],
)
def test_retention_out_of_bounds_is_refused_with_a_message(staff_client, org, days, message):
    premium = plan("guard-premium")
    url = reverse("admin:orgs_plan_change", args=[premium.pk])
    response = staff_client.post(url, plan_form(premium, retention_days=days))
    assert response.status_code == 200
    assert message in response.content.decode()
    premium.refresh_from_db()
    assert premium.retention_days == 180
    assert not Event.objects.filter(action__key="org_plan_updated").exists()


def test_a_plan_change_is_recorded_in_every_organization_on_it(staff_client, org, other_org):
    premium = plan("guard-premium")
    url = reverse("admin:orgs_plan_change", args=[premium.pk])
    response = staff_client.post(
        url, plan_form(premium, retention_days=365), REMOTE_ADDR="198.51.100.7"
    )
    assert response.status_code == 302
    events = Event.objects.filter(action__key="org_plan_updated").order_by("organization_id")
    assert [e.organization_id for e in events] == [org.pk, other_org.pk]
    for event in events:
        assert event.actor_email == "staff@acme.test"
        assert str(event.ip) == "198.51.100.7"
        assert event.message == (
            "Sam Staff changed the Guard Premium plan: retention days from 180 to 365"
        )


def test_switching_the_log_off_is_still_recorded_as_its_last_event(staff_client, org):
    premium = plan("guard-premium")
    url = reverse("admin:orgs_plan_change", args=[premium.pk])
    assert staff_client.post(url, plan_form(premium, audit_log=False)).status_code == 302
    event = Event.objects.get(action__key="org_plan_updated", organization=org)
    assert "audit log available from on to off" in event.message


def test_staff_cannot_delete_a_plan(staff_client):
    premium = plan("guard-premium")
    url = reverse("admin:orgs_plan_delete", args=[premium.pk])
    assert staff_client.post(url, {"post": "yes"}).status_code == 403


def test_flush_is_refused_outside_the_test_suite(settings, org):
    event_record(organization=org, action="group_created")
    settings.TESTING = False
    with pytest.raises(CommandError, match="append-only: refused"):
        call_command("flush", interactive=False, verbosity=0)
    assert Event.objects.filter(organization=org).exists()


def test_a_plan_row_shortened_around_the_admin_still_keeps_the_minimum(org):
    """Raw SQL (or a script) sets 1 day: the purge keeps 180 days regardless."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE orgs_plan SET retention_days = 1 WHERE id = %s", [org.plan_id])
    org = Organization.objects.select_related("plan").get(pk=org.pk)
    now = timezone.now()
    kept = event_record(
        organization=org, action="group_created", occurred_at=now - timedelta(days=30)
    )
    gone = event_record(
        organization=org, action="group_created", occurred_at=now - timedelta(days=200)
    )
    result = audit_log_purge(organizations=[org], pause=0)
    assert result.events == 1
    assert Event.objects.filter(pk=kept.event.pk).exists()
    assert not Event.objects.filter(pk=gone.event.pk).exists()
