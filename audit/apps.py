from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _guard_refresh(sender, using, **kwargs) -> None:
    from django.db import connections

    from .guard import grants_apply, purge_functions_refresh

    purge_functions_refresh(connections[using])
    grants_apply(connections[using])


class AuditConfig(AppConfig):
    name = "audit"

    def ready(self) -> None:
        # After every migrate, as the owner role: the purge functions get today's
        # minimum retention, and the application role what the tables made since need
        # (and never more on the guarded ones).
        post_migrate.connect(_guard_refresh, sender=self, dispatch_uid="audit.guard_refresh")
