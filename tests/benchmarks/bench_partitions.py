"""Retention by partition drop (PostgreSQL): one month holding --events events, past every
organization's retention, is removed by the daily retention job, beside a month of
--live-events still in retention. Prints the job's time (the drop of the month's four
partitions in one statement, the RetentionMarks and audit_log_purged events) and the
load average; the machine may be shared, so read the figures with it.

    .venv/bin/python tests/benchmarks/bench_partitions.py                  # 1,500,000
    .venv/bin/python tests/benchmarks/bench_partitions.py --events 2000000

Target (issue 16): retention of one expired month by partition drop <= 2 s.

The events are written with SQL (generate_series) straight into the tables as the owner,
with two search terms each and their hourly counts: the drop's cost is in the files and
the catalogue, not in what the rows say. The database named by --database-url (it must
start with "bench") is deleted and recreated; drop it after.
"""

import argparse
import logging
import sys
import time
from datetime import timedelta

from bench_record import database_reset, django_setup, run_header

DEFAULT_URL = "postgres://auditlog@127.0.0.1:5432/bench_part_partitions"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL, help=f"default {DEFAULT_URL}")
    parser.add_argument(
        "--events", type=int, default=1_500_000, help="events in the expired month (1,500,000)"
    )
    parser.add_argument(
        "--live-events", type=int, default=300_000, help="events in the current month (300,000)"
    )
    return parser.parse_args()


def month_fill(cursor, month, count: int, org_ids: list[int], action_id: int) -> None:
    """`count` events spread over `month`, round-robin over `org_ids`, two search terms
    each (as audit.recording.term_hash hashes them, a row of one event each, as
    event_record writes them), and their hourly counts and totals."""
    from audit.partitions import month_bounds

    start, end = month_bounds(month)
    seconds = (end - start).total_seconds()
    orgs = "ARRAY[" + ", ".join(map(str, org_ids)) + "]::bigint[]"
    cursor.execute(
        f"""
        INSERT INTO audit_event (organization_id, occurred_at, recorded_at, action_id,
            actor_type, actor_id, actor_name, actor_email, product_kind, site_name, context,
            container, content, details, user_agent, country, region, city, message)
        SELECT ({orgs})[1 + g %% {len(org_ids)}],
               %s::timestamptz + make_interval(secs => (g::float8 * {seconds} / {count})),
               %s::timestamptz + make_interval(secs => (g::float8 * {seconds} / {count})),
               {action_id}, 'user', 'u' || (g %% 5000), 'User ' || (g %% 5000),
               'user' || (g %% 5000) || '@acme.test', 'jira', 'acme.example.net',
               '[]'::jsonb, '[]'::jsonb, '', '{{}}'::jsonb, 'bench', 'France', 'IDF', 'Paris',
               'User ' || (g %% 5000) || ' created group g' || (g %% 300)
        FROM generate_series(0, {count - 1}) AS g
        """,
        [start, start],
    )
    cursor.execute(
        """
        INSERT INTO audit_eventterm (organization_id, term_hash, occurred_at, event_id)
        SELECT e.organization_id,
               ('x' || left(encode(sha256(convert_to(t.term, 'UTF8')), 'hex'), 16))::bit(64)
                   ::bigint,
               e.occurred_at, e.id
        FROM audit_event e CROSS JOIN LATERAL
            (VALUES (lower(e.actor_name)), (lower(e.actor_email))) AS t(term)
        WHERE e.occurred_at >= %s AND e.occurred_at < %s
        ON CONFLICT DO NOTHING
        """,
        [start, end],
    )
    for table, extra in (("audit_eventhourlycount", ", action_id"), ("audit_eventhourlytotal", "")):
        cursor.execute(
            f"""
            INSERT INTO {table} (organization_id, hour{extra}, count)
            SELECT organization_id, date_trunc('hour', occurred_at){extra}, count(*)
            FROM audit_event WHERE occurred_at >= %s AND occurred_at < %s
            GROUP BY 1, 2{", 3" if extra else ""}
            """,
            [start, end],
        )


def main() -> None:
    args = parse_args()
    database_reset(args.database_url)
    django_setup(args.database_url)
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from audit.demo import demo_orgs_create
    from audit.models import Activity, Event, RetentionMark
    from audit.partitions import (
        longest_retention_days,
        month_add,
        month_start,
        partition_name,
        partitions_of,
    )
    from audit.retention import audit_log_purge

    call_command("migrate", verbosity=0)
    orgs = demo_orgs_create()
    now = timezone.now()
    horizon = now - timedelta(days=longest_retention_days())
    expired = month_add(month_start(horizon), -1)  # ends before the horizon
    action_id = Activity.objects.get(key="group_created").pk
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT audit_partitions_ensure(%s, %s)", [expired, month_start(now)])
        month_fill(cursor, expired, args.events, [o.pk for o in orgs], action_id)
        month_fill(cursor, month_start(now), args.live_events, [o.pk for o in orgs], action_id)
        cursor.execute("VACUUM ANALYZE audit_event, audit_eventterm, audit_eventhourlytotal")
        cursor.execute(
            "SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_class c "
            "WHERE c.relname IN (%s, %s, %s, %s)",
            [
                partition_name(t, expired)
                for t in (
                    "audit_event",
                    "audit_eventterm",
                    "audit_eventhourlycount",
                    "audit_eventhourlytotal",
                )
            ],
        )
        size = cursor.fetchone()[0]
    print(f"seeded {args.events:,} events in {expired:%Y-%m} ({size} with terms and counts)")
    print(f"and {args.live_events:,} in {now:%Y-%m}, in {time.perf_counter() - started:.0f} s")
    print(run_header(args.database_url))

    # The job logs each drop's own time (the function call: checks, DROP, marks).
    drops = logging.getLogger("audit.retention")
    drops.setLevel(logging.INFO)
    drops.addHandler(logging.StreamHandler(sys.stdout))
    drops.propagate = False
    started = time.perf_counter()
    # max_share 1: the seeded log is mostly the expired month, which the purge hold
    # (AUDIT_PURGE_MAX_SHARE) would take for a mistake; a real log holds a year or more.
    result = audit_log_purge(pause=0, max_share=1.0)
    elapsed = time.perf_counter() - started
    gone = partition_name("audit_event", expired) not in partitions_of("audit_event")
    marks = RetentionMark.objects.count()
    print(
        f"retention job: {result.events:,} events of {len(orgs)} organizations removed in "
        f"{elapsed:.2f} s (partition dropped: {gone}; {marks} retention marks)"
    )
    print(f"events left: {Event.objects.count():,}")
    print(run_header(args.database_url, "(after)"))


if __name__ == "__main__":
    main()
