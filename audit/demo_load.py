"""Seeding many demo events fast: `seed_demo --events N --orgs M [--jobs J]`.

The events are the demo's own (audit.demo.ActivityGenerator), in J worker processes at
once on PostgreSQL. There they are written by the seed's fast path (audit.seed_fast:
the recorder's own derivations, rules, search terms, hourly counts and event hashes,
with what repeats encoded once and the rows sent as binary COPY; a test compares it
with the recorder field by field); on SQLite through the recorder itself
(audit.recording.record_specs). What makes a big seed slow on the database's side is
keeping indexes and foreign keys up to date row by row, the term key above all (one
random insert per term) and the foreign keys' check of each row; so when the events
table is empty at the start, the load runs without the secondary indexes of the
events table, the term table's key and the loaded tables' foreign keys, with
autovacuum off on them and commits not waiting for the disk; at the end a lane per
table builds its indexes, checks its foreign keys in one scan each and VACUUMs its
partitions, J lanes at once, and ANALYZE ends the load (docs/deploy.md, "After a bulk
load"). Sealing (integrity blocks) is the sealing loop's, afterwards: the seed writes
each event's hash as recording does.

`seed_demo --events 10000000 --orgs 1000` (20M events) on this 2-core machine: see
README, "A big demo".

SQLite has one writer: one process, indexes kept."""

import gc
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.hashers import make_password
from django.db import connection, connections, transaction
from django.utils import timezone

from orgs.models import Group, Membership, Organization, Plan, Product, Site, User

from .demo import DEMO_PASSWORD, FIRST, GROUP_NAMES, LAST, ActivityGenerator
from .models import Event, EventHourlyCount, EventHourlyTotal, EventTerm

CHUNK = 50_000  # events per transaction
TASK_EVENTS = 200_000  # at most this many events of one organization per task
DAYS = 180
LOADED_TABLES = (
    Event._meta.db_table,
    EventTerm._meta.db_table,
    EventHourlyCount._meta.db_table,
    EventHourlyTotal._meta.db_table,
)
CUSTOMER_PLANS = ("guard-premium", "cloud-enterprise", "guard-standard")
CUSTOMER_ACCOUNTS = 12


@dataclass(frozen=True)
class Task:
    """`count` events of one organization, spread over `days` days before `now`."""

    org_id: int
    count: int
    seed: int
    days: float
    now: datetime
    alone: bool = False  # the organization's only task


