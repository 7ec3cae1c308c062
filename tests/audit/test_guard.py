"""The append-only guard beyond events and terms: the hourly counts and the catalogue;
and on PostgreSQL, the application role that can neither change events nor open the
guard (audit/guard.py)."""

import os
import subprocess
import sys
from datetime import timedelta

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from audit.guard import purge_allowed
from audit.models import Activity, Event, EventHourlyCount, EventHourlyTotal
from audit.services import event_record
from tests.conftest import database_url

postgres_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL roles")


def raw(sql: str, params=None) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)


@pytest.fixture
def counted(org):
    event_record(organization=org, action="group_created")
    return EventHourlyTotal.objects.get(organization=org).count


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_eventhourlytotal SET count = count - 1",
        "UPDATE audit_eventhourlytotal SET hour = hour - interval '1 day'",
        "UPDATE audit_eventhourlycount SET count = 0",
        "DELETE FROM audit_eventhourlytotal",
        "DELETE FROM audit_eventhourlycount",
    ],
)
def test_raw_sql_cannot_lower_or_move_the_charts_counts(counted, sql):
    if connection.vendor == "sqlite":
        sql = sql.replace("hour - interval '1 day'", "datetime(hour, '-1 day')")
    with pytest.raises(IntegrityError, match="append-only"):
        raw(sql)
    assert EventHourlyTotal.objects.get().count == counted == 1
    assert EventHourlyCount.objects.get().count == 1


def test_recording_still_adds_to_the_counts(counted, org):
    event_record(organization=org, action="group_created")
    assert EventHourlyTotal.objects.get().count == 2


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_activity SET label = 'Nothing to see' WHERE key = 'user_login_failed'",
        "UPDATE audit_activity SET key = 'renamed' WHERE key = 'user_login_failed'",
        "DELETE FROM audit_activity WHERE key = 'audit_log_purged'",
    ],
)
def test_raw_sql_cannot_change_the_catalogue(db, sql):
    with pytest.raises(IntegrityError, match="audit_activity is append-only"):
        raw(sql)
    assert Activity.objects.get(key="user_login_failed").label == "Failed login"
    assert Activity.objects.filter(key="audit_log_purged").exists()


def test_the_purge_guard_lets_the_counts_go_down(counted):
    with transaction.atomic(), purge_allowed():
        raw("UPDATE audit_eventhourlytotal SET count = count - 1")
    assert EventHourlyTotal.objects.get().count == 0


# PostgreSQL: the application role.


def app_role_connect() -> psycopg.Connection:
    """A connection to the test database as DATABASE_APP_ROLE (made by .ci/run)."""
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.pop("prepare_threshold", None)
    params["user"] = settings.DATABASE_APP_ROLE
    params.pop("password", None)
    return psycopg.connect(**params)


needs_app_role = pytest.mark.skipif(
    not settings.DATABASE_APP_ROLE, reason="DATABASE_APP_ROLE not set (.ci/run sets it)"
)


@postgres_only
@needs_app_role
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_event SET message = 'tampered'",
        "DELETE FROM audit_event",
        "TRUNCATE audit_event CASCADE",
        "DELETE FROM audit_eventterm",
        "UPDATE audit_eventhourlytotal SET count = 0",
        "DELETE FROM audit_eventhourlytotal",
        "UPDATE audit_activity SET label = 'x'",
        "INSERT INTO audit_activity (key, label, category, user_created, template, position) "
        "VALUES ('fake', 'Fake', 'audit_log', false, 'x', 0)",
        # Opening the guard is no help: the role has no privilege to use it, and the
        # triggers open only for the tables' owner.
        "SELECT set_config('auditlog.purge', 'on', true); DELETE FROM audit_event",
        "SET LOCAL ROLE NONE; SELECT set_config('auditlog.purge', 'on', true); "
        "TRUNCATE audit_eventterm",
    ],
)
def test_the_application_role_cannot_rewrite_the_log(org, sql):
    event_record(organization=org, action="group_created")
    with app_role_connect() as app:
        with pytest.raises(psycopg.Error, match="permission denied|append-only"):
            app.execute(sql)
    assert Event.objects.filter(organization=org).count() == 1
    assert EventHourlyTotal.objects.get(organization=org).count == 1


