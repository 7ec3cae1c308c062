"""Export benchmark: a 10,000-row export out of many events, with and without a filter.

Prints, for each filter: the worker's time to build the file (export_file_build, as the
django-q2 task runs it, email included), its peak memory (Python allocations traced by
tracemalloc in a separate run, and the growth of the process's peak RSS), and the time
from the Export click (a POST through the whole Django stack) to "ready" with a real
`manage.py qcluster` started with the shipped Q_CLUSTER settings.

    .venv/bin/python tests/benchmarks/bench_export.py                # 1,000,000 events, SQLite
    .venv/bin/python tests/benchmarks/bench_export.py --database-url \\
        postgres://auditlog@127.0.0.1:5432/bench_export              # PostgreSQL
    .venv/bin/python tests/benchmarks/bench_export.py --events 50000 # small, while iterating
    .venv/bin/python tests/benchmarks/bench_export.py --reuse        # keep the seeded database

Targets (issue 5): worker <= 1.5 s, memory growth <= 50 MB, click-to-ready <= 5 s, on
SQLite and PostgreSQL.

The database named by --database-url is deleted and recreated unless --reuse finds it
already seeded with at least --events events.
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from bench_record import database_reset, django_setup, run_header

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_URL = "sqlite:////tmp/bench_export.sqlite3"
SEED_CHUNK = 20_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL, help=f"default {DEFAULT_URL}")
    parser.add_argument("--events", type=int, default=1_000_000, help="events (1,000,000)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per case (3)")
    parser.add_argument("--clicks", type=int, default=3, help="timed clicks per case (3)")
    parser.add_argument("--reuse", action="store_true", help="reuse an already seeded database")
    parser.add_argument("--skip-click", action="store_true", help="do not start a qcluster")
    return parser.parse_args()


def seed(url: str, events: int, reuse: bool):
    """Acme Corporation with `events` demo events over 180 days; returns (org, admin)."""
    from django.core.management import call_command
    from django.db import connection

    from audit.demo import ADMIN_EMAIL, ActivityGenerator, demo_orgs_create
    from audit.models import Event, EventTerm
    from audit.services import activity_cache_clear, event_record_batch
    from orgs.models import Organization, User

    if reuse:
        try:
            org = Organization.objects.get(name="Acme Corporation")
            if Event.objects.filter(organization=org).count() >= events:
                print(f"reusing the seeded database ({events:,}+ events)")
                return org, User.objects.get(email=ADMIN_EMAIL)
        except Exception:  # noqa: BLE001 - not there yet: seed it
            pass
    database_reset(url)
    call_command("migrate", verbosity=0)
    activity_cache_clear()
    org = demo_orgs_create()[0]
    started = time.perf_counter()
    specs = ActivityGenerator(org, seed=5).specs(events, days=180)
    while True:
        chunk = [spec for _, spec in zip(range(SEED_CHUNK), specs, strict=False)]
        if not chunk:
            break
        event_record_batch(organization=org, specs=chunk)
    print(f"seeded {events:,} events in {time.perf_counter() - started:.0f} s (untimed)")
    if connection.vendor == "postgresql":
        # What autovacuum does soon after a bulk load; without statistics the planner
        # may pick a nested loop for the search (seen: 30 s instead of 0.1 s).
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {Event._meta.db_table}")
            cursor.execute(f"ANALYZE {EventTerm._meta.db_table}")
    return org, User.objects.get(email=ADMIN_EMAIL)


def cases(org, admin) -> list[tuple[str, dict]]:
    """(label, page query) pairs: no filter over the whole retention, and two filters."""
    from audit.models import Event

    busiest_user = (
        Event.objects.filter(organization=org, action__key="page_viewed")
        .values_list("actor_email", flat=True)
        .first()
    )
    return [
        ("no filter (180 days)", {"range": "180d"}),
        ("activity: Viewed page (180 days)", {"range": "180d", "action": ["page_viewed"]}),
        ("search: one user's email (180 days)", {"range": "180d", "q": busiest_user}),
    ]


def export_make(org, admin, query: dict):
    from exports.models import ExportRequest
    from exports.services import export_filter

    event_filter = export_filter(organization=org, user=admin, filters=query)
    assert event_filter.is_valid(), event_filter.errors
    return ExportRequest.objects.create(
        organization=org,
        requested_by=admin,
        filters=event_filter.params(),
        filters_summary=event_filter.summary(),
    )


def export_timed(org, admin, query: dict):
    """An export of `query` built as the worker builds it (export_file_build): the
    seconds it took and the finished export."""
    from exports.services import export_file_build

    export = export_make(org, admin, query)
    started = time.perf_counter()
    export = export_file_build(export_id=export.pk)
    return time.perf_counter() - started, export


def peak_rss_reset() -> bool:
    """Resets the kernel's peak-RSS mark (VmHWM) for this process, where Linux allows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_worker(org, admin, label: str, query: dict, runs: int) -> None:
    from exports.services import export_file_build

    export_file_build(export_id=export_make(org, admin, query).pk)  # warm up caches
    timings, rows = [], 0
    rss_growth = []
    for _ in range(runs):
        export = export_make(org, admin, query)
        can_reset = peak_rss_reset()
        before = rss_mb("VmRSS")
        started = time.perf_counter()
        export = export_file_build(export_id=export.pk)
        timings.append(time.perf_counter() - started)
        if can_reset:
            rss_growth.append(rss_mb("VmHWM") - before)
        assert export.status == "ready", export.error
        rows = export.row_count
    export = export_make(org, admin, query)
    tracemalloc.start()
    export_file_build(export_id=export.pk)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    growth = f"{max(rss_growth):.1f} MB" if rss_growth else "n/a"
    print(
        f"  worker, {label}: {rows:,} rows, median {statistics.median(timings):.2f} s "
        f"(max {max(timings):.2f} s); peak Python allocations {peak / 2**20:.1f} MB, "
        f"peak RSS growth {growth}  (targets: <= 1.5 s, <= 50 MB)",
        flush=True,
    )


