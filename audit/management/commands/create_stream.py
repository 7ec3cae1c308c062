"""manage.py create_stream --org <id> --name <name> --url <url> [--authorization <value>]
[--category <key>]... [--product <kind>]...: a new stream for an organization, for
operators and provisioning scripts. The signing secret alone goes to stdout, once;
what was made goes to stderr. The audit log names the actor "Command line"."""

from django.core.management.base import BaseCommand, CommandError

from orgs.models import Organization

from ...streams import Author, StreamRefused, stream_create


class Command(BaseCommand):
    help = "Create a stream (events POSTed to a URL) and print its signing secret, once."

    def add_arguments(self, parser):
        parser.add_argument("--org", type=int, required=True, help="The organization's id.")
        parser.add_argument("--name", required=True)
        parser.add_argument("--url", required=True, help="Where the events are POSTed.")
        parser.add_argument("--authorization", default="", help="Sent as the Authorization header.")
        parser.add_argument("--category", action="append", default=[], help="Only this category.")
        parser.add_argument(
            "--product", action="append", default=[], help="Only this product kind."
        )

    def handle(self, *args, org, name, url, authorization, category, product, **options):
        organization = Organization.objects.select_related("plan").filter(pk=org).first()
        if organization is None:
            raise CommandError(f"No organization with id {org}.")
        try:
            stream, secret = stream_create(
                organization=organization,
                name=name,
                url=url,
                authorization=authorization,
                categories=category,
                product_kinds=product,
                by=Author(),
            )
        except StreamRefused as exc:
            raise CommandError(str(exc)) from exc
        self.stderr.write(
            f"Stream {stream.name} (id {stream.pk}) for {organization.name} sends to {stream.url}. "
            "Its signing secret is shown only now:"
        )
        self.stdout.write(secret)