def tasks_for(org: Organization, count: int, seed: int, now: datetime) -> list[Task]:
    """An organization's events as tasks of at most TASK_EVENTS, each over its own
    slice of the retention window (newest slice first), each with its own seed."""
    parts = max(1, -(-count // TASK_EVENTS))
    span = DAYS / parts
    return [
        Task(
            org.pk,
            count // parts + (1 if n < count % parts else 0),
            seed if parts == 1 else seed * 100_003 + n,
            span,
            now - timedelta(days=span * n),
            parts == 1,
        )
        for n in range(parts)
    ]


def customers_create(count: int) -> list[Organization]:
    """`count` more organizations ("Customer 0001" ...), each with a site, Jira and
    Confluence, an admin, CUSTOMER_ACCOUNTS accounts and the demo's groups; bulk
    inserts, one password hash for all (the demo password). Idempotent: existing
    customers are kept and not made again."""
    existing = list(Organization.objects.filter(name__startswith="Customer ").order_by("pk"))
    if len(existing) >= count:
        return existing[:count]
    plans = {p.key: p for p in Plan.objects.filter(key__in=CUSTOMER_PLANS)}
    password = make_password(DEMO_PASSWORD)
    with transaction.atomic():
        new = Organization.objects.bulk_create(
            Organization(name=f"Customer {n:04d}", plan=plans[CUSTOMER_PLANS[n % 3]])
            for n in range(len(existing) + 1, count + 1)
        )
        sites = Site.objects.bulk_create(
            Site(organization=org, name=f"customer-{org.name[-4:]}.example.net") for org in new
        )
        Product.objects.bulk_create(
            Product(site=site, kind=kind) for site in sites for kind in ("jira", "confluence")
        )
        users, roles = [], []
        for org in new:
            tag = org.name[-4:]
            users.append(User(email=f"admin@customer-{tag}.test", name="Org Admin"))
            roles.append((org, Membership.Role.ADMIN))
            for n in range(CUSTOMER_ACCOUNTS):
                first, last = FIRST[(n + org.pk) % len(FIRST)], LAST[(n * 7 + org.pk) % len(LAST)]
                users.append(
                    User(
                        email=f"{first}.{last}{n}@customer-{tag}.test".lower(),
                        name=f"{first} {last}",
                    )
                )
                roles.append((org, Membership.Role.MEMBER))
        for user in users:
            user.password = password
        users = User.objects.bulk_create(users)
        Membership.objects.bulk_create(
            Membership(organization=org, user=user, role=role)
            for user, (org, role) in zip(users, roles, strict=True)
        )
        Group.objects.bulk_create(
            Group(organization=org, name=name) for org in new for name in GROUP_NAMES
        )
    return existing + new


def _task_run(task: Task) -> int:
    """One task, in a worker process: the events, recorded in chunks."""
    from .recording import record_specs
    from .seed_fast import seed_specs

    gc.disable()  # millions of short-lived objects, no cycles
    org = Organization.objects.select_related("plan").get(pk=task.org_id)
    specs = ActivityGenerator(org, seed=task.seed).specs(task.count, days=task.days, now=task.now)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for statement in LOAD_SETTINGS:
                cursor.execute(statement)
        try:
            return seed_specs(org, specs, CHUNK, alone=task.alone)
        finally:  # the command's own connection, when it runs the tasks itself
            with connection.cursor() as cursor:
                cursor.execute("RESET synchronous_commit")
    recorded = 0
    while True:
        chunk = [spec for _, spec in zip(range(CHUNK), specs, strict=False)]
        if not chunk:
            return recorded
        recorded += len(record_specs(org, chunk, CHUNK)[0])


def _worker_start() -> None:
    # The default SIGTERM: a handler inherited from the parent (a worker's, a test
    # runner's) would keep the pool from ending its workers.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    connections.close_all()  # never share the parent's socket: each opens its own


def tasks_run(tasks: list[Task], jobs: int, progress: Callable[[int], None]) -> int:
    """Runs `tasks` in `jobs` processes (PostgreSQL, outside a transaction: the
    workers would not see what it has not committed) or here; returns how many events
    were recorded."""
    total = 0
    if jobs <= 1 or connection.vendor != "postgresql" or connection.in_atomic_block:
        for task in tasks:
            total += _task_run(task)
            progress(total)
        return total
    connections.close_all()
    context = multiprocessing.get_context("fork")
    pool = context.Pool(jobs, initializer=_worker_start)
    try:
        for recorded in pool.imap_unordered(_task_run, tasks):
            total += recorded
            progress(total)
        pool.close()  # every task done: the workers end by themselves
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
    return total


# PostgreSQL bulk load: indexes built once, autovacuum off meanwhile.


def _secondary_indexes(cursor) -> list[tuple[str, str]]:
    """(name, CREATE statement) of the events table's indexes but its primary key. Of a
    partitioned table (audit.partitions) the statement names the table without ONLY, so
    that it makes the partitions' indexes again too."""
    cursor.execute(
        "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
        "WHERE t.relname = %s AND NOT x.indisprimary ORDER BY i.relname",
        [Event._meta.db_table],
    )
    return [(name, create.replace(" ON ONLY ", " ON ", 1)) for name, create in cursor.fetchall()]


def _term_key(cursor) -> tuple[str, str] | None:
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
        "JOIN pg_class t ON t.oid = c.conrelid WHERE t.relname = %s AND c.contype = 'p'",
        [EventTerm._meta.db_table],
    )
    return cursor.fetchone()


def _storage_tables(cursor, table: str) -> list[str]:
    """`table` itself, or its partitions when it is partitioned (audit.partitions): a
    partitioned table stores nothing and takes no storage parameters."""
    cursor.execute(
        "SELECT c.oid::regclass::text FROM pg_class c WHERE c.oid = %s::regclass "
        "AND c.relkind = 'r' UNION ALL SELECT i.inhrelid::regclass::text "
        "FROM pg_inherits i WHERE i.inhparent = %s::regclass ORDER BY 1",
        [table, table],
    )
    return [row[0] for row in cursor.fetchall()]


def _foreign_keys(cursor) -> list[tuple[str, str, str, str]]:
    """(table, name, definition, referenced table) of the loaded tables' foreign keys
    (the events' and hourly counts' to the organization and the activity): each
    inserted row would check them at commit, an index probe and a row lock each, as
    much work as the COPY of the row itself. Made again at the end, one scan per key
    checks them all."""
    cursor.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), "
        "confrelid::regclass::text FROM pg_constraint WHERE conrelid = ANY(%s::regclass[]) "
        "AND contype = 'f' AND conparentid = 0 ORDER BY 1, 2",
        [list(LOADED_TABLES)],
    )
    return cursor.fetchall()


# The load's session: a seed lost to a crash is seeded again, so its commits need not
# wait for the disk (reset when the task ends).
LOAD_SETTINGS = ("SET synchronous_commit = off",)
# The rebuild's: sorts in memory, with parallel workers.
BUILD_SETTINGS = (
    "SET maintenance_work_mem = '1GB'",
    f"SET max_parallel_maintenance_workers = {min(4, os.cpu_count() or 1)}",
)


