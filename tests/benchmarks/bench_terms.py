"""Search-term benchmark (issue 16, 6a and 6b), on PostgreSQL: the seed, the size of the
search-term table, and 10,000-row exports filtered by terms with many hits.

    .venv/bin/python tests/benchmarks/bench_terms.py                  # 1M Acme events + 1M others
    .venv/bin/python tests/benchmarks/bench_terms.py --events 200000  # small, while iterating
    .venv/bin/python tests/benchmarks/bench_terms.py --reuse          # keep the seeded database

Prints:
- the seed (`seed_demo --events N --orgs M`: N events in Acme Corporation and N across
  M other organizations, COPY, J processes), its rate and the extrapolation to 20M;
- the search-term table with its key (pg_total_relation_size, partitions included) as
  stored (rows of a term's events per batch and UTC day, by 64-bit hash: migration
  0017) beside the same terms one row per term and event, as text (the layout before
  0015) and as hashes (0015-0016), built here from the events into scratch tables the
  same way (loaded, then keyed), and the events table for scale;
- for terms of about 70,000 hits and the term with the most hits: the worker's 10,000-row
  export (export_file_build, as the django-q2 task runs it: keyset steps down the term
  key) beside the query it replaced (every match joined and sorted, then 10,000 kept).

Targets: terms <= half of their text size; a 10,000-row export <= 2 s whatever the hits.
The database named by --database-url (bench_terms*) is dropped and made again unless
--reuse finds it seeded; drop it when done (`--drop`).
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_export import export_timed  # noqa: E402
from bench_record import (  # noqa: E402
    database_drop,
    database_reset,
    django_setup,
    run_header,
    seed_arguments,
)

DEFAULT_URL = "postgres://auditlog@127.0.0.1:5432/bench_terms"


def parse_args() -> argparse.Namespace:
    parser = seed_arguments(__doc__.split("\n\n")[0], DEFAULT_URL)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per export (3)")
    parser.add_argument("--reuse", action="store_true", help="reuse an already seeded database")
    parser.add_argument("--drop", action="store_true", help="drop the database at the end")
    parser.add_argument("--skip-sizes", action="store_true", help="no size comparison")
    return parser.parse_args()


def seed(args) -> None:
    from django.core.management import call_command

    from audit.models import Event

    if args.reuse:
        try:
            if Event.objects.count() >= args.events:
                print(f"reusing the seeded database ({Event.objects.count():,} events)")
                return
        except Exception:  # noqa: BLE001 - not there yet: seed it
            pass
    database_reset(args.database_url)
    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    keys = Path(tempfile.mkdtemp(prefix="bench_terms_")) / "keys.json"
    call_command(
        "seed_demo", events=args.events, orgs=args.orgs, jobs=args.jobs, simulator_keys=keys
    )
    seconds = time.perf_counter() - started
    total = Event.objects.count()
    print(
        f"seed: {total:,} events in {seconds:.0f} s ({total / seconds:,.0f} events/s, "
        f"{args.jobs} jobs): 20M would take ~{20e6 / (total / seconds) / 60:.0f} min at this "
        f"rate  [{run_header(args.database_url)}]",
        flush=True,
    )


def size(cursor, table: str) -> int:
    """The table with its indexes, its partitions' included (audit.partitions): a
    partitioned table stores nothing itself, so pg_total_relation_size of it is 0
    (and pg_partition_tree lists nothing of a plain table)."""
    cursor.execute(
        "SELECT pg_total_relation_size(%s) + coalesce((SELECT sum(pg_total_relation_size("
        "relid)) FROM pg_partition_tree(%s) WHERE relid <> %s::regclass), 0)",
        [table, table, table],
    )
    return int(cursor.fetchone()[0])


def loaded(value):
    """A JSON column read by a raw query: Django's connection leaves it as text."""
    return json.loads(value) if isinstance(value, str) else (value or [])


