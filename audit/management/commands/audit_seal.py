from django.core.management.base import BaseCommand, CommandError

from audit.integrity import SigningKeyMissing, seal_org
from orgs.models import Organization


class Command(BaseCommand):
    help = (
        "Seals every event recorded so far into signed blocks, at once (what the sealing "
        "worker does every few seconds)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--org", type=int, help="Only this organization (id).")

    def handle(self, *args, org=None, **options):
        orgs = Organization.objects.order_by("pk")
        if org is not None:
            orgs = orgs.filter(pk=org)
            if not orgs:
                raise CommandError(f"No organization {org}.")
        total = 0
        try:
            for organization in orgs:
                sealed = seal_org(organization.pk)
                total += sealed
                if sealed or options["verbosity"] > 1:
                    self.stdout.write(f"{organization.name} ({organization.pk}): sealed {sealed:,}")
        except SigningKeyMissing as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Sealed {total:,} events.")
