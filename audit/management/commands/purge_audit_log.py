from django.core.management.base import BaseCommand

from audit.retention import OrgPurge, audit_log_purge
from audit.tasks import retention_schedule_ensure


class Command(BaseCommand):
    help = (
        "Remove events older than each organization's plan retention, with their search "
        "terms, and expired export files: what the daily job does."
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

    def handle(self, *args, dry_run: bool, schedule: bool, **options):
        if schedule:
            job = retention_schedule_ensure()
            self.stdout.write(f"Schedule {job.name!r}: next run {job.next_run:%Y-%m-%d %H:%M} UTC")
            return
        verbose = options["verbosity"] > 1
        result = audit_log_purge(dry_run=dry_run, on_batch=self._progress if verbose else None)
        verb = "Would remove" if dry_run else "Removed"
        for purge in result.orgs:
            if purge.events or verbose:
                note = f" (not recorded: {purge.record_refusal})" if purge.record_refusal else ""
                self.stdout.write(
                    f"{purge.organization}: {verb.lower()} {purge.events:,} events older than "
                    f"{purge.cutoff:%Y-%m-%d %H:%M} UTC "
                    f"({purge.organization.plan.retention_days} days){note}"
                )
        self.stdout.write(f"{verb} {result.events:,} events in {len(result.orgs)} organizations.")
        if dry_run:
            self.stdout.write(
                "Dry run: nothing was changed; expired export files were not looked at."
            )
        elif result.export_files is None:
            self.stdout.write("Expired export files: not handled (exports app has no cleanup).")
        else:
            self.stdout.write(f"Deleted {result.export_files:,} expired export files.")

    def _progress(self, purge: OrgPurge) -> None:
        self.stdout.write(f"  {purge.organization}: {purge.events:,} so far")