def text_terms_build(cursor) -> None:
    """The terms as text, as they were stored before migration 0015: derived from each
    event (audit.recording.event_terms), COPYed in, then keyed."""
    from django.db import connection

    from audit.recording import activity_keys_by_id, event_terms

    keys = activity_keys_by_id()
    cursor.execute("DROP TABLE IF EXISTS bench_eventterm_text")
    cursor.execute(
        "CREATE TABLE bench_eventterm_text (organization_id bigint NOT NULL, "
        "term varchar(200) NOT NULL, occurred_at timestamptz NOT NULL, event_id bigint NOT NULL)"
    )
    last = 0
    raw = connection.connection
    while True:
        cursor.execute(
            "SELECT id, organization_id, occurred_at, action_id, actor_type, actor_name, "
            "actor_email, site_name, context, container, details FROM audit_event "
            "WHERE id > %s ORDER BY id LIMIT 50000",
            [last],
        )
        rows = cursor.fetchall()
        if not rows:
            break
        last = rows[-1][0]
        with raw.cursor() as copy_cursor:
            with copy_cursor.copy("COPY bench_eventterm_text FROM STDIN") as copy:
                for pk, org, at, action, a_type, name, email, site, ctx, cnt, details in rows:
                    for term in event_terms(
                        actor_type=a_type,
                        actor_name=name,
                        actor_email=email,
                        site_name=site,
                        items=[*loaded(ctx), *loaded(cnt)],
                        action=keys.get(action, ""),
                        details=loaded(details),
                    ):
                        copy.write_row((org, term, at, pk))
    cursor.execute(
        "ALTER TABLE bench_eventterm_text ADD PRIMARY KEY "
        "(organization_id, term, occurred_at, event_id)"
    )
    cursor.execute("VACUUM ANALYZE bench_eventterm_text")


def bench_sizes() -> None:
    from django.db import connection

    pg_hash = "('x' || left(encode(sha256(convert_to(term, 'UTF8')), 'hex'), 16))::bit(64)::bigint"
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE audit_eventterm")  # partitions too
        stored = size(cursor, "audit_eventterm")
        cursor.execute(
            "SELECT count(*), sum(coalesce(cardinality(event_ids), 1)) FROM audit_eventterm"
        )
        rows, pairs = cursor.fetchone()
        started = time.perf_counter()
        text_terms_build(cursor)
        built = time.perf_counter() - started
        text = size(cursor, "bench_eventterm_text")
        cursor.execute(
            "CREATE TABLE bench_eventterm_hashed AS SELECT organization_id, "
            f"{pg_hash} AS term_hash, occurred_at, event_id FROM bench_eventterm_text"
        )
        cursor.execute(
            "ALTER TABLE bench_eventterm_hashed ADD PRIMARY KEY "
            "(organization_id, term_hash, occurred_at, event_id)"
        )
        cursor.execute("VACUUM ANALYZE bench_eventterm_hashed")
        hashed = size(cursor, "bench_eventterm_hashed")
        events = size(cursor, "audit_event")
        cursor.execute("DROP TABLE bench_eventterm_text, bench_eventterm_hashed")
    mb = 2**20
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"search terms ({pairs:,} term-event pairs in {rows:,} rows), table + key: "
        f"{stored / mb:,.0f} MB as stored, {stored / text:.0%} of {text / mb:,.0f} MB as text "
        f"one row per pair (built in {built:.0f} s; target <= 50%), {hashed / mb:,.0f} MB "
        f"as hashes one row per pair ({hashed / text:.0%}); the events table with its "
        f"indexes: {events / mb:,.0f} MB  [load {load}]",
        flush=True,
    )


