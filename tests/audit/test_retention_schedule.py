from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django_q.models import Schedule

from audit.models import Event, EventTerm
from audit.recording import term_hash
from audit.services import event_record, item
from audit.tasks import SCHEDULE_FUNC, SCHEDULE_NAME, next_run_after, retention_schedule_ensure
from orgs.models import Organization, Plan
from tests.conftest import in_threads


def schedules():
    return Schedule.objects.filter(name=SCHEDULE_NAME)


def test_the_migrations_schedule_the_daily_job_once(db):
    (schedule,) = schedules()
    assert (schedule.func, schedule.schedule_type, schedule.repeats) == (SCHEDULE_FUNC, "D", -1)
    assert schedule.next_run.astimezone(UTC).hour == 2


def test_ensuring_it_again_keeps_one_and_leaves_staffs_time_alone(db):
    schedule = schedules().get()
    schedule.next_run = schedule.next_run.replace(hour=4)
    schedule.save()
    Schedule.objects.create(name=SCHEDULE_NAME, func=SCHEDULE_FUNC, schedule_type="D")
    for _ in range(3):
        retention_schedule_ensure()
    assert schedules().get().next_run == schedule.next_run
    call_command("purge_audit_log", "--schedule")
    assert schedules().count() == 1


def test_the_next_run_is_the_next_two_oclock_utc():
    assert next_run_after(datetime(2026, 1, 1, 1, 59, tzinfo=UTC)).hour == 2
    assert next_run_after(datetime(2026, 1, 1, 1, 59, tzinfo=UTC)).day == 1
    assert next_run_after(datetime(2026, 1, 1, 2, 0, tzinfo=UTC)).day == 2


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_migrating_again_and_again_leaves_one_schedule_and_the_guard():
    for _ in range(2):
        call_command("migrate", "audit", "0002", verbosity=0)
        assert not schedules().exists()
        call_command("migrate", verbosity=0)
        call_command("migrate", verbosity=0)
    assert schedules().count() == 1
    org = Organization.objects.create(name="Acme", plan=Plan.objects.get(key="guard-premium"))
    event_record(organization=org, action="group_created", context=[item("group", 1, "Admins")])
    assert EventTerm.objects.filter(organization=org, term_hash=term_hash("admins")).exists()
    for table in ("audit_event", "audit_eventterm"):
        with pytest.raises(IntegrityError, match="append-only"):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"DELETE FROM {table} WHERE organization_id = %s", [org.pk])


@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers: PostgreSQL")
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_processes_starting_at_once_create_one_schedule():
    schedules().delete()
    in_threads(retention_schedule_ensure, 4)
    assert schedules().count() == 1


def test_the_scheduler_runs_the_job_once_a_day_whatever_the_number_of_clusters(org):
    from django_q.scheduler import scheduler

    now = timezone.now()
    event_record(organization=org, action="group_created", occurred_at=now - timedelta(days=181))
    schedules().update(next_run=now - timedelta(minutes=1))
    scheduler()  # Q_SYNC under pytest: the task runs here and now
    scheduler()  # a second cluster's scheduler, right after
    purged = Event.objects.filter(organization=org, action__key="audit_log_purged")
    assert [e.details for e in purged] == [{"count": 1}]
    assert Event.objects.filter(organization=org).count() == 1
    assert schedules().get().next_run > now
