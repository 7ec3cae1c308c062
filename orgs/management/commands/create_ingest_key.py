"""manage.py create_ingest_key --product <id> --name <name>: a new ingest key for a
product, for operators and provisioning scripts. The key alone goes to stdout
(`KEY=$(manage.py create_ingest_key ...)`), once; what it is goes to stderr. The audit
log names the actor "Command line" (a system actor): no account signed in."""

from django.core.management.base import BaseCommand, CommandError

from orgs.models import Product
from orgs.services import IngestKeyRefused, ingest_key_create


class Command(BaseCommand):
    help = "Create a product's ingest key and print it (once: only its hash is kept)."

    def add_arguments(self, parser):
        parser.add_argument("--product", type=int, required=True, help="The product's id.")
        parser.add_argument("--name", required=True, help="What uses the key.")

    def handle(self, *args, product: int, name: str, **options):
        found = Product.objects.select_related("site__organization__plan").filter(pk=product)
        if (target := found.first()) is None:
            raise CommandError(f"No product with id {product}.")
        try:
            key, secret = ingest_key_create(product=target, name=name, by=None)
        except IngestKeyRefused as exc:
            raise CommandError(str(exc)) from exc
        self.stderr.write(
            f"Ingest key {key.label} for {target} ({target.site.organization.name}). "
            "Keep it safe: it is shown only now."
        )
        self.stdout.write(secret)
