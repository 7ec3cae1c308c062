"""The three core queries must walk an index range, leading with the organization
and then time, and must not sort: the event list, the Activity filter and the
exact-term search. Checked with EXPLAIN on the active database (SQLite or
PostgreSQL); the plans are printed (pytest -s) for the record."""

import re
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.http import QueryDict
from django.utils import timezone

from audit.filters import EventFilter
from audit.models import Event, EventTerm
from audit.recording import term_hash
from audit.selectors import PAGE_COLUMNS, event_slice, page_sql
from audit.services import Actor, EventSpec, event_record, event_record_batch, item, user_item
from tests.conftest import make_user

PAGE = 51  # a page of 50 and one more to know there is a next page


@pytest.fixture
def events(org, admin, other_org):
    """A few events in two organizations, so the tables and indexes are not empty."""
    target = make_user("carol@acme.test", org, name="Carol Jones")
    now = timezone.now()
    for i in range(30):
        event_record(
            organization=org if i % 3 else other_org,
            action="group_member_added" if i % 2 else "user_logged_in",
            actor=Actor.for_user(admin),
            occurred_at=now - timedelta(hours=i),
            context=[user_item(target), item("group", i, f"group-{i}")],
        )


def plan_of(queryset) -> str:
    return plan_of_sql(*queryset.query.sql_with_params())


