"""Integrity benchmark: sealing throughput, seal lag after a burst with the shipped
sealing loop, a full verification and inclusion proofs, at 1,000,000 events of one
organization, on a throwaway SQLite file or PostgreSQL database.

    .venv/bin/python tests/benchmarks/bench_integrity.py                    # SQLite
    .venv/bin/python tests/benchmarks/bench_integrity.py --database-url \\
        postgres://auditlog@127.0.0.1:5432/bench_integrity                  # PostgreSQL
    .venv/bin/python tests/benchmarks/bench_integrity.py --events 50000     # while iterating

Verification is split between AUDIT_VERIFY_PROCESSES processes (the cores, at most 4);
--verify-processes 1 2 times one process, then two.

Targets (issue 15): sealing >= 50,000 events/s; seal lag p95 <= 10 s after a burst of
20,000 events; full verify of 1M <= 20 s; one inclusion proof <= 20 ms. Recording
throughput with hashing (within 10% of before) is bench_record.py's, run on the commits
before and after.

The database named by --database-url is deleted and recreated.
"""

import argparse
import base64
import os
import random
import statistics
import subprocess
import sys
import time
from bisect import bisect_left
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_record import ROOT, database_fresh, django_setup, ms, run_header  # noqa: E402

DEFAULT_URL = "sqlite:////tmp/bench_integrity.sqlite3"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL, help=f"default {DEFAULT_URL}")
    parser.add_argument("--events", type=int, default=1_000_000, help="events (1,000,000)")
    parser.add_argument("--burst", type=int, default=20_000, help="burst for the lag (20,000)")
    parser.add_argument("--proofs", type=int, default=200, help="inclusion proofs timed (200)")
    parser.add_argument(
        "--verify-processes",
        type=int,
        nargs="+",
        default=None,
        help="verify with these numbers of processes in turn (AUDIT_VERIFY_PROCESSES)",
    )
    return parser.parse_args()


def fill(org, events: int) -> None:
    from audit.demo import ActivityGenerator
    from audit.services import event_record_batch

    generator = ActivityGenerator(org, seed=3)
    started, done = time.perf_counter(), 0
    while done < events:
        n = min(20_000, events - done)
        event_record_batch(organization=org, specs=list(generator.specs(n, days=170)))
        done += n
    took = time.perf_counter() - started
    print(f"recorded {events:,} events in {took:.1f} s ({events / took:,.0f}/s, with hashing)")
    from django.db import connection

    if connection.vendor == "postgresql":
        # A bulk load, then VACUUM (ANALYZE), as the deploy guide says: planned on the empty
        # months' statistics, each sealing read of a month-partitioned table would sort
        # every event of the organization (autovacuum catches up within minutes).
        with connection.cursor() as cursor:
            cursor.execute("VACUUM (ANALYZE)")


def bench_seal(org) -> None:
    from audit.integrity import seal_org
    from audit.models import Block

    started, cpu = time.perf_counter(), cpu_seconds()
    sealed = seal_org(org.pk)
    took, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    blocks = Block.objects.filter(organization=org).count()
    print(
        f"seal: {sealed:,} events into {blocks:,} blocks in {took:.1f} s = "
        f"{sealed / took:,.0f} events/s; CPU {cpu:.1f} s  (target >= 50,000/s)"
    )


def bench_verify(org, processes: int) -> None:
    from audit.integrity import verify_org

    started, cpu = time.perf_counter(), cpu_seconds()
    outcome = verify_org(org, processes=processes)
    took, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    assert outcome.ok, outcome.problem
    print(
        f"verify ({processes} process{'es' if processes > 1 else ''}): "
        f"{outcome.events_checked:,} events in {outcome.blocks:,} blocks in {took:.1f} s = "
        f"{outcome.events_checked / took:,.0f} events/s, {outcome.blocks_reread} blocks "
        f"re-read exactly; CPU {cpu:.1f} s  (target: 1M <= 20 s)"
    )


