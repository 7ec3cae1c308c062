"""Recording benchmark: prints events per second through the single and batch paths
and the time `seed_demo` takes, on a throwaway SQLite file or PostgreSQL database.

    .venv/bin/python tests/benchmarks/bench_record.py                 # full scale, SQLite
    .venv/bin/python tests/benchmarks/bench_record.py --database-url \\
        postgres://auditlog@127.0.0.1:5432/bench_record               # PostgreSQL
    .venv/bin/python tests/benchmarks/bench_record.py --single 300 --prefill 20000 \\
        --batches 3 --batch-size 5000 --seed-events 50000              # small, while iterating

Targets (issue "foundation"): a single `event_record` <= 2 ms median including its
transaction; batch >= 20,000 events/s on SQLite; 1,000,000 demo events seeded in under
2 minutes on SQLite.

The database named by --database-url is deleted and recreated (twice: once for the
recording measures, once for the seed). Queries are timed with DEBUG off, as in
production (with DEBUG on Django keeps a log of every query).
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_URL = "sqlite:////tmp/bench_record.sqlite3"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL, help=f"default {DEFAULT_URL}")
    parser.add_argument("--single", type=int, default=2000, help="event_record calls (2,000)")
    parser.add_argument(
        "--prefill",
        type=int,
        default=200_000,
        help="events recorded (untimed) before the batch measure (200,000)",
    )
    parser.add_argument("--batches", type=int, default=10, help="timed batches (10)")
    parser.add_argument("--batch-size", type=int, default=20_000, help="events per batch (20,000)")
    parser.add_argument(
        "--batch-days",
        type=int,
        default=180,
        help="the batches' events spread over this many days before now (180: as the demo; "
        "1: fresh activity, as products push it)",
    )
    parser.add_argument(
        "--seed-events", type=int, default=1_000_000, help="seed_demo --events (1,000,000)"
    )
    parser.add_argument("--skip-seed", action="store_true", help="do not measure seed_demo")
    parser.add_argument(
        "--no-location",
        action="store_true",
        help="time events with public IPs and no location, which the recorder looks up in "
        "GEOIP_PATH (the demo's events carry a location and documentation-range IPs)",
    )
    return parser.parse_args()


def seed_arguments(description: str, default_url: str) -> argparse.ArgumentParser:
    """The arguments of a benchmark that seeds with `seed_demo --events --orgs` into its
    own PostgreSQL database (bench_seed, bench_terms): add its own, then parse."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--database-url", default=default_url, help=f"default {default_url}")
    parser.add_argument("--events", type=int, default=1_000_000, help="Acme's events (1M)")
    parser.add_argument("--orgs", type=int, default=100, help="other organizations (100)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="seed processes")
    return parser


def django_setup(url: str) -> None:
    """Django on the throwaway database `url`, as the benchmarks run it: DEBUG off as in
    production (with DEBUG on Django keeps a log of every query), the fast password
    hasher (the demo accounts' hashing is not what they time), warnings only. Set any
    other environment first."""
    sys.path.insert(0, str(ROOT))
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "auditlog_site.settings")
    os.environ.setdefault("FAST_PASSWORD_HASHER", "true")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.conf import settings

    settings.DEBUG = False


def run_header(url: str, extra: str = "") -> str:
    """When and where a benchmark ran: time, database, cores and load, then `extra`."""
    from django.db import connection

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}  {connection.vendor} {url}  "
    return line + f"cores: {os.cpu_count()}  load: {load}" + (f"  {extra}" if extra else "")


def database_reset(url: str) -> None:
    """Deletes and recreates the (throwaway) database `url` names."""
    database_drop(url, create=True)


def database_drop(url: str, create: bool = False) -> None:
    """Deletes the (throwaway) database `url` names (a PostgreSQL one only if named
    bench*); with `create`, makes it again, empty."""
    from django.conf import settings
    from django.db import connections

    if settings.configured:  # callers may reset the database before Django is set up
        connections.close_all()
    parts = urlsplit(url)
    if parts.scheme.startswith("sqlite"):
        path = Path(parts.path[1:] if parts.path.startswith("//") else parts.path)
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    import psycopg

    name = parts.path.lstrip("/")
    if not name.startswith("bench"):
        sys.exit(f"refusing to drop {name!r}: benchmark databases are named bench*")
    admin_url = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            conn.execute(f'CREATE DATABASE "{name}"')


def database_fresh(url: str):
    """A migrated, empty database with the demo organizations; returns Acme Corporation."""
    from django.core.management import call_command

    from audit.demo import demo_orgs_create
    from audit.services import activity_cache_clear

    database_reset(url)
    call_command("migrate", verbosity=0)
    activity_cache_clear()
    return demo_orgs_create()[0]


# Public /24s standing in for the demo's documentation ranges under --no-location.
PUBLIC_PREFIXES = [
    "81.2.69.",
    "8.8.8.",
    "1.1.1.",
    "9.9.9.",
    "185.199.108.",
    "151.101.1.",
    "104.16.0.",
    "13.107.42.",
]


