"""PostgreSQL: the events tables in monthly partitions (audit.partitions) — made ahead
idempotently, the DEFAULT partition's rows moved into their month, retention dropping
exactly the expired months (and the per-organization purge the boundary month), the
application role kept from DROP / DETACH, verification passing after a drop, and every
query of the page, API, export, stream and retention pruned to its window."""

import re
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from audit.filters import EventFilter
from audit.integrity import verify_org
from audit.models import Event, EventHourlyTotal, EventTerm, RetentionMark
from audit.partitions import (
    PARTITIONED,
    expired_months,
    longest_retention_days,
    month_add,
    month_bounds,
    month_start,
    partition_drop,
    partition_name,
    partitions_ensure,
    partitions_of,
)
from audit.recording import term_hash
from audit.retention import audit_log_purge
from audit.selectors import event_get, event_list, event_slice, event_stream_slice
from audit.services import event_record, item
from orgs.models import Plan
from tests.audit.test_guard import app_role_connect, needs_app_role
from tests.conftest import seal, term_hashes

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL: SQLite keeps one table each"
)


def months(table: str = "audit_event") -> list[str]:
    return [p for p in partitions_of(table) if not p.endswith("_default")]


def rows_in(partition: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "{partition}"')
        return cursor.fetchone()[0]


def at(month: date, day: int = 10) -> datetime:
    return datetime(month.year, month.month, day, 12, tzinfo=UTC)


@pytest.mark.django_db
def test_the_tables_are_partitioned_by_month_with_the_months_ahead():
    this_month = month_start(timezone.now())
    for table in PARTITIONED:
        names = partitions_of(table)
        assert names[-1] == f"{table}_default"
        for n in range(4):  # this month and the next three
            assert partition_name(table, month_add(this_month, n)) in names
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'audit_event'::regclass AND contype = 'p'"
        )
        assert cursor.fetchone()[0] == "PRIMARY KEY (id, occurred_at)"


@pytest.mark.django_db
def test_partitions_are_made_ahead_once(settings):
    now = timezone.now()
    later = month_add(month_start(now), 5)
    assert partition_name("audit_event", later) not in months()
    # As if two months had passed: months +4 and +5 of the four tables, then nothing.
    assert partitions_ensure(now + timedelta(days=62)) == 2 * len(PARTITIONED)
    assert partitions_ensure(now + timedelta(days=62)) == 0
    for table in PARTITIONED:
        assert partition_name(table, later) in months(table)


@pytest.mark.django_db
def test_an_event_no_month_covers_is_recorded_in_the_default_and_moved_to_its_month(org, admin):
    far = timezone.now() + timedelta(days=250)  # a clock far ahead: no month made yet
    recorded = event_record(
        organization=org, action="group_created", occurred_at=far, context=[item("group", 1, "Ops")]
    )
    assert rows_in("audit_event_default") == 1
    assert rows_in("audit_eventterm_default") >= 1
    made = partitions_ensure(far - timedelta(days=90))  # the task, months later
    assert made >= len(PARTITIONED)
    assert rows_in("audit_event_default") == rows_in("audit_eventterm_default") == 0
    assert rows_in("audit_eventhourlytotal_default") == 0
    assert rows_in(partition_name("audit_event", month_start(far))) == 1
    ops = term_hash("ops")
    assert EventTerm.objects.filter(organization=org, term_hash=ops, occurred_at=far).exists()
    assert Event.objects.get(pk=recorded.event.pk).occurred_at == far


@pytest.fixture
def long_plan(db) -> Plan:
    plan = Plan.objects.get(key="guard-premium")
    plan.pk, plan.key, plan.name, plan.retention_days = None, "guard-long", "Guard Long", 400
    plan.save()
    return plan


@pytest.fixture
def old_months(org, other_org, long_plan):
    """Events of two organizations (retention 180 and 400 days) in the two months before
    the boundary month (past every retention), the boundary month itself and now."""
    other_org.plan = long_plan
    other_org.save()
    now = timezone.now()
    horizon = now - timedelta(days=400)
    boundary = month_start(horizon)
    expired = [month_add(boundary, -2), month_add(boundary, -1)]
    # Months before any the migration made: their events go to the default partition,
    # then into their months when those are made.
    for month in expired:
        for o in (org, other_org):
            event_record(
                organization=o,
                action="group_created",
                occurred_at=at(month),
                context=[item("group", 1, "Ops")],
            )
    with connection.cursor() as cursor:
        cursor.execute("SELECT audit_partitions_ensure(%s, %s)", [expired[0], boundary])
    in_boundary = {}
    for when in (month_bounds(boundary)[0] + timedelta(hours=1), horizon + timedelta(days=1)):
        if when < now:
            e = event_record(organization=other_org, action="group_deleted", occurred_at=when)
            in_boundary[when] = e.event.pk
    recent = event_record(organization=org, action="group_created", occurred_at=now).event.pk
    return {
        "now": now,
        "boundary": boundary,
        "expired": expired,
        "in_boundary": in_boundary,
        "recent": recent,
    }