def _lanes_run(lanes: list[list[tuple[str, str | list[str]]]], jobs: int) -> list[dict[str, float]]:
    """Runs each lane's (label, statement or statements of one transaction) in order,
    `jobs` lanes at once, each on its own connection (in a thread of its own); returns
    the seconds each lane spent per label."""

    def run(lane: list[tuple[str, str | list[str]]]) -> dict[str, float]:
        spent: dict[str, float] = {}
        try:
            with connection.cursor() as cursor:
                for statement in BUILD_SETTINGS:
                    cursor.execute(statement)
            for label, statements in lane:
                started = time.monotonic()
                if isinstance(statements, str):
                    with connection.cursor() as cursor:
                        cursor.execute(statements)  # VACUUM: never in a transaction
                else:
                    with transaction.atomic(), connection.cursor() as cursor:
                        for statement in statements:
                            cursor.execute(statement)
                spent[label] = spent.get(label, 0.0) + time.monotonic() - started
        finally:
            connection.close()  # the thread's own
        return spent

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        return list(pool.map(run, lanes))


def _largest_first(cursor, tables: list[str]) -> list[str]:
    cursor.execute(
        "SELECT t FROM unnest(%s::text[]) AS t ORDER BY pg_relation_size(t::regclass) DESC",
        [tables],
    )
    return [row[0] for row in cursor.fetchall()]


@contextmanager
def pg_bulk_load(report: Callable[[str], None], jobs: int = 1) -> Iterator[bool]:
    """PostgreSQL, events table empty: drops the events' secondary indexes, their
    foreign keys and the term key for the duration, turns autovacuum off on the loaded
    tables, then makes them again and runs VACUUM (ANALYZE) (_rebuild). Yields whether
    it did (False: nothing changed, indexes kept)."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        yield False
        return
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {Event._meta.db_table})")
        if cursor.fetchone()[0]:
            yield False
            return
        indexes, key, foreign = _secondary_indexes(cursor), _term_key(cursor), _foreign_keys(cursor)
        stored = [t for table in LOADED_TABLES for t in _storage_tables(cursor, table)]
        for table in stored:
            cursor.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        for table, name, _, _ in foreign:
            cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        if key:
            cursor.execute(f'ALTER TABLE {EventTerm._meta.db_table} DROP CONSTRAINT "{key[0]}"')
    try:
        yield True
    finally:
        connections.close_all()
        _rebuild(report, jobs, indexes, key, foreign)


def _rebuild(report: Callable[[str], None], jobs: int, indexes, key, foreign) -> None:
    """After the load: each loaded table's indexes, then its foreign keys (one scan
    each checks every row), then VACUUM of its partitions (or itself, with ANALYZE), a
    lane per table, `jobs` lanes at once (the events' and the terms' first: the
    longest); then ANALYZE of the partitioned tables, and autovacuum back on."""
    started = time.monotonic()
    lanes, partitioned, stored = [], [], []
    with connection.cursor() as cursor:
        for table in LOADED_TABLES:
            parts = _largest_first(cursor, _storage_tables(cursor, table))
            stored += parts
            lane = []
            if table == EventTerm._meta.db_table and key:
                lane.append(
                    ("indexes built", f'ALTER TABLE {table} ADD CONSTRAINT "{key[0]}" {key[1]}')
                )
            if table == Event._meta.db_table:
                lane += [("indexes built", create) for _, create in indexes]
            constraints = [f'ADD CONSTRAINT "{n}" {d}' for on, n, d, _ in foreign if on == table]
            if constraints:
                # Adding a foreign key locks the table it references; two lanes locking
                # the organizations and the activities in turn, in other orders,
                # deadlock: each takes them all first, in one order.
                referenced = ", ".join(sorted({to for _, _, _, to in foreign}))
                lane.append(
                    (
                        "foreign keys checked",
                        [
                            f"LOCK TABLE {referenced} IN SHARE ROW EXCLUSIVE MODE",
                            f"ALTER TABLE {table} {', '.join(constraints)}",
                        ],
                    )
                )
            if parts != [table]:
                partitioned.append(table)  # a partition's statistics come with its table's
            lane += [
                ("VACUUM (ANALYZE)", ("VACUUM (ANALYZE) " if part == table else "VACUUM ") + part)
                for part in parts
            ]
            lanes.append(lane)
    spent = _lanes_run(lanes, jobs)
    for table, lane in zip(LOADED_TABLES, spent, strict=True):
        report(f"{table}: " + ", ".join(f"{label} in {s:.1f} s" for label, s in lane.items()))
    analyzing = time.monotonic()
    _lanes_run([[("ANALYZE", f"ANALYZE {table}")] for table in partitioned], jobs)
    if partitioned:
        seconds = time.monotonic() - analyzing
        report(f"VACUUM (ANALYZE): ANALYZE of the partitioned tables in {seconds:.1f} s")
    with connection.cursor() as cursor:
        for table in stored:
            cursor.execute(f"ALTER TABLE {table} RESET (autovacuum_enabled)")
    seconds = time.monotonic() - started
    report(f"indexes, keys and VACUUM (ANALYZE) in {seconds:.1f} s ({jobs} sessions at once)")


def now_rounded() -> datetime:
    return timezone.now().replace(microsecond=0)