def cpu_seconds() -> float:
    """CPU time of this process and its waited-for children (the verify's workers; not
    the database server's): on a loaded machine wall time is this stretched."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def bench_proofs(org, count: int) -> None:
    from audit.integrity import event_proof
    from audit.models import Event

    ids = list(Event.objects.filter(organization=org).values_list("id", flat=True))
    picks = random.Random(7).sample(ids, min(count, len(ids)))
    timings = []
    for event_id in picks:
        event = Event(pk=event_id, organization_id=org.pk)
        event.txid = Event.objects.filter(pk=event_id).values_list("txid", flat=True)[0]
        started = time.perf_counter()
        proof, why = event_proof(org, event)
        timings.append(time.perf_counter() - started)
        assert proof is not None, why
    timings.sort()
    print(
        f"inclusion proof x{len(timings)}: median {ms(statistics.median(timings))}, "
        f"p95 {ms(timings[int(len(timings) * 0.95) - 1])}, max {ms(timings[-1])}  "
        "(target <= 20 ms)"
    )


def bench_lag(org, url: str, burst: int) -> None:
    """The shipped sealing loop (audit.tasks.audit_log_seal_loop, every
    AUDIT_SEAL_INTERVAL seconds) in a process of its own, as a worker runs it, while
    this one records a burst; the lag of an event is its block's sealed_at minus its
    recorded_at."""
    from django.conf import settings

    from audit.demo import ActivityGenerator
    from audit.models import Block, Event
    from audit.services import event_record_batch

    code = (
        "import django; django.setup(); "
        "from audit.tasks import audit_log_seal_loop; audit_log_seal_loop()"
    )
    env = dict(os.environ, DATABASE_URL=url, Q_SYNC="false", LOG_LEVEL="WARNING")
    loop = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)
    try:
        time.sleep(3)  # the loop's first rounds: nothing new to seal
        last = Event.objects.filter(organization=org).order_by("-id").values_list("id")[0][0]
        specs = list(ActivityGenerator(org, seed=9).specs(burst, days=1))
        started = time.perf_counter()
        event_record_batch(organization=org, specs=specs)
        recorded = time.perf_counter() - started
        events = list(
            Event.objects.filter(organization=org, id__gt=last).values_list(
                "id", "txid", "recorded_at"
            )
        )
        deadline = time.monotonic() + 120
        while True:
            top = Block.objects.filter(organization=org).order_by("-sequence").first()
            if top.total_events >= Event.objects.filter(organization=org).count():
                break
            assert time.monotonic() < deadline, "the loop did not seal the burst in 2 minutes"
            time.sleep(0.2)
    finally:
        loop.terminate()
        loop.wait()
    blocks = list(
        Block.objects.filter(organization=org)
        .order_by("sequence")
        .values_list("last_txid", "last_event_id", "sealed_at")
    )
    lasts = [(txid or 0, event_id) for txid, event_id, _ in blocks]
    lags = sorted(
        (blocks[bisect_left(lasts, (txid or 0, event_id))][2] - recorded_at).total_seconds()
        for event_id, txid, recorded_at in events
    )
    print(
        f"seal lag after a burst of {burst:,} (recorded in {recorded:.1f} s, loop every "
        f"{settings.AUDIT_SEAL_INTERVAL:g} s): median {statistics.median(lags):.1f} s, "
        f"p95 {lags[int(len(lags) * 0.95) - 1]:.1f} s, max {lags[-1]:.1f} s  "
        "(target p95 <= 10 s)"
    )


def main() -> None:
    args = parse_args()
    os.environ.setdefault("AUDIT_SIGNING_KEY", base64.b64encode(os.urandom(32)).decode())
    django_setup(args.database_url)
    org = database_fresh(args.database_url)
    print(run_header(args.database_url, f"events: {args.events:,}"))
    fill(org, args.events)
    bench_seal(org)
    from django.conf import settings

    for processes in args.verify_processes or [settings.AUDIT_VERIFY_PROCESSES]:
        bench_verify(org, processes)
    bench_proofs(org, args.proofs)
    bench_lag(org, args.database_url, args.burst)


if __name__ == "__main__":
    main()