@pytest.mark.django_db
def test_retention_drops_exactly_the_expired_months_and_purges_the_boundary_month(
    org, other_org, old_months
):
    assert longest_retention_days() == 400
    boundary, expired = old_months["boundary"], old_months["expired"]
    assert expired_months(old_months["now"]) == expired
    before = set(months())
    result = audit_log_purge(pause=0)
    for table in PARTITIONED:
        for month in expired:
            assert partition_name(table, month) not in partitions_of(table)
        assert partition_name(table, boundary) in partitions_of(table)
    assert before - set(months()) == {partition_name("audit_event", m) for m in expired}
    # The boundary month: the event before the long-retention org's cutoff went in a
    # batch, the one after stays; the recent event stays.
    cutoff = old_months["now"] - timedelta(days=400)
    kept = {pk for when, pk in old_months["in_boundary"].items() if when >= cutoff}
    left = Event.objects.exclude(action__key="audit_log_purged")
    assert set(left.filter(organization=other_org).values_list("pk", flat=True)) == kept
    assert list(left.filter(organization=org).values_list("pk", flat=True)) == [
        old_months["recent"]
    ]
    assert not EventTerm.objects.filter(occurred_at__lt=month_bounds(boundary)[0]).exists()
    # What the drop removed counts in each organization's audit_log_purged event, and its
    # RetentionMark says every event before the end of the last dropped month is gone.
    counts = {o.organization.pk: o.events for o in result.orgs}
    dropped_from = 2  # one event a month in each organization
    assert counts[org.pk] == dropped_from
    assert counts[other_org.pk] == dropped_from + len(old_months["in_boundary"]) - len(kept)
    end = month_bounds(expired[-1])[1]
    for o in (org, other_org):
        assert RetentionMark.objects.filter(organization=o, cutoff=end).exists()
        purged = Event.objects.filter(organization=o, action__key="audit_log_purged").get()
        assert purged.details == {"count": counts[o.pk]}
    assert not EventHourlyTotal.objects.filter(hour__lt=month_bounds(boundary)[0]).exists()


@pytest.mark.django_db
def test_the_drop_function_refuses_a_month_not_expired_or_not_the_oldest(old_months):
    boundary, expired = old_months["boundary"], old_months["expired"]
    with pytest.raises(DatabaseError, match="not past every organization's retention"):
        with transaction.atomic():
            partition_drop(boundary)
    with pytest.raises(DatabaseError, match="not the oldest month"):
        with transaction.atomic():
            partition_drop(expired[1])
    with pytest.raises(DatabaseError, match="not the first day of a month"):
        with transaction.atomic():
            partition_drop(expired[0] + timedelta(days=3))
    assert set(partition_name("audit_event", m) for m in expired) <= set(months())
    assert partition_drop(expired[0])  # the oldest, expired: dropped
    assert partition_name("audit_event", expired[0]) not in months()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_verification_passes_after_a_month_is_dropped(org, other_org, old_months):
    assert seal(org) and seal(other_org)
    assert verify_org(org).ok
    audit_log_purge(pause=0)
    assert partition_name("audit_event", old_months["expired"][0]) not in months()
    for o in (org, other_org):
        outcome = verify_org(o)
        assert outcome.ok, outcome.problem
        assert "removed by retention" in outcome.retention_note


@needs_app_role
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_application_role_cannot_drop_detach_or_empty_a_partition(org):
    event_record(organization=org, action="group_created")
    month = month_start(timezone.now())
    part = partition_name("audit_event", month)
    refused = [
        f"DROP TABLE {part}",
        f"ALTER TABLE audit_event DETACH PARTITION {part}",
        f"ALTER TABLE audit_event DETACH PARTITION {part} CONCURRENTLY",
        "DROP TABLE audit_event_default",
        f"DELETE FROM {part}",
        f"TRUNCATE {part}",
        f"UPDATE {part} SET message = 'x'",
        "CREATE TABLE audit_event_p2001_01 PARTITION OF audit_event "
        "FOR VALUES FROM ('2001-01-01') TO ('2001-02-01')",
    ]
    with app_role_connect() as app:
        app.autocommit = True
        for sql in refused:
            with pytest.raises(psycopg.Error, match="must be owner|permission denied"):
                app.execute(sql)
        # Its way in, the owner's function, drops only expired months.
        with pytest.raises(psycopg.Error, match="not past every organization's retention"):
            app.execute("SELECT * FROM audit_partitions_drop(%s)", [month])
        # Making months ahead is allowed: idempotent and harmless.
        app.execute("SELECT audit_partitions_ensure(%s, %s)", [month, month_add(month, 3)])
        # And an expired month (the oldest) goes, as the retention job drops it.
        old = month_add(month, -20)
        app.execute("SELECT audit_partitions_ensure(%s, %s)", [old, old])
        assert partition_name("audit_event", old) in months()
        app.execute("SELECT * FROM audit_partitions_drop(%s)", [old])
    assert partition_name("audit_event", old) not in months()
    assert part in months()
    assert Event.objects.filter(organization=org).count() == 1


