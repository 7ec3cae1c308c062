"""manage.py create_api_key --org <id> --name <name> [--days N]: a new API key for an
organization, for operators and provisioning scripts. The key alone goes to stdout
(`KEY=$(manage.py create_api_key ...)`), once; what it is goes to stderr. The audit
log names the actor "Command line" (a system actor): no account signed in."""

from django.core.management.base import BaseCommand, CommandError

from orgs.models import Organization
from orgs.services import API_KEY_DAYS_DEFAULT, ApiKeyRefused, api_key_create


class Command(BaseCommand):
    help = "Create an organization API key and print it (once: only its hash is kept)."

    def add_arguments(self, parser):
        parser.add_argument("--org", type=int, required=True, help="The organization's id.")
        parser.add_argument("--name", required=True, help="What uses the key.")
        parser.add_argument(
            "--days",
            type=int,
            default=API_KEY_DAYS_DEFAULT,
            help=f"Days until it expires, 1 to 365 (default {API_KEY_DAYS_DEFAULT}).",
        )

    def handle(self, *args, org: int, name: str, days: int, **options):
        organization = Organization.objects.select_related("plan").filter(pk=org).first()
        if organization is None:
            raise CommandError(f"No organization with id {org}.")
        try:
            key, secret = api_key_create(organization=organization, name=name, days=days, by=None)
        except ApiKeyRefused as exc:
            raise CommandError(str(exc)) from exc
        self.stderr.write(
            f"API key {key.label} for {organization.name}, expires {key.expires_at:%Y-%m-%d %H:%M} "
            "UTC. Keep it safe: it is shown only now."
        )
        self.stdout.write(secret)