def busy_terms(org) -> list[tuple[str, int]]:
    """(term, hits): the term with the most hits and the one nearest 70,000, among the
    terms of a sample of the organization's events."""
    from django.db.models import Sum

    from audit.charts import EventCount
    from audit.models import Event, EventTerm
    from audit.recording import event_terms, term_hash

    candidates: set[str] = set()
    sample = Event.objects.filter(organization=org).select_related("action")[:3000]
    for e in sample:
        candidates |= event_terms(
            actor_type=e.actor_type,
            actor_name=e.actor_name,
            actor_email=e.actor_email,
            site_name=e.site_name,
            items=[*e.context, *e.container],
            action=e.action.key,
            details=e.details,
        )
    hits = {
        term: EventTerm.objects.filter(organization=org, term_hash=term_hash(term)).aggregate(
            n=Sum(EventCount("event_ids"))
        )["n"]
        for term in candidates
    }
    ranked = sorted(hits.items(), key=lambda kv: -kv[1])
    near = min(ranked, key=lambda kv: abs(kv[1] - 70_000))
    return [near, ranked[0]] if near != ranked[0] else [near]


def bench_export(org, admin, term: str, hits: int, runs: int) -> None:
    from audit.selectors import event_list, event_walk
    from exports.services import _ROW_FIELDS, export_filter

    query = {"range": "180d", "q": term}
    event_filter = export_filter(organization=org, user=admin, filters=query)
    assert event_filter.is_valid(), event_filter.errors

    def export_once() -> tuple[float, int]:
        seconds, export = export_timed(org, admin, query)
        assert export.status == "ready", export.error
        return seconds, export.row_count

    export_once()  # warm
    timings = [export_once() for _ in range(runs)]
    walk, old = [], []
    for _ in range(runs):
        started = time.perf_counter()
        walked = sum(1 for _ in event_walk(event_filter, limit=10_000, values=_ROW_FIELDS))
        walk.append(time.perf_counter() - started)
        started = time.perf_counter()
        # The export's read before: the matches joined, sorted, then the first 10,000.
        before = len(list(event_list(filters=event_filter).values_list(*_ROW_FIELDS)[:10_000]))
        old.append(time.perf_counter() - started)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"export of {term!r} ({hits:,} hits): {timings[0][1]:,} rows, whole export median "
        f"{statistics.median(t for t, _ in timings):.2f} s (max {max(t for t, _ in timings):.2f}"
        f" s; target <= 2 s); its read alone (keyset steps, {walked:,} rows) median "
        f"{statistics.median(walk):.2f} s, the read it replaced (every match sorted, "
        f"{before:,} rows) median {statistics.median(old):.2f} s  [load {load}]",
        flush=True,
    )


def main() -> None:
    args = parse_args()
    if not args.database_url.startswith("postgres"):
        sys.exit("PostgreSQL only: pg_total_relation_size")
    os.environ["PRIVATE_STORAGE_DIR"] = tempfile.mkdtemp(prefix="bench_terms_files_")
    os.environ["EMAIL_BACKEND"] = "django.core.mail.backends.locmem.EmailBackend"
    os.environ["Q_SYNC"] = "true"
    # No signing key: the export makes no manifest, so the first one does not seal the
    # whole seeded log first (sealing is bench_integrity's).
    os.environ["AUDIT_SIGNING_KEY"] = ""
    os.environ["AUDIT_SIGNING_KEY_FILE"] = ""
    django_setup(args.database_url)

    from audit.demo import ADMIN_EMAIL
    from orgs.models import Organization, User

    print(run_header(args.database_url), flush=True)
    seed(args)
    if not args.skip_sizes:
        bench_sizes()
    org = Organization.objects.get(name="Acme Corporation")
    admin = User.objects.get(email=ADMIN_EMAIL)
    for term, hits in busy_terms(org):
        bench_export(org, admin, term, hits, args.runs)
    print(run_header(args.database_url, "(the machine is shared: other work ran meanwhile)"))
    if args.drop:
        database_drop(args.database_url)
        print(f"dropped {args.database_url.rsplit('/', 1)[1]}")


if __name__ == "__main__":
    main()