# -- pruning: every query of the page, API, export, stream and retention ------------------

_PARTITION = re.compile(r" on (audit_\w+?_(?:p(\d{4})_(\d{2})|default))\b")


def scanned_months(sql: str, params=None) -> set[date | str]:
    """The partitions the plan of `sql` reads: their months, or "default"."""
    with transaction.atomic(), connection.cursor() as cursor:
        # The test tables hold a handful of rows: show the plan of a real table.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    found = set()
    for _name, year, month in _PARTITION.findall(plan):
        found.add(date(int(year), int(month), 1) if year else "default")
    return found


def audit_queries(captured) -> list[str]:
    tables = "|".join(PARTITIONED)
    return [
        q["sql"]
        for q in captured.captured_queries
        if re.search(rf'"?({tables})"?', q["sql"]) and q["sql"].lstrip().startswith("SELECT")
    ]


def assert_pruned_to(captured, first: date, last: date | None = None) -> None:
    """Every audit query reads months from `first` (to `last`) only."""
    queries = audit_queries(captured)
    assert queries
    for sql in queries:
        scanned = scanned_months(sql)
        old = {m for m in scanned if m != "default" and m < first}
        late = {m for m in scanned if m != "default" and last and m > last}
        assert not old and not late, (sql, sorted(map(str, scanned)))


@pytest.fixture
def spread(org, admin):
    """Events in every month of the organization's retention (180 days)."""
    now = timezone.now()
    for days in range(0, 180, 12):
        event_record(
            organization=org,
            action="group_created" if days % 24 else "group_deleted",
            occurred_at=now - timedelta(days=days, hours=1),
            context=[item("group", 1, "Ops")],
        )
    return now


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"q": "ops"},
        {"action": ["group_created"]},
        {"action": ["group_created", "group_deleted"]},
        {"q": "ops", "action": ["group_created", "group_deleted"]},
    ],
)
def test_the_page_and_its_filters_read_only_the_months_of_their_window(
    client, org, admin, spread, params
):
    client.force_login(admin)
    with CaptureQueriesContext(connection) as captured:
        page = client.get(reverse("audit:event-list", args=[org.pk]), {"range": "7d", **params})
    assert page.status_code == 200
    assert_pruned_to(captured, month_start(spread - timedelta(days=7)))


@pytest.mark.django_db
@pytest.mark.parametrize("q", ["", "ops"])
def test_a_bounded_window_reads_only_its_months_both_ways(org, spread, q):
    start, end = spread - timedelta(days=100), spread - timedelta(days=70)
    data = {"from": start.date().isoformat(), "to": end.date().isoformat(), "q": q}
    filters = EventFilter(data, org=org, now=spread)
    assert filters.is_valid(), filters.errors
    first, last = month_start(filters.window.start), month_start(filters.window.end)
    with CaptureQueriesContext(connection) as captured:
        rows = event_slice(filters, None, newer=False, limit=101)  # the API's page
        exported = list(event_list(filters=filters)[:10000])  # the export's query
        assert rows
        event_slice(filters, (rows[-1].occurred_at, rows[-1].pk), newer=True, limit=101)
    assert [e.pk for e in exported] == [e.pk for e in rows]
    assert_pruned_to(captured, first, last)


