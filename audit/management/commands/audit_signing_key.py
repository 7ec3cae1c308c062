from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from audit.integrity import public_keys, signing_key_create


class Command(BaseCommand):
    help = (
        "Prints the audit log's public signing keys; --create writes a new private key "
        "to AUDIT_SIGNING_KEY_FILE (or --path) unless one is there."
    )

    def add_arguments(self, parser):
        parser.add_argument("--create", action="store_true", help="Write a key if none exists.")
        parser.add_argument("--path", help="Where to write it (default AUDIT_SIGNING_KEY_FILE).")

    def handle(self, *args, create=False, path=None, **options):
        if create:
            target = Path(path or settings.AUDIT_SIGNING_KEY_FILE or "")
            if not str(target) or str(target) == ".":
                raise CommandError("Set AUDIT_SIGNING_KEY_FILE or pass --path.")
            if target.exists():
                self.stdout.write(f"Signing key: {target} (kept)")
                return
            public = signing_key_create(target)
            self.stdout.write(f"Signing key written to {target}; public key {public}")
            return
        for key in public_keys():
            self.stdout.write(f"{key['keyId']} {key['status']:8} {key['publicKey']}")