def worker_start(url: str, storage: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "PRIVATE_STORAGE_DIR": storage,
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        "LOG_LEVEL": "WARNING",
    }
    for name in ("Q_SYNC", "Q_POLL", "Q_WORKERS", "Q_TIMEOUT", "Q_RETRY"):
        env.pop(name, None)  # the shipped worker settings
    return subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def worker_stop(worker: subprocess.Popen) -> None:
    worker.send_signal(signal.SIGTERM)  # the main PID only: qcluster hangs otherwise
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()


def click(client, org, query: dict) -> float:
    """Seconds from the Export POST to the export being ready."""
    from django.urls import reverse

    from exports.models import ExportRequest

    last = ExportRequest.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    started = time.perf_counter()
    response = client.post(reverse("exports:export-create", args=[org.pk]), query)
    assert response.status_code == 302, response.status_code
    export = ExportRequest.objects.filter(pk__gt=last).get()
    while export.status not in ("ready", "failed"):
        if time.perf_counter() - started > 120:
            raise RuntimeError("the worker did not finish the export within 120 s")
        time.sleep(0.02)
        export.refresh_from_db(fields=["status"])
    assert export.status == "ready"
    return time.perf_counter() - started


def bench_click(url, org, admin, all_cases, clicks: int, storage: str) -> None:
    from django.conf import settings
    from django.test import Client

    from exports.services import export_filter

    worker = worker_start(url, storage)
    try:
        client = Client()
        client.force_login(admin)
        for label, query in all_cases:
            params = export_filter(organization=org, user=admin, filters=query).params()
            click(client, org, params)  # warm-up; the first also waits for the worker to start
            timings = sorted(click(client, org, params) for _ in range(clicks))
            print(
                f"  click-to-ready, {label}: median {statistics.median(timings):.2f} s "
                f"(max {timings[-1]:.2f} s) with workers={settings.Q_CLUSTER['workers']}, "
                f"poll={settings.Q_CLUSTER['poll']} s  (target: <= 5 s)",
                flush=True,
            )
    finally:
        worker_stop(worker)


def main() -> None:
    args = parse_args()
    storage = tempfile.mkdtemp(prefix="bench_export_")
    os.environ["PRIVATE_STORAGE_DIR"] = storage
    os.environ["EMAIL_BACKEND"] = "django.core.mail.backends.locmem.EmailBackend"
    os.environ.pop("Q_SYNC", None)
    django_setup(args.database_url)
    from django.db import connections

    print(run_header(args.database_url), flush=True)
    org, admin = seed(args.database_url, args.events, args.reuse)
    all_cases = cases(org, admin)
    for label, query in all_cases:
        bench_worker(org, admin, label, query, args.runs)
    if not args.skip_click:
        bench_click(args.database_url, org, admin, all_cases, args.clicks, storage)
    connections.close_all()


if __name__ == "__main__":
    main()
