"""django-q2 entry points of the audit app."""

import fcntl
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

SCHEDULE_NAME = "audit-log-retention-daily"
SCHEDULE_FUNC = "audit.tasks.audit_log_purge_daily"
SCHEDULE_HOUR_UTC = 2  # a quiet hour for most organizations; staff may move it in the admin
_SCHEDULE_LOCK = 0x6175_6469_7400  # PostgreSQL advisory lock key ("audit")
logger = logging.getLogger(__name__)


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


def next_run_after(now: datetime, hour: int = SCHEDULE_HOUR_UTC) -> datetime:
    now = now.astimezone(UTC)
    run = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    return run if run > now else run + timedelta(days=1)


def schedule_ensure(schedule_model, name: str, **fields):
    """Creates the schedule `name` unless one of that name exists, and removes any
    duplicate; leaves an existing schedule's time (which staff may change) alone.
    Safe to run from several processes at once; migrations run it."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # Two first-time callers would both see no row: serialize them. (SQLite
            # transactions here begin IMMEDIATE, which serializes them already.)
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_SCHEDULE_LOCK])
        existing = list(schedule_model.objects.filter(name=name).order_by("pk"))
        if existing:
            schedule_model.objects.filter(pk__in=[s.pk for s in existing[1:]]).delete()
            return existing[0]
        return schedule_model.objects.create(name=name, repeats=-1, **fields)


def retention_schedule_ensure(schedule_model=None):
    """The daily retention schedule (migration 0004; `purge_audit_log --schedule`)."""
    if schedule_model is None:
        from django_q.models import Schedule as schedule_model
    return schedule_ensure(
        schedule_model,
        SCHEDULE_NAME,
        func=SCHEDULE_FUNC,
        schedule_type="D",  # Schedule.DAILY
        next_run=next_run_after(timezone.now()),
    )


# Monthly partitions (audit.partitions; PostgreSQL).

PARTITIONS_SCHEDULE_NAME = "audit-log-partitions-daily"
PARTITIONS_FUNC = "audit.tasks.audit_partitions_ensure"
PARTITIONS_HOUR_UTC = 1  # before the retention job


def audit_partitions_ensure() -> dict:
    """Daily: creates the months ahead (and any missing month an event may still be
    recorded in). Idempotent; nothing to do on SQLite."""
    from .partitions import partitions_ensure

    return {"created": partitions_ensure()}


def partitions_schedule_ensure(schedule_model=None):
    """The daily partitions schedule (migration 0016, PostgreSQL only)."""
    if schedule_model is None:
        from django_q.models import Schedule as schedule_model
    return schedule_ensure(
        schedule_model,
        PARTITIONS_SCHEDULE_NAME,
        func=PARTITIONS_FUNC,
        schedule_type="D",
        next_run=next_run_after(timezone.now(), PARTITIONS_HOUR_UTC),
    )


# Tamper evidence (audit.integrity).

SEAL_SCHEDULE_NAME = "audit-log-seal"
SEAL_FUNC = "audit.tasks.audit_log_seal_loop"
VERIFY_SCHEDULE_NAME = "audit-log-verify-daily"
VERIFY_FUNC = "audit.tasks.audit_log_verify_daily"
VERIFY_HOUR_UTC = 3  # after the retention job
_SEALER_LOCK = 0x5EA1_0000_0001  # PostgreSQL advisory lock key: the one sealing loop


def integrity_schedules_ensure(schedule_model=None) -> None:
    """The sealing loop's watchdog (every minute) and the daily verification (migration
    0014)."""
    if schedule_model is None:
        from django_q.models import Schedule as schedule_model
    schedule_ensure(
        schedule_model,
        SEAL_SCHEDULE_NAME,
        func=SEAL_FUNC,
        schedule_type="I",  # Schedule.MINUTES
        minutes=1,
        next_run=timezone.now(),
    )
    schedule_ensure(
        schedule_model,
        VERIFY_SCHEDULE_NAME,
        func=VERIFY_FUNC,
        schedule_type="D",
        next_run=next_run_after(timezone.now(), VERIFY_HOUR_UTC),
    )


@contextmanager
def _sealer_lock(wait: float) -> Iterator[bool]:
    """Whether this process holds the one sealing loop's lock (trying for `wait`
    seconds): PostgreSQL's session advisory lock, else a file lock (SQLite is one
    machine). Either is released if the process dies."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:

            def take() -> bool:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [_SEALER_LOCK])
                return cursor.fetchone()[0]

            held = _try_until(take, wait)
            try:
                yield held
            finally:
                if held:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [_SEALER_LOCK])
        return
    path = Path(settings.VAR_DIR) / "audit-sealer.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as file:

        def take() -> bool:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        held = _try_until(take, wait)
        try:
            yield held
        finally:
            if held:
                fcntl.flock(file, fcntl.LOCK_UN)