def unlocated(specs, enabled: bool):
    """`specs` as they come, or (--no-location) without a location and with a public IP
    in place of each documentation-range one (same last octet, so as many distinct IPs)."""
    if not enabled:
        return specs
    from dataclasses import replace

    prefixes: dict[str, str] = {}
    out = []
    for spec in specs:
        prefix, _, last = (spec.ip or "").rpartition(".")
        public = prefixes.setdefault(prefix, PUBLIC_PREFIXES[len(prefixes) % 8])
        out.append(replace(spec, location=None, ip=f"{public}{last}" if prefix else None))
    return out


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def bench_single(org, calls: int, no_location: bool = False) -> None:
    from audit.demo import ActivityGenerator
    from audit.services import event_record

    generator = ActivityGenerator(org, seed=11)
    kwargs = [
        {
            "action": spec.action,
            "actor": spec.actor,
            "product": spec.product,
            "context": spec.context,
            "container": spec.container,
            "details": spec.details,
            "ip": spec.ip,
            "user_agent": spec.user_agent,
            "location": spec.location,
        }
        for spec in unlocated(list(generator.specs(calls + 50)), no_location)
    ]
    for kw in kwargs[:50]:  # warm up: catalogue cache, prepared statements, page cache
        event_record(organization=org, **kw)
    timings = []
    for kw in kwargs[50:]:
        started = time.perf_counter()
        result = event_record(organization=org, **kw)
        timings.append(time.perf_counter() - started)
        assert result.recorded, result.reason
    timings.sort()
    p95 = timings[int(len(timings) * 0.95) - 1]
    print(
        f"single event_record x{calls:,}: median {ms(statistics.median(timings))}, "
        f"p95 {ms(p95)}, max {ms(timings[-1])}  (target: median <= 2 ms)"
    )


def bench_batch(
    org, prefill: int, batches: int, size: int, days: int, no_location: bool = False
) -> None:
    from audit.demo import ActivityGenerator
    from audit.models import Event
    from audit.services import event_record_batch

    generator = ActivityGenerator(org, seed=12)
    if prefill:
        started = time.perf_counter()
        specs = generator.specs(prefill)
        done = 0
        while done < prefill:
            chunk = [spec for _, spec in zip(range(size), specs, strict=False)]
            done += len(chunk)
            event_record_batch(organization=org, specs=chunk)
        print(f"prefill: {prefill:,} events in {time.perf_counter() - started:.1f} s (untimed)")
    rates = []
    total_events, total_seconds = 0, 0.0
    for n in range(batches):
        # The specs are made before the clock starts: this measures recording only.
        specs = unlocated(list(generator.specs(size, days=days)), no_location)
        started = time.perf_counter()
        result = event_record_batch(organization=org, specs=specs)
        seconds = time.perf_counter() - started
        total_events += result.recorded
        total_seconds += seconds
        rates.append(result.recorded / seconds)
        print(f"  batch {n + 1}: {result.recorded:,} events in {seconds:.2f} s", flush=True)
    print(
        f"batch event_record_batch {batches} x {size:,} (over {days} days) on "
        f"{prefill:,}+ events: {total_events / total_seconds:,.0f} events/s overall, "
        f"median batch {statistics.median(rates):,.0f} events/s  (target: >= 20,000 on SQLite)"
    )
    print(f"  events in the database afterwards: {Event.objects.count():,}")


def print_plans(org) -> None:
    """EXPLAIN of the three core queries on the populated database (no planner hints)."""
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from audit.models import Activity, Event, EventTerm
    from audit.recording import term_hash

    start = timezone.now() - timedelta(days=7)
    action_id = Activity.objects.get(key="page_viewed").pk
    term = "acme.example.net"
    queries = {
        "event list": Event.objects.filter(organization=org, occurred_at__gte=start),
        "activity filter": Event.objects.filter(
            organization=org, occurred_at__gte=start, action_id=action_id
        ),
        "term search": EventTerm.objects.filter(
            organization=org, term_hash=term_hash(term), occurred_at__gte=start
        ).order_by("-occurred_at", "-event_id"),
    }
    explain = "EXPLAIN QUERY PLAN" if connection.vendor == "sqlite" else "EXPLAIN"
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # statistics, as autovacuum would soon take
            cursor.execute("ANALYZE audit_event, audit_eventterm")
    for name, queryset in queries.items():
        if queryset.model is Event:
            queryset = queryset.order_by("-occurred_at", "-id")
        sql, params = queryset[:51].query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(f"{explain} {sql}", params)
            plan = [str(row[-1] if connection.vendor == "sqlite" else row[0]) for row in cursor]
        print(f"  plan, {name}: " + " | ".join(line.strip() for line in plan))


def bench_seed(url: str, events: int) -> None:
    from django.core.management import call_command

    from audit.models import Event
    from audit.services import activity_cache_clear

    database_reset(url)
    call_command("migrate", verbosity=0)
    activity_cache_clear()
    started = time.perf_counter()
    with open(os.devnull, "w") as quiet:
        call_command("seed_demo", events=events, stdout=quiet)
    seconds = time.perf_counter() - started
    recorded = Event.objects.count()
    print(
        f"seed_demo --events {events:,}: {recorded:,} events recorded in {seconds:.1f} s "
        f"({recorded / seconds:,.0f} events/s, including the demo orgs and generating "
        f"the activity)  (target for 1,000,000 on SQLite: < 120 s)"
    )


def main() -> None:
    args = parse_args()
    django_setup(args.database_url)
    from django.conf import settings

    print(
        run_header(
            args.database_url,
            f"AUDIT_RECORD_BATCH_SIZE={settings.AUDIT_RECORD_BATCH_SIZE}  "
            f"GEOIP_PATH={getattr(settings, 'GEOIP_PATH', '') or '-'}"
            + ("  --no-location" if args.no_location else ""),
        ),
        flush=True,
    )
    org = database_fresh(args.database_url)
    if args.single:
        bench_single(org, args.single, args.no_location)
    if args.batches:
        bench_batch(
            org, args.prefill, args.batches, args.batch_size, args.batch_days, args.no_location
        )
        print_plans(org)
    if not args.skip_seed and args.seed_events:
        bench_seed(args.database_url, args.seed_events)
    from django.db import connections

    connections.close_all()


if __name__ == "__main__":
    main()
