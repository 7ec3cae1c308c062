import gc
import os
import time
from contextlib import contextmanager
from pathlib import Path

from django.core.management.base import BaseCommand
from django.db import connection

from audit.demo import (
    ADMIN_EMAIL,
    DEMO_ORGS,
    DEMO_PASSWORD,
    MEMBER_EMAIL,
    STAFF_EMAIL,
    demo_orgs_create,
    demo_stream_create,
)
from audit.demo_load import Task, customers_create, now_rounded, pg_bulk_load, tasks_for, tasks_run
from audit.models import Event
from audit.simulator import keys_path_default, simulator_keys_ensure
from orgs.models import Organization

# With --orgs, the other demo organizations (Acme Labs, Globex) keep their shares of at
# most this many events.
DEMO_OTHERS_MAX = 100_000


@contextmanager
def bulk_load(analyze: bool = True):
    """Bulk-load measures for the duration of the seed only, on this command's own
    connection (and process):

    - SQLite `PRAGMA synchronous=OFF`: commits and checkpoints do not wait for the
      disk. A power cut during the seed can corrupt the demo database, which is
      then seeded again; the setting returns to NORMAL (settings.py) afterwards and
      no other connection ever sees it. (SQLite refuses the change inside a
      transaction, e.g. a test's: then the seed runs with the usual setting.)
    - The garbage collector is paused: the seed makes millions of short-lived
      objects and no reference cycles, and each full collection would walk them all.
    """
    sqlite = connection.vendor == "sqlite" and not connection.in_atomic_block
    if sqlite:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA synchronous=OFF")
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        if sqlite:
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA synchronous=NORMAL")
    if connection.vendor == "postgresql" and analyze:
        # Planner statistics for the freshly loaded tables, rather than waiting for
        # autovacuum: without them PostgreSQL expects a handful of rows and plans
        # the event list as a bitmap scan and a sort instead of an index walk. And
        # VACUUM, which marks the pages all-visible: until then a search cannot answer
        # from the index alone and reads the table (the first 180-day search took
        # 500 ms at 10M events). VACUUM cannot run inside a transaction (a test's).
        tables = "audit_event, audit_eventterm, audit_eventhourlycount, audit_eventhourlytotal"
        with connection.cursor() as cursor:
            if connection.in_atomic_block:
                cursor.execute(f"ANALYZE {tables}")
            else:
                cursor.execute(f"VACUUM (ANALYZE) {tables}")


class Command(BaseCommand):
    help = "Create demo organizations, accounts and activity. Safe to run again."

    def add_arguments(self, parser):
        parser.add_argument(
            "--events",
            type=int,
            default=20_000,
            help="activities to spread over the last 180 days (default 20,000); with "
            "--orgs, Acme Corporation's, and as many again across the other organizations",
        )
        parser.add_argument(
            "--orgs",
            type=int,
            default=0,
            help="also make this many customer organizations (Customer 0001 ...), which "
            "share --events more events",
        )
        parser.add_argument(
            "--jobs",
            type=int,
            default=os.cpu_count() or 1,
            help="PostgreSQL: worker processes recording at once (default: the cores)",
        )
        parser.add_argument(
            "--if-empty",
            action="store_true",
            help="do nothing when the database already has organizations "
            "(but give the product simulator its keys)",
        )
        parser.add_argument(
            "--simulator-keys",
            type=Path,
            help="where the product simulator's ingest keys are written "
            "(var/demo-ingest-keys.json)",
        )

    def handle(
        self,
        *args,
        events: int,
        orgs: int,
        jobs: int,
        if_empty: bool,
        simulator_keys: Path | None,
        **options,
    ):
        keys_path = simulator_keys or keys_path_default()
        if if_empty and Organization.objects.exists():
            self.stdout.write("Database already has data; not seeding the demo.")
            self._simulator_keys(keys_path)
            self._print_logins()
            return
        started = time.monotonic()
        demo_orgs = demo_orgs_create()
        customers = customers_create(orgs) if orgs else []
        if customers:
            self.stdout.write(f"{len(customers):,} customer organizations ready.")
        tasks = self._tasks(demo_orgs, customers, events, now_rounded())
        wanted = sum(task.count for task in tasks)
        loading = time.monotonic()
        step = max(wanted // 20, 1)
        shown = [0]

        def progress(total: int) -> None:
            if total - shown[0] >= step:
                shown[0] = total
                rate = total / max(time.monotonic() - loading, 1e-9)
                self.stdout.write(f"  {total:,} / {wanted:,} events ({rate:,.0f}/s)")

        with pg_bulk_load(self.stdout.write, jobs) as bulk, bulk_load(analyze=False):
            if bulk:
                self.stdout.write("Bulk load: indexes and autovacuum off until the end.")
            total = tasks_run(tasks, jobs, progress)
            self.stdout.write(
                f"  {total:,} events recorded in {time.monotonic() - loading:.1f} s "
                f"({total / max(time.monotonic() - loading, 1e-9):,.0f}/s, {jobs} jobs)"
            )
        if not bulk:
            with bulk_load():  # planner statistics (and VACUUM) after the load
                pass
        self.stdout.write(f"Recorded {total:,} demo events in {time.monotonic() - started:.1f} s.")
        labs = next(o for o, d in zip(demo_orgs, DEMO_ORGS, strict=True) if d.name == "Acme Labs")
        self.stdout.write(demo_stream_create(labs))
        self._simulator_keys(keys_path)
        self._print_logins()

    @staticmethod
    def _tasks(demo_orgs, customers, events: int, now) -> list[Task]:
        """Acme Corporation's events and the others', in tasks; none for an organization
        that has events already (a second run adds nothing). Seeded by the place of the
        organization, not its id (which differs from one database to the next): the
        same demo activity everywhere."""
        tasks: list[Task] = []
        for position, (org, demo) in enumerate(zip(demo_orgs, DEMO_ORGS, strict=True)):
            if customers and demo.name != "Acme Corporation":
                wanted = int(min(events, DEMO_OTHERS_MAX) * demo.share)
            else:
                wanted = events if customers else int(events * demo.share)
            if wanted and not Event.objects.filter(organization=org).exists():
                tasks += tasks_for(org, wanted, position + 1, now)
        for n, org in enumerate(customers):
            wanted = events // len(customers) + (1 if n < events % len(customers) else 0)
            if wanted and not Event.objects.filter(organization=org).exists():
                tasks += tasks_for(org, wanted, 1000 + n, now)
        # The biggest first, so that no worker is left with a long one at the end.
        return sorted(tasks, key=lambda task: -task.count)

    def _simulator_keys(self, path: Path) -> None:
        keys = simulator_keys_ensure(path)
        if keys:
            self.stdout.write(f"Product simulator: {len(keys)} ingest keys in {path}")

    def _print_logins(self):
        self.stdout.write(
            f"Org admin:   {ADMIN_EMAIL} / {DEMO_PASSWORD}  (Acme Corporation and Acme Labs)\n"
            f"Member:      {MEMBER_EMAIL} / {DEMO_PASSWORD}  (not an admin: sees 403)\n"
            f"Staff admin: {STAFF_EMAIL} / {DEMO_PASSWORD}  (Django admin at /staff/)"
        )
