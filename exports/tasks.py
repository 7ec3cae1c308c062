"""django-q2 entry points: each loads by id (or nothing) and calls services."""

from .services import (
    export_emails_retry,
    export_file_build,
    export_files_purge_expired,
    exports_abandoned_requeue,
    exports_lost_requeue,
    exports_stalled_fail,
)


def export_build(export_id: int) -> str:
    """Enqueued (on commit) by export_request_create; returns the final status."""
    return export_file_build(export_id=export_id).status


def export_files_purge() -> int:
    """Run hourly by the schedule the exports migrations create."""
    return export_files_purge_expired()


def exports_stalled() -> dict[str, int]:
    """Run every 5 minutes by the schedule the exports migrations create: re-enqueue
    lost tasks and (on Redis) the builds of dead workers, fail exports whose worker died
    on every try, retry unsent emails."""
    return {
        "requeued": exports_lost_requeue(),
        "rebuilt": exports_abandoned_requeue(),
        "failed": exports_stalled_fail(),
        "emails": export_emails_retry(),
    }
