"""Django's `flush`, refused outside the test suite.

`flush` empties every table. The audit log is append-only, so outside tests this
command refuses before touching anything. Under pytest (Django's TransactionTestCase
runs flush after each test) it runs Django's command inside the append-only guard,
which on PostgreSQL opens only for the tables' owner (audit/guard.py)."""

from django.conf import settings
from django.core.management.base import CommandError
from django.core.management.commands import flush
from django.db import connections, transaction

from audit.guard import purge_allowed


class Command(flush.Command):
    help = "Refused: the audit log is append-only (the test suite alone may flush)."

    def handle(self, **options):
        if not settings.TESTING:
            raise CommandError(
                "flush would erase the audit log, which is append-only: refused. "
                "Events leave only through the retention job (purge_audit_log)."
            )
        connection = connections[options["database"]]
        with transaction.atomic(using=connection.alias), purge_allowed(connection):
            super().handle(**options)
