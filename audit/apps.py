from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _grants_apply(sender, using, **kwargs) -> None:
    from django.db import connections

    from .guard import grants_apply

    grants_apply(connections[using])


class AuditConfig(AppConfig):
    name = "audit"

    def ready(self) -> None:
        # After every migrate, as the owner role: the application role gets what the
        # tables made since need (and never more on the guarded ones).
        post_migrate.connect(_grants_apply, sender=self, dispatch_uid="audit.grants_apply")
