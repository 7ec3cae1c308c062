"""Django's `flush`, let through the append-only guard.

`flush` empties every table (Django's TransactionTestCase runs it after each test). The
database refuses DELETE and TRUNCATE on the audit events outside the retention job
(audit/retention.py), so this runs Django's command inside a transaction that the
guard lets through, exactly as the retention job's batches are let through."""

from django.core.management.commands import flush
from django.db import connections, transaction

from audit.retention import purge_allowed


class Command(flush.Command):
    help = flush.Command.help + " Audit events included (the append-only guard allows it)."

    def handle(self, **options):
        connection = connections[options["database"]]
        with transaction.atomic(using=connection.alias), purge_allowed(connection):
            super().handle(**options)
