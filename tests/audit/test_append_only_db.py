"""Append-only enforced by the database itself: raw SQL cannot change or remove events
or their search terms; only the retention job's transactions can delete them."""

import sqlite3
import threading

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction

from audit.guard import _sqlite_trigger_sql, purge_allowed
from audit.models import Event
from audit.services import Actor, event_record, user_item
from tests.conftest import make_user, term_hashes

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL: TRUNCATE and sessions"
)
sqlite_only = pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite: REPLACE")


@pytest.fixture
def event(org, admin):
    carol = make_user("carol@acme.test", org, name="Carol Jones")
    return event_record(
        organization=org,
        action="group_member_added",
        actor=Actor.for_user(admin),
        context=[user_item(carol)],
    ).event


def raw(sql: str, params=None) -> None:
    # A savepoint, so a refused statement leaves the test's transaction usable.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_event SET message = 'tampered' WHERE id = %s",
        "UPDATE audit_event SET occurred_at = recorded_at",
        "DELETE FROM audit_event WHERE id = %s",
        "DELETE FROM audit_event",
        "UPDATE audit_eventterm SET term_hash = 1 WHERE event_id = %s",
        "DELETE FROM audit_eventterm WHERE event_id = %s",
        "DELETE FROM audit_eventterm",
    ],
)
def test_raw_sql_update_and_delete_are_refused(event, sql):
    terms = len(term_hashes(event.pk))
    with pytest.raises(IntegrityError, match="append-only"):
        raw(sql, [event.pk] if "%s" in sql else None)
    assert Event.objects.get(pk=event.pk).message == event.message
    assert len(term_hashes(event.pk)) == terms == 4


@postgres_only
@pytest.mark.parametrize("table", ["audit_event", "audit_eventterm", "orgs_organization"])
def test_truncate_is_refused_on_postgresql(event, table):
    raw("SET CONSTRAINTS ALL IMMEDIATE")  # else the test's pending FK checks refuse first
    with pytest.raises(IntegrityError, match="append-only: TRUNCATE refused"):
        raw(f"TRUNCATE {table} CASCADE")
    assert Event.objects.filter(pk=event.pk).exists()


@postgres_only
def test_an_upsert_over_an_event_is_refused_on_postgresql(event):
    with pytest.raises(IntegrityError, match="UPDATE refused"):
        raw(
            "INSERT INTO audit_event SELECT * FROM audit_event WHERE id = %s "
            # (id, occurred_at): the primary key of the partitioned table (audit.partitions)
            "ON CONFLICT (id, occurred_at) DO UPDATE SET message = 'tampered'",
            [event.pk],
        )


@sqlite_only
def test_insert_or_replace_over_an_event_is_refused_on_sqlite(event):
    with pytest.raises(IntegrityError, match="REPLACE refused"):
        raw(
            "INSERT OR REPLACE INTO audit_event SELECT id, organization_id, occurred_at, "
            "recorded_at, actor_type, actor_id, actor_name, actor_email, product_id, "
            "product_kind, site_name, context, container, content, details, ip, user_agent, "
            "country, region, city, 'tampered', action_id, txid, hash FROM audit_event "
            "WHERE id = %s",
            [event.pk],
        )
    assert Event.objects.get(pk=event.pk).message == event.message


def test_the_guard_lets_the_purge_delete_and_closes_behind_it(event, org):
    other = event_record(organization=org, action="group_created").event
    with transaction.atomic(), purge_allowed():
        raw("DELETE FROM audit_eventterm WHERE event_id = %s", [event.pk])
        raw("DELETE FROM audit_event WHERE id = %s", [event.pk])
        with pytest.raises(IntegrityError, match="UPDATE refused"):
            raw("UPDATE audit_event SET message = 'x' WHERE id = %s", [other.pk])
    assert not Event.objects.filter(pk=event.pk).exists()
    # Still inside the test's transaction: the permission was withdrawn all the same.
    with pytest.raises(IntegrityError, match="DELETE refused"):
        raw("DELETE FROM audit_event WHERE id = %s", [other.pk])


def test_the_guard_is_only_for_use_inside_a_transaction_block():
    with pytest.raises(RuntimeError, match="inside transaction.atomic"):
        with purge_allowed():
            pass


@postgres_only
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_purge_in_progress_lets_no_other_session_delete(org):
    event = event_record(organization=org, action="group_created").event
    inside, done = threading.Event(), threading.Event()

    def purge_transaction():
        try:
            with transaction.atomic(), purge_allowed():
                inside.set()
                done.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=purge_transaction)
    thread.start()
    try:
        assert inside.wait(10)
        with pytest.raises(IntegrityError, match="DELETE refused"):
            raw("DELETE FROM audit_event WHERE id = %s", [event.pk])
    finally:
        done.set()
        thread.join()
    assert Event.objects.filter(pk=event.pk).exists()


def test_on_sqlite_the_guard_row_is_invisible_to_other_connections(tmp_path):
    """SQLite's guard is a row the job inserts and deletes inside its own transaction:
    no other connection can write (or see the row) until that transaction is over."""
    path = tmp_path / "guard.sqlite3"
    setup = sqlite3.connect(path)
    setup.executescript(
        "PRAGMA journal_mode=WAL;"
        "CREATE TABLE audit_purgeguard (id integer PRIMARY KEY);"
        "CREATE TABLE audit_event (id integer PRIMARY KEY, message text);"
        "INSERT INTO audit_event VALUES (1, 'kept');"
    )
    for sql in _sqlite_trigger_sql("audit_event"):
        setup.execute(sql)
    setup.commit()
    job = sqlite3.connect(path, isolation_level=None)
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    job.execute("BEGIN IMMEDIATE")
    job.execute("INSERT INTO audit_purgeguard VALUES (1)")
    assert other.execute("SELECT count(*) FROM audit_purgeguard").fetchone() == (0,)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        other.execute("DELETE FROM audit_event")
    job.execute("DELETE FROM audit_purgeguard")
    job.execute("COMMIT")
    with pytest.raises(sqlite3.IntegrityError, match="DELETE refused"):
        other.execute("DELETE FROM audit_event")
    assert other.execute("SELECT message FROM audit_event").fetchall() == [("kept",)]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_manage_py_flush_empties_the_audit_log_too(org):
    """flush (and Django's TransactionTestCase, which runs it after each test) is the
    one other thing the guard lets through: it erases the whole database."""
    event_record(organization=org, action="group_created")
    # As TransactionTestCase calls it (resetting sequences would break later tests).
    call_command("flush", interactive=False, verbosity=0, reset_sequences=False)
    assert not Event.objects.exists()
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT count(*) FROM audit_purgeguard")
            assert cursor.fetchone() == (0,)
        else:
            cursor.execute("SELECT current_setting('auditlog.purge', true)")
            assert cursor.fetchone()[0] != "on"


def test_an_error_inside_the_guard_withdraws_it(event):
    with transaction.atomic():
        with pytest.raises(ValueError, match="a bug in the job"):
            with purge_allowed():
                raise ValueError("a bug in the job")
        with pytest.raises(IntegrityError, match="DELETE refused"):
            raw("DELETE FROM audit_event WHERE id = %s", [event.pk])
    with pytest.raises(IntegrityError):  # a refused statement inside: same
        with transaction.atomic(), purge_allowed():
            raw("UPDATE audit_event SET message = 'x' WHERE id = %s", [event.pk])
    with pytest.raises(IntegrityError, match="DELETE refused"):
        raw("DELETE FROM audit_event WHERE id = %s", [event.pk])
