"""Retention benchmark: purge one day's worth of events past retention out of many, while
another process reads the audit log page and a third records events, on a throwaway
SQLite file or PostgreSQL database. Prints the purge's total time, its longest batch
transaction, and the worst latency of the concurrent page reads and recordings.

    .venv/bin/python tests/benchmarks/bench_purge.py                    # full scale, SQLite
    .venv/bin/python tests/benchmarks/bench_purge.py --database-url \\
        postgres://auditlog@127.0.0.1:5432/bench_purge                  # PostgreSQL
    .venv/bin/python tests/benchmarks/bench_purge.py --events 50000 --purge-events 5000

Targets (issue "retention"): 100,000 expired events out of 1,000,000 purged in <= 10 s;
no concurrent page read slower than 250 ms.

The database named by --database-url is deleted and recreated. All events belong to the
largest demo organization (Acme Corporation), the one whose page is read: the worst case.
"""

import argparse
import math
import multiprocessing
import statistics
import time
from datetime import timedelta

from bench_record import database_reset, django_setup, run_header

DEFAULT_URL = "sqlite:////tmp/bench_purge.sqlite3"
SEED_CHUNK = 20_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL, help=f"default {DEFAULT_URL}")
    parser.add_argument("--events", type=int, default=1_000_000, help="events in all (1,000,000)")
    parser.add_argument(
        "--purge-events",
        type=int,
        default=100_000,
        help="of which on the day just past retention (100,000)",
    )
    parser.add_argument("--batch-size", type=int, help="AUDIT_PURGE_BATCH_SIZE (the setting's)")
    parser.add_argument("--pause", type=float, help="AUDIT_PURGE_PAUSE seconds (the setting's)")
    parser.add_argument(
        "--read-interval", type=float, default=0.01, help="seconds between page reads (0.01)"
    )
    parser.add_argument(
        "--record-interval", type=float, default=0.05, help="seconds between recordings (0.05)"
    )
    return parser.parse_args()


def seed(total: int, expired: int):
    """Acme Corporation with `expired` events on the day just past retention and the
    rest over the retention period. Returns the org and the moment the purge runs at."""
    from django.core.management import call_command
    from django.utils import timezone

    from audit.demo import ActivityGenerator, demo_orgs_create
    from audit.services import activity_cache_clear, event_record_batch

    call_command("migrate", verbosity=0)
    activity_cache_clear()
    org = demo_orgs_create()[0]
    now = timezone.now()
    cutoff = now - timedelta(days=org.plan.retention_days)
    generator = ActivityGenerator(org, seed=5)
    started = time.perf_counter()
    # The generator spreads `count` events over `days` ending 60 s before `now`.
    plan = [(expired, cutoff - timedelta(seconds=1), 1), (total - expired, now, 180)]
    for count, end, days in plan:
        specs = generator.specs(count, days=days, now=end)
        while chunk := [spec for _, spec in zip(range(SEED_CHUNK), specs, strict=False)]:
            event_record_batch(organization=org, specs=chunk)
    print(f"seeded {total:,} events ({expired:,} expired) in {time.perf_counter() - started:.0f} s")
    return org, now


def page_reader(url, org_id, interval, go, stop, out) -> None:
    """Reads the audit page's rows (the newest 50 of the last 7 days, by the index)."""
    django_setup(url)
    from django.utils import timezone

    from audit.models import Event

    since = timezone.now() - timedelta(days=7)
    timings = []
    Event.objects.filter(organization_id=org_id).exists()  # connect before the clock starts
    out.put(("ready", None))
    go.wait()
    while not stop.is_set():
        started = time.monotonic()
        rows = list(
            Event.objects.filter(organization_id=org_id, occurred_at__gte=since).order_by(
                "-occurred_at", "-id"
            )[:51]
        )
        timings.append((started, time.monotonic() - started))
        assert len(rows) == 51
        time.sleep(interval)
    out.put(("page read", timings))


def recorder(url, org_id, interval, go, stop, out) -> None:
    """Records one event at a time, as the app does when an admin acts."""
    django_setup(url)
    from audit.services import event_record
    from orgs.models import Organization

    org = Organization.objects.select_related("plan").get(pk=org_id)
    timings = []
    out.put(("ready", None))
    go.wait()
    while not stop.is_set():
        started = time.monotonic()
        assert event_record(organization=org, action="org_settings_updated").recorded
        timings.append((started, time.monotonic() - started))
        time.sleep(interval)
    out.put(("recording", timings))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def describe(name: str, timings: list[float]) -> str:
    timings = sorted(timings)
    if not timings:
        return f"{name}: none"
    p99 = timings[math.ceil(len(timings) * 0.99) - 1]
    return (
        f"{name} x{len(timings):,}: median {ms(statistics.median(timings))}, "
        f"p99 {ms(p99)}, max {ms(timings[-1])}"
    )


def main() -> None:
    args = parse_args()
    database_reset(args.database_url)
    django_setup(args.database_url)
    from django.conf import settings
    from django.db import connections

    from audit.models import Event
    from audit.retention import audit_log_purge

    batch_size = args.batch_size or settings.AUDIT_PURGE_BATCH_SIZE
    pause = settings.AUDIT_PURGE_PAUSE if args.pause is None else args.pause
    print(run_header(args.database_url, f"batch size {batch_size}, pause {pause} s"), flush=True)
    org, now = seed(args.events, args.purge_events)
    connections.close_all()

    ctx = multiprocessing.get_context("spawn")
    go, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    probes = [
        ctx.Process(target=target, args=(args.database_url, org.pk, interval, go, stop, out))
        for target, interval in (
            (page_reader, args.read_interval),
            (recorder, args.record_interval),
        )
    ]
    for probe in probes:
        probe.start()
    for _ in probes:
        out.get(timeout=120)  # each has imported Django and connected
    go.set()
    time.sleep(1)  # a baseline second before the purge

    batch_ends = []
    started = time.monotonic()
    result = audit_log_purge(
        now=now,
        batch_size=batch_size,
        pause=pause,
        on_batch=lambda purge: batch_ends.append(time.monotonic()),
    )
    ended = time.monotonic()
    total = ended - started
    time.sleep(0.5)
    stop.set()
    results = dict(out.get(timeout=60) for _ in probes)
    for probe in probes:
        probe.join()

    starts = [started] + [t + pause for t in batch_ends[:-1]]
    batches = [end - start for start, end in zip(starts, batch_ends, strict=True)]
    print(
        f"purge: {result.events:,} events in {total:.2f} s ({result.events / total:,.0f} "
        f"events/s), {len(batches)} batches of {batch_size}, pause {pause} s  "
        f"(target: <= 10 s for 100,000)"
    )
    print(
        f"  longest batch transaction: {ms(max(batches))}, median {ms(statistics.median(batches))}"
    )
    for name, timings in results.items():
        before = [t for at, t in timings if at < started]
        during = [t for at, t in timings if started <= at < ended]
        target = "  (target: max <= 250 ms)" if name == "page read" else ""
        print(f"  {describe(name + ' during the purge', during)}{target}")
        print(f"  {describe(name + ' before it', before)}")
    remaining = Event.objects.filter(organization=org).count()
    print(f"  events left: {remaining:,} (of {args.events:,} plus the recordings and its own)")
    assert result.events == args.purge_events, result.events
    connections.close_all()


if __name__ == "__main__":
    main()
