"""django-q2 entry points of the audit app."""

import time
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

SCHEDULE_NAME = "audit-log-retention-daily"
SCHEDULE_FUNC = "audit.tasks.audit_log_purge_daily"
SCHEDULE_HOUR_UTC = 2  # a quiet hour for most organizations; staff may move it in the admin
_SCHEDULE_LOCK = 0x6175_6469_7400  # PostgreSQL advisory lock key ("audit")


def audit_log_purge_daily() -> dict:
    """The daily retention job (see audit.retention.audit_log_purge). It stops before
    the worker's timeout would kill it and queues itself to carry on: every batch it
    finished is committed and counted in the organization's audit_log_purged event."""
    from django_q.tasks import async_task

    from .retention import audit_log_purge

    budget = settings.Q_CLUSTER.get("timeout", 300) * 0.8
    result = audit_log_purge(deadline=time.monotonic() + budget)
    if not result.complete:
        async_task(SCHEDULE_FUNC, task_name="audit-log-retention-continued")
    return result.summary()


def next_run_after(now: datetime) -> datetime:
    now = now.astimezone(UTC)
    run = now.replace(hour=SCHEDULE_HOUR_UTC, minute=0, second=0, microsecond=0)
    return run if run > now else run + timedelta(days=1)


def retention_schedule_ensure(schedule_model=None):
    """Creates the daily schedule unless one of that name exists, and removes any
    duplicate; leaves an existing schedule's time (which staff may change) alone.
    Safe to run from several processes at once; migration 0004 runs it."""
    if schedule_model is None:
        from django_q.models import Schedule as schedule_model
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # Two first-time callers would both see no row: serialize them. (SQLite
            # transactions here begin IMMEDIATE, which serializes them already.)
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_SCHEDULE_LOCK])
        existing = list(schedule_model.objects.filter(name=SCHEDULE_NAME).order_by("pk"))
        if existing:
            schedule_model.objects.filter(pk__in=[s.pk for s in existing[1:]]).delete()
            return existing[0]
        return schedule_model.objects.create(
            name=SCHEDULE_NAME,
            func=SCHEDULE_FUNC,
            schedule_type="D",  # Schedule.DAILY
            repeats=-1,
            next_run=next_run_after(timezone.now()),
        )


def streams_deliver() -> dict:
    """Run every minute by the schedule migration 0013 makes, and started at once when
    a stream is created or resumed: the delivery loop (audit.streams). When its time is
    up it queues its successor, so delivery goes on without waiting for the schedule."""
    from django_q.conf import Conf
    from django_q.tasks import async_task

    from .streams import streams_deliver_loop

    result = streams_deliver_loop()
    if result["handover"] and not Conf.SYNC:  # in-process, a successor would recurse
        async_task("audit.tasks.streams_deliver", task_name="streams-deliver-next")
    return result


def stream_test_send(stream_id: int, event_id: int | None) -> str:
    """Enqueued (on commit) by Send test event."""
    from .streams import stream_test_send as send

    return send(stream_id, event_id)
