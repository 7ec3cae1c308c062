"""django-q2 entry points: each loads by id (or nothing) and calls one service."""

from .services import export_file_build, export_files_purge_expired, exports_stalled_fail


def export_build(export_id: int) -> str:
    """Enqueued (on commit) by export_request_create; returns the final status."""
    return export_file_build(export_id=export_id).status


def export_files_purge() -> int:
    """Run hourly by the schedule the exports migrations create."""
    return export_files_purge_expired()


def exports_stalled() -> int:
    """Run hourly by the schedule the exports migrations create."""
    return exports_stalled_fail()