def plan_of_sql(sql: str, params) -> str:
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            plan = "\n".join(str(row[-1]) for row in cursor.fetchall())
        else:
            # The test tables hold a handful of rows, where a sequential scan is
            # cheaper; forbid it so the planner shows the index it would use on
            # a real table.
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute(f"EXPLAIN {sql}", params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
    print(f"\n-- {connection.vendor}\n{sql}\n{plan}")
    return plan


def assert_index_range_scan(plan: str, index: str, table: str) -> None:
    if connection.vendor == "sqlite":
        # e.g. "SEARCH audit_event USING INDEX event_org_time (organization_id=? AND occurred_at>?)"
        assert f"SEARCH {table} USING " in plan and index in plan, plan
        assert "TEMP B-TREE" not in plan, plan
        assert f"SCAN {table}" not in plan, plan
    else:
        # e.g. "Index Scan Backward using event_org_time on audit_event", or with the
        # monthly partitions (audit.partitions) one such scan per partition, each of an
        # index of the partition made from `index`, merged in order.
        scans = index_scans(plan)
        assert scans, plan
        for used, on in scans:
            assert (parent_of(used), parent_of(on)) == (index, table), plan
        assert all("Backward" in line for line in plan.splitlines() if " Scan " in line), plan
        assert not sorts(plan) and "Seq Scan" not in plan, plan


_SCAN = re.compile(r"Index (?:Only )?Scan(?: Backward)? using (\S+) on (\S+)")


def index_scans(plan: str) -> list[tuple[str, str]]:
    """(index, table) of every index scan of a PostgreSQL plan."""
    return _SCAN.findall(plan)


def sorts(plan: str) -> list[str]:
    """Sort nodes of a PostgreSQL plan ("Sort Key:" of a Merge Append is no sort)."""
    return [
        line
        for line in plan.splitlines()
        if re.match(r"\s*(->\s*)?(Incremental )?Sort\b(?! Key)", line)
    ]


def parent_of(relation: str) -> str:
    """The partitioned table or index `relation` is a partition of, else itself."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.relname FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent "
            "WHERE i.inhrelid = to_regclass(%s)",
            [relation],
        )
        row = cursor.fetchone()
    return row[0] if row else relation


def plan_ancestor(lines: list[str], index: int, skip: str = "") -> str:
    """The node above the plan line `index`, passing over nodes named `skip`."""
    depth = len(lines[index]) - len(lines[index].lstrip())
    for line in reversed(lines[:index]):
        if "->" in line or not line.startswith(" "):
            here = len(line) - len(line.lstrip())
            if here < depth:
                if skip and skip in line:
                    depth = here
                    continue
                return line
    return ""


def test_the_event_list_is_an_index_range_scan(org, events):
    start = timezone.now() - timedelta(days=7)
    queryset = Event.objects.filter(organization=org, occurred_at__gte=start).order_by(
        "-occurred_at", "-id"
    )[:PAGE]
    assert_index_range_scan(plan_of(queryset), "event_org_time", "audit_event")
    assert len(list(queryset)) == 20


def test_the_activity_filter_is_an_index_range_scan(org, events):
    start = timezone.now() - timedelta(days=7)
    queryset = Event.objects.filter(
        organization=org, occurred_at__gte=start, action__key="group_member_added"
    )
    # The Activity filter resolves the keys to ids first (one row of a small table).
    action_id = queryset.values_list("action_id", flat=True).first()
    queryset = Event.objects.filter(
        organization=org, occurred_at__gte=start, action_id=action_id
    ).order_by("-occurred_at", "-id")[:PAGE]
    assert_index_range_scan(plan_of(queryset), "event_org_action_time", "audit_event")
    assert len(list(queryset)) == 10


@pytest.mark.parametrize(
    "query, index", [("", "event_org_time"), ("action=group_member_added", "event_org_action_time")]
)
@pytest.mark.parametrize("at_position", [False, True], ids=["first page", "older page"])
def test_the_pages_written_out_query_is_an_index_range_scan(org, events, query, index, at_position):
    """The page's own SQL for the plain list and one activity (selectors.page_sql), on
    the first page and past a position, as the ORM's above."""
    filters = EventFilter(QueryDict(query), org=org)
    assert filters.is_valid()
    position = (timezone.now() - timedelta(hours=10), 10**12) if at_position else None
    sql, params, _ = page_sql(filters, position, newer=False, limit=PAGE, columns=PAGE_COLUMNS)
    assert_index_range_scan(plan_of_sql(sql, params), index, "audit_event")


@pytest.mark.parametrize("query", ["", "action=group_member_added", "range=24h"])
def test_the_pages_written_out_query_reads_what_the_orm_reads(org, events, query):
    """Page by page in both directions, the written-out query (page_sql) returns the
    events, with the fields, that the ORM's does (event_slice with `values`)."""
    filters = EventFilter(QueryDict(query), org=org)
    assert filters.is_valid()
    fields = [c for c in PAGE_COLUMNS if c not in ("id", "occurred_at")]
    seen, position = [], None
    for newer in (False, False, False, True, True):
        mine = event_slice(filters, position, newer=newer, limit=4, columns=PAGE_COLUMNS)
        orms = event_slice(filters, position, newer=newer, limit=4, values=fields)
        assert [{c: getattr(e, c) for c in PAGE_COLUMNS} for e in mine] == [
            {c: row[c] for c in PAGE_COLUMNS} for row in orms
        ]
        assert all(e.action.pk == e.action_id for e in mine)
        seen += [e.pk for e in mine]
        if mine:
            position = (mine[-1].occurred_at, mine[-1].pk)
    assert len(set(seen)) >= 8


def test_the_term_search_is_an_index_range_scan_of_the_primary_key(org, events):
    start = timezone.now() - timedelta(days=7)
    # By "-event_id", the column: "-event" would order by Event's own Meta.ordering,
    # joining audit_event and sorting in a temporary B-tree.
    queryset = EventTerm.objects.filter(
        organization=org, term_hash=term_hash("carol jones"), occurred_at__gte=start
    ).order_by("-occurred_at", "-event_id")[:PAGE]
    plan = plan_of(queryset)
    if connection.vendor == "sqlite":
        # A WITHOUT ROWID table (migration 0006) is its primary key: the search reads
        # nothing else.
        assert_index_range_scan(plan, "USING PRIMARY KEY", "audit_eventterm")
        assert "audit_event " not in plan, plan
    else:
        assert_index_range_scan(plan, "audit_eventterm_pkey", "audit_eventterm")
    assert len(list(queryset)) == 20


@pytest.mark.skipif(connection.vendor != "sqlite", reason="a SQLite table option")
@pytest.mark.django_db
def test_on_sqlite_the_term_table_is_its_primary_key():
    with connection.cursor() as cursor:
        cursor.execute("SELECT sql FROM sqlite_master WHERE name = 'audit_eventterm'")
        (sql,) = cursor.fetchone()
    assert sql.rstrip().endswith("WITHOUT ROWID"), sql


@pytest.mark.parametrize("from_position", [False, True])
def test_the_exports_search_step_walks_the_term_key_backwards_and_stops_at_its_limit(
    org, other_org, events, from_position
):
    """An export reads a search in keyset steps (event_walk, event_term_step): each
    step reads its term rows by a backward walk of the primary key cut off by a LIMIT,
    never by sorting every match (issue 16, 6a), then the rows' events by id."""
    from audit.filters import EventFilter
    from audit.selectors import (
        PAGE_COLUMNS,
        event_term_rows_walk,
        event_term_step,
        event_walk,
        events_by_id,
    )

    f = EventFilter({"q": "Carol Jones", "range": "7d"}, org=org)
    assert f.is_valid(), f.errors
    position = None
    if from_position:  # a later step: from the last event of the one before
        last = list(event_walk(f, limit=5, chunk=5))[-1]
        position = (last.occurred_at, last.pk)
    walk = event_term_rows_walk(f, position, newer=False)
    plan = plan_of(walk.values_list("occurred_at", "event_id", "oldest_at", "event_ids")[:64])
    if connection.vendor == "sqlite":
        # e.g. "SEARCH audit_eventterm USING PRIMARY KEY (organization_id=? AND term_hash=?
        # AND occurred_at>? AND occurred_at<?)"
        assert "USING PRIMARY KEY (organization_id=? AND term_hash=? AND occurred_at" in plan
        assert "TEMP B-TREE" not in plan and "SCAN " not in plan, plan
    else:
        lines = plan.splitlines()
        # One backward walk of the term key per month of the window (the monthly
        # partitions, audit.partitions), merged in order under the Limit.
        term_lines = [i for i, line in enumerate(lines) if re.search(r" on audit_eventterm", line)]
        assert term_lines, plan
        for i in term_lines:
            assert "Scan Backward" in lines[i], plan
            used, on = _SCAN.search(lines[i]).groups()
            assert (parent_of(used), parent_of(on)) == ("audit_eventterm_pkey", "audit_eventterm")
            assert "Limit" in plan_ancestor(lines, i, skip="Merge Append"), plan
        assert not sorts(plan) and "Seq Scan" not in plan, plan
    # The rows' events, by id: the primary key (on PostgreSQL, of the window's months).
    ids = [pk for row in walk for pk in (row.event_ids or [row.event_id])]
    span = (timezone.now() - timedelta(days=7), timezone.now())
    if connection.vendor == "postgresql":
        # In a month of a real table a step's ids are a sliver of its rows; among the
        # 30 test rows they are most of them, which a scan of another index finds as
        # cheaply. So the month gets another organization's 3,000 events, and the
        # planner its statistics.
        specs = [
            EventSpec("group_created", context=[item("group", n, "g")], occurred_at=span[1])
            for n in range(3000)
        ]
        event_record_batch(organization=other_org, specs=specs)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE audit_event")
    plan = plan_of(events_by_id(f, ids, span).values(*PAGE_COLUMNS))
    if connection.vendor == "sqlite":
        assert "USING INTEGER PRIMARY KEY" in plan, plan
    else:
        scans = index_scans(plan)
        assert scans and all(parent_of(used) == "audit_event_pkey" for used, _ in scans), plan
        assert "Seq Scan" not in plan, plan
    rows = event_term_step(f, position, newer=False, limit=1000)
    assert len(rows) == (20 if not from_position else 15)
