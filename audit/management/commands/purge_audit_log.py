from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from audit.retention import OrgPurge, audit_log_purge
from audit.tasks import retention_schedule_ensure
from orgs.models import Organization


class Command(BaseCommand):
    help = (
        "Remove events older than each organization's plan retention, with their search "
        "terms and hourly counts: what the daily job does."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="print what would be removed; change nothing"
        )
        parser.add_argument(
            "--schedule",
            action="store_true",
            help="only create the daily schedule if it is missing (the migration creates it)",
        )
        parser.add_argument("--org", type=int, help="only this organization (its id)")
        parser.add_argument(
            "--allow-large",
            action="store_true",
            help="with --org: remove the expired events even if they are more than "
            "AUDIT_PURGE_MAX_SHARE of its log (release a held purge)",
        )

    def handle(self, *args, dry_run: bool, schedule: bool, org, allow_large: bool, **options):
        if schedule:
            job = retention_schedule_ensure()
            self.stdout.write(f"Schedule {job.name!r}: next run {job.next_run:%Y-%m-%d %H:%M} UTC")
            return
        if allow_large and org is None:
            raise CommandError(
                "--allow-large releases one organization's purge: name it with --org"
            )
        organizations = None
        if org is not None:
            organizations = list(Organization.objects.filter(pk=org).select_related("plan"))
            if not organizations:
                raise CommandError(f"No organization with id {org}")
        verbose = options["verbosity"] > 1
        result = audit_log_purge(
            dry_run=dry_run,
            organizations=organizations,
            on_batch=self._progress if verbose else None,
            max_share=1.0 if allow_large else None,
        )
        verb = "Would remove" if dry_run else "Removed"
        for purge in result.orgs:
            if purge.held:
                self.stdout.write(
                    f"{purge.organization}: held: {purge.held:,} expired events are more than "
                    f"{settings.AUDIT_PURGE_MAX_SHARE:.0%} of the log; nothing removed "
                    f"(release with --org {purge.organization.pk} --allow-large)"
                )
                continue
            if purge.events or verbose:
                note = f" (not recorded: {purge.record_refusal})" if purge.record_refusal else ""
                self.stdout.write(
                    f"{purge.organization}: {verb.lower()} {purge.events:,} events older than "
                    f"{purge.cutoff:%Y-%m-%d %H:%M} UTC "
                    f"({purge.organization.plan.retention_days} days){note}"
                )
        self.stdout.write(f"{verb} {result.events:,} events in {len(result.orgs)} organizations.")
        if dry_run:
            self.stdout.write("Dry run: nothing was changed.")

    def _progress(self, purge: OrgPurge) -> None:
        self.stdout.write(f"  {purge.organization}: {purge.events:,} so far")