def _try_until(take, wait: float) -> bool:
    """take() until it succeeds or `wait` seconds have passed."""
    deadline = time.monotonic() + wait
    while not take():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def audit_log_seal_loop(chained: bool = False) -> dict:
    """Seals every organization's new events every AUDIT_SEAL_INTERVAL seconds for
    AUDIT_SEAL_LOOP_SECONDS (at most 80% of the worker's timeout), then queues its
    successor (which takes over the lock): one loop runs at a time, in one worker.
    django-q2's scheduler fires at most every 30 seconds, too seldom for sealing within
    seconds; its schedule (every minute) only restarts the loop if it died, and
    otherwise finds the lock taken and returns."""
    from django_q.tasks import async_task

    from .integrity import SigningKeyMissing, seal_all

    sync = settings.Q_CLUSTER.get("sync")  # tasks run in the caller: one round only
    timeout = settings.Q_CLUSTER.get("timeout", 300)
    budget = 0 if sync else min(settings.AUDIT_SEAL_LOOP_SECONDS, timeout * 0.8)
    sealed = rounds = 0
    with _sealer_lock(wait=10 if chained else 0) as held:
        if not held:
            return {"skipped": "another sealing loop is running"}
        end = time.monotonic() + budget
        while True:
            started = time.monotonic()
            try:
                sealed += sum(seal_all().values())
            except SigningKeyMissing as exc:
                logger.warning("Sealing is off: %s", exc)
                return {"skipped": str(exc)}
            rounds += 1
            if started + settings.AUDIT_SEAL_INTERVAL >= end:
                break
            time.sleep(max(0.0, settings.AUDIT_SEAL_INTERVAL - (time.monotonic() - started)))
        if not sync:
            async_task(SEAL_FUNC, True, task_name="audit-log-seal-continued")
    return {"sealed": sealed, "rounds": rounds}


def audit_log_verify_daily(after_org: int = 0) -> dict:
    """Verifies every organization that has sealed blocks, keeps each outcome for the
    Integrity panel, records it, and emails the admins of an organization whose log
    was altered. Stops before the worker's timeout and queues itself for the rest."""
    from django_q.tasks import async_task

    from orgs.models import Organization

    from .integrity import verify_and_record
    from .models import Block

    deadline = time.monotonic() + settings.Q_CLUSTER.get("timeout", 300) * 0.8
    org_ids = (
        Block.objects.filter(organization_id__gt=after_org, sequence=1)
        .order_by("organization_id")
        .values_list("organization_id", flat=True)
    )
    results = {}
    for org in Organization.objects.filter(pk__in=list(org_ids)).order_by("pk"):
        if results and time.monotonic() >= deadline:
            async_task(VERIFY_FUNC, org.pk - 1, task_name="audit-log-verify-continued")
            break
        outcome, _check = verify_and_record(org, notify=True)
        results[org.pk] = "ok" if outcome.ok else outcome.problem
    return results


# Streaming (audit.streams).


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
