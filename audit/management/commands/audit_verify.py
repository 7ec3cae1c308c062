from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError

from audit.integrity import verify_and_record
from orgs.models import Organization


def _date(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"--since: {value!r} is not a date (YYYY-MM-DD).") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = (
        "Verifies the sealed audit log: every block's hash, signature and link from the "
        "first, and the events of each block against it. Exit status 1 names the first "
        "bad block and event."
    )

    def add_arguments(self, parser):
        parser.add_argument("--org", type=int, help="Only this organization (id).")
        parser.add_argument(
            "--since",
            type=_date,
            help="Check events only of blocks sealed since this date (the chain is always "
            "checked from the first block).",
        )

    def handle(self, *args, org=None, since=None, **options):
        orgs = Organization.objects.order_by("pk")
        if org is not None:
            orgs = orgs.filter(pk=org)
            if not orgs:
                raise CommandError(f"No organization {org}.")
        failed = False
        for organization in orgs:
            outcome, _check = verify_and_record(organization, since=since)
            name = f"{organization.name} ({organization.pk})"
            if not outcome.ok:
                failed = True
                event = f", event {outcome.event}" if outcome.event else ""
                self.stderr.write(
                    f"{name}: FAILED at block {outcome.block}{event}: {outcome.problem}"
                )
                continue
            until = f"{outcome.sealed_until:%Y-%m-%d %H:%M:%S} UTC" if outcome.sealed_until else "-"
            line = (
                f"{name}: OK, {outcome.events:,} events in {outcome.blocks:,} blocks up to {until}"
            )
            if outcome.retention_note:
                line += f". {outcome.retention_note}"
            self.stdout.write(line)
        if failed:
            raise SystemExit(1)
