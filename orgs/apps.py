from django.apps import AppConfig


class OrgsConfig(AppConfig):
    name = "orgs"

    def ready(self) -> None:
        from . import signals  # noqa: F401  (connects the sign-in audit receivers)
