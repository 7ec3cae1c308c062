import time

from django.core.management.base import BaseCommand

from audit.demo import (
    ADMIN_EMAIL,
    DEMO_ORGS,
    DEMO_PASSWORD,
    MEMBER_EMAIL,
    STAFF_EMAIL,
    ActivityGenerator,
    demo_orgs_create,
)
from audit.models import Event
from audit.services import event_record_batch
from orgs.models import Organization

CHUNK = 20_000


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
            help="do nothing when the database already has organizations",
        )

    def handle(self, *args, events: int, if_empty: bool, **options):
        if if_empty and Organization.objects.exists():
            self.stdout.write("Database already has data; not seeding the demo.")
            self._print_logins()
            return
        started = time.monotonic()
        orgs = demo_orgs_create()
        total = 0
        for org, demo in zip(orgs, DEMO_ORGS, strict=True):
            wanted = int(events * demo.share)
            if not wanted or Event.objects.filter(organization=org).exists():
                continue
            generator = ActivityGenerator(org, seed=org.pk)
            specs = generator.specs(wanted)
            while True:
                chunk = [spec for _, spec in zip(range(CHUNK), specs, strict=False)]
                if not chunk:
                    break
                total += event_record_batch(organization=org, specs=chunk).recorded
        self.stdout.write(f"Recorded {total:,} demo events in {time.monotonic() - started:.1f} s.")
        self._print_logins()

    def _print_logins(self):
        self.stdout.write(
            f"Org admin:   {ADMIN_EMAIL} / {DEMO_PASSWORD}  (Acme Corporation and Acme Labs)\n"
            f"Member:      {MEMBER_EMAIL} / {DEMO_PASSWORD}  (not an admin: sees 403)\n"
            f"Staff admin: {STAFF_EMAIL} / {DEMO_PASSWORD}  (Django admin at /admin/)"
        )
