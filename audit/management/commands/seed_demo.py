import gc
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
    ActivityGenerator,
    demo_orgs_create,
    demo_stream_create,
)
from audit.models import Event
from audit.recording import record_specs
from audit.simulator import keys_path_default, simulator_keys_ensure
from orgs.models import Organization

# Events per transaction while seeding: larger than AUDIT_RECORD_BATCH_SIZE, since
# nothing else is writing a demo database while it is seeded.
CHUNK = 50_000


@contextmanager
def bulk_load():
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
    if connection.vendor == "postgresql":
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
            help="activities to spread over the last 180 days (default 20,000)",
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

    def handle(self, *args, events: int, if_empty: bool, simulator_keys: Path | None, **options):
        keys_path = simulator_keys or keys_path_default()
        if if_empty and Organization.objects.exists():
            self.stdout.write("Database already has data; not seeding the demo.")
            self._simulator_keys(keys_path)
            self._print_logins()
            return
        started = time.monotonic()
        orgs = demo_orgs_create()
        total = 0
        with bulk_load():
            for position, (org, demo) in enumerate(zip(orgs, DEMO_ORGS, strict=True)):
                wanted = int(events * demo.share)
                if not wanted or Event.objects.filter(organization=org).exists():
                    continue
                # Seeded by the org's place in DEMO_ORGS, not its id (which differs
                # from one database to the next): the same demo activity everywhere.
                generator = ActivityGenerator(org, seed=position + 1)
                specs = generator.specs(wanted)
                while True:
                    chunk = [spec for _, spec in zip(range(CHUNK), specs, strict=False)]
                    if not chunk:
                        break
                    # The same recording path as event_record_batch, one transaction
                    # per chunk.
                    total += len(record_specs(org, chunk, CHUNK)[0])
        self.stdout.write(f"Recorded {total:,} demo events in {time.monotonic() - started:.1f} s.")
        labs = next(o for o, d in zip(orgs, DEMO_ORGS, strict=True) if d.name == "Acme Labs")
        self.stdout.write(demo_stream_create(labs))
        self._simulator_keys(keys_path)
        self._print_logins()

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