@pytest.mark.django_db
def test_the_stream_and_the_event_detail_read_only_the_retention_window(org, spread):
    """No time window by nature (recording order; an id): bounded by the retention
    window instead, and within it one short index walk per month."""
    first = month_start(spread - timedelta(days=org.plan.retention_days))
    one = Event.objects.filter(organization=org).first()
    with CaptureQueriesContext(connection) as captured:
        event_stream_slice(org, None, limit=100, now=spread)
        event_stream_slice(org, (0, one.pk), desc=True, limit=100, now=spread)
        event_get(org, one.pk, now=spread)
    assert_pruned_to(captured, first)
    for sql in audit_queries(captured):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute(f"EXPLAIN {sql}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
        assert "Seq Scan" not in plan and not re.search(r"->\s+Sort\b", plan), plan


@pytest.mark.django_db
def test_the_purge_batch_reads_only_the_months_before_the_cutoff(org, spread):
    cutoff = spread - timedelta(days=150)
    sql = (
        "SELECT e.id FROM audit_event e WHERE e.organization_id = %s AND e.occurred_at < %s "
        "ORDER BY e.occurred_at, e.id LIMIT 1000"
    )
    scanned = scanned_months(sql, [org.pk, cutoff])
    assert scanned and all(m == "default" or m <= month_start(cutoff) for m in scanned)
    # The batch's DELETE, bounded by the batch's own times (audit.guard.audit_purge_batch).
    lo, hi = cutoff + timedelta(days=10), cutoff + timedelta(days=15)
    scanned = scanned_months(
        "DELETE FROM audit_event WHERE id = ANY(%s) AND occurred_at >= %s AND occurred_at <= %s",
        [[1, 2, 3], lo, hi],
    )
    assert scanned <= {month_start(lo), month_start(hi)}, scanned


@pytest.mark.django_db
def test_the_conversion_keeps_rows_ids_keys_and_indexes_whatever_the_columns():
    """Migration 0016's conversion (audit.partitions.table_partition) on a plain table
    with another layout: an identity id, a unique key without the time, an index, a
    foreign key."""
    from audit.partitions import table_partition

    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE audit_scratch (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY "
            "KEY, organization_id bigint NOT NULL REFERENCES orgs_organization (id), "
            "occurred_at timestamptz NOT NULL, digest bytea NOT NULL, note text DEFAULT 'x', "
            "CONSTRAINT scratch_unique UNIQUE (organization_id, digest))"
        )
        cursor.execute(
            "CREATE INDEX scratch_org_time ON audit_scratch (organization_id, occurred_at)"
        )
    org_id = _an_org_id()
    with connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO audit_scratch (organization_id, occurred_at, digest) VALUES (%s, %s, %s)",
            [(org_id, timezone.now() - timedelta(days=40 * i), bytes([i])) for i in range(5)],
        )
    with connection.cursor() as cursor:  # a migration has no row changes pending
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    with connection.schema_editor(atomic=False) as editor:
        table_partition(editor, "audit_scratch", "occurred_at")
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE relname = 'audit_scratch'")
        assert cursor.fetchone()[0] == "p"
        cursor.execute("SELECT count(*), max(id) FROM audit_scratch")
        assert cursor.fetchone() == (5, 5)
        cursor.execute(
            "INSERT INTO audit_scratch (organization_id, occurred_at, digest) "
            "VALUES (%s, now(), '\\x99') RETURNING id, note",
            [org_id],
        )
        assert cursor.fetchone() == (6, "x")  # the ids go on; defaults kept
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'audit_scratch'::regclass ORDER BY conname"
        )
        constraints = dict(cursor.fetchall())
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'audit_scratch'")
        indexes = {row[0] for row in cursor.fetchall()}
    assert constraints["audit_scratch_pkey"] == "PRIMARY KEY (id, occurred_at)"
    assert constraints["scratch_unique"] == "UNIQUE (organization_id, digest, occurred_at)"
    assert any(d.startswith("FOREIGN KEY (organization_id)") for d in constraints.values())
    assert "scratch_org_time" in indexes
    assert "audit_scratch_default" in partitions_of("audit_scratch")


def _an_org_id() -> int:
    from orgs.models import Organization

    return Organization.objects.create(name="Scratch", plan=Plan.objects.first()).pk


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_term_purge_removes_its_events_terms_and_no_other_months(org):
    """A row's ctid names it only within its own partition: the terms of an expired
    event go, the terms at the same place in another month's partition stay."""
    now = timezone.now()
    days = org.plan.retention_days
    with connection.cursor() as cursor:  # every term partition starts afresh
        cursor.execute("VACUUM audit_eventterm")
    old = event_record(
        organization=org,
        action="group_created",
        occurred_at=now - timedelta(days=days + 20),
        context=[item("group", 1, "Ops")],
    ).event
    kept = event_record(
        organization=org,
        action="group_created",
        occurred_at=now - timedelta(days=days - 40),
        context=[item("group", 2, "Sales")],
    ).event
    assert month_start(old.occurred_at) != month_start(kept.occurred_at)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT event_id, ctid::text FROM audit_eventterm WHERE event_id IN (%s, %s)",
            [old.pk, kept.pk],
        )
        places = {}
        for event_id, ctid in cursor.fetchall():
            places.setdefault(event_id, set()).add(ctid)
    assert places[old.pk] & places[kept.pk], "the same places in two partitions"
    terms_kept = len(term_hashes(kept.pk))
    audit_log_purge(pause=0)
    assert not Event.objects.filter(pk=old.pk).exists()
    assert not term_hashes(old.pk)
    assert len(term_hashes(kept.pk)) == terms_kept > 0