@postgres_only
@needs_app_role
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_role_with_delete_privilege_still_cannot_open_the_guard(org):
    """The triggers check the role, not only the setting: granted DELETE by mistake,
    the application role is still refused."""
    event_record(organization=org, action="group_created")
    role = connection.ops.quote_name(settings.DATABASE_APP_ROLE)
    raw(f"GRANT DELETE ON audit_event TO {role}")
    try:
        with app_role_connect() as app:
            app.execute("SELECT set_config('auditlog.purge', 'on', true)")
            with pytest.raises(psycopg.Error, match="audit_event is append-only: DELETE"):
                app.execute("DELETE FROM audit_event")
    finally:
        raw(f"REVOKE DELETE ON audit_event FROM {role}")
    assert Event.objects.filter(organization=org).exists()


@postgres_only
@needs_app_role
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_purge_function_never_removes_events_inside_the_minimum_retention(org):
    now = timezone.now()
    young = event_record(
        organization=org, action="group_created", occurred_at=now - timedelta(days=179)
    )
    old = event_record(
        organization=org, action="group_created", occurred_at=now - timedelta(days=181)
    )
    with app_role_connect() as app:
        # The caller asks for everything up to now: it gets what is past 180 days only.
        rows = app.execute("SELECT id FROM audit_purge_batch(%s, now(), 1000)", [org.pk]).fetchall()
        app.commit()
        # And search terms only of events that are gone.
        with pytest.raises(psycopg.Error, match="terms of a stored event"):
            app.execute(
                "SELECT audit_purge_terms(%s, ARRAY[1]::bigint[], now() - interval '1 year', "
                "now(), %s)",
                [org.pk, [young.event.pk]],
            )
    assert rows == [(old.event.pk,)]
    assert list(Event.objects.filter(organization=org).values_list("pk", flat=True)) == [
        young.event.pk
    ]


@postgres_only
@needs_app_role
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_app_runs_as_the_application_role_end_to_end(org, admin):
    """Recording and the retention job work with the application role's privileges."""
    event_record(
        organization=org, action="group_created", occurred_at=timezone.now() - timedelta(days=400)
    )
    owner = connection.settings_dict["USER"]
    url = database_url().replace(f"//{owner}@", f"//{settings.DATABASE_APP_ROLE}@", 1)
    env = {**os.environ, "DATABASE_URL": url}
    script = (
        "from orgs.models import Organization; from audit.services import event_record; "
        f"event_record(organization=Organization.objects.get(pk={org.pk}), action='group_created')"
    )
    for args in (["shell", "-c", script], ["purge_audit_log"]):
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            env=env,
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    assert "Removed 1 events" in done.stdout
    actions = list(Event.objects.filter(organization=org).values_list("action__key", flat=True))
    assert sorted(actions) == ["audit_log_purged", "group_created"]


@postgres_only
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_migrate_with_nothing_to_apply_writes_a_new_minimum_into_the_purge_function(settings):
    def minimum_in_function() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SELECT prosrc FROM pg_proc WHERE proname = 'audit_purge_batch'")
            return cursor.fetchone()[0]

    assert "make_interval(days => 180)" in minimum_in_function()
    settings.AUDIT_MIN_RETENTION_DAYS = 400
    try:
        call_command("migrate", verbosity=0)
        assert "make_interval(days => 400)" in minimum_in_function()
    finally:
        settings.AUDIT_MIN_RETENTION_DAYS = 180
        call_command("migrate", verbosity=0)
    assert "make_interval(days => 180)" in minimum_in_function()
