"""Retention: the job that removes events past their plan's retention, with their
search terms and their share of the hourly counts.

It is the one thing the append-only guard (audit/guard.py) lets delete events: on
PostgreSQL through the owner's SECURITY DEFINER functions, which never remove an event
younger than AUDIT_MIN_RETENTION_DAYS; on SQLite inside `purge_allowed()`.
"""

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import DatabaseError, connection, transaction
from django.db.models import Sum
from django.utils import timezone

from orgs.models import MAX_RETENTION_DAYS, Organization, Plan, User

from .guard import purge_allowed
from .models import (
    Event,
    EventHourlyCount,
    EventHourlyTotal,
    EventTerm,
    IngestedEvent,
    RetentionMark,
)
from .recording import activity_cache_clear, activity_keys_by_id, event_terms, term_hash
from .services import SYSTEM, event_record

logger = logging.getLogger(__name__)


# The purge.


def retention_days(organization: Organization) -> int:
    """The plan's retention, never less than AUDIT_MIN_RETENTION_DAYS: a plan row edited
    around the admin's check (raw SQL, a script) cannot shorten it. Nor more than
    MAX_RETENTION_DAYS, past which the cutoff could not be computed."""
    return _bounded(organization.plan.retention_days)


def _bounded(days: int) -> int:
    return min(max(days, settings.AUDIT_MIN_RETENTION_DAYS), MAX_RETENTION_DAYS)


def retention_cutoff(organization: Organization, now: datetime | None = None) -> datetime:
    """Events that occurred before this moment are past the organization's retention."""
    return (now or timezone.now()) - timedelta(days=retention_days(organization))


@dataclass
class OrgPurge:
    organization: Organization
    cutoff: datetime
    events: int = 0  # removed, or that would be removed in a dry run
    terms: int = 0  # search-term rows removed (each holds one or more events)
    batches: int = 0
    record_refusal: str = ""  # why the audit_log_purged event was not recorded, if it was not
    held: int = 0  # expired events left in place: more than AUDIT_PURGE_MAX_SHARE of the log


@dataclass
class PurgeResult:
    dry_run: bool
    orgs: list[OrgPurge] = field(default_factory=list)
    complete: bool = True  # False when the deadline stopped it with work left
    ingest_claims: int = 0  # idempotency keys removed (ingest_claims_purge)

    @property
    def events(self) -> int:
        return sum(o.events for o in self.orgs)

    def summary(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "complete": self.complete,
            "events": self.events,
            "orgs": {o.organization.pk: o.events for o in self.orgs if o.events},
            "ingest_claims": self.ingest_claims,
        }


BatchCallback = Callable[[OrgPurge], None]

# What the batch reads of each event: enough to derive its search terms and hour.
_BATCH_COLUMNS = (
    "id, occurred_at, action_id, actor_type, actor_id, actor_name, actor_email, "
    "site_name, context, container, details"
)
_BATCH_SELECT = (
    f"SELECT {_BATCH_COLUMNS} FROM audit_event "
    "WHERE organization_id = %s AND occurred_at < %s ORDER BY occurred_at, id LIMIT %s"
)
# PostgreSQL: the owner's function deletes the batch and its hourly counts (audit/guard.py)
# and returns the rows it deleted.
_PG_BATCH_PURGE = f"SELECT {_BATCH_COLUMNS} FROM audit_purge_batch(%s, %s, %s)"
_IN_CHUNK = 500  # ids per DELETE ... IN (...): well under SQLite's parameter limit


def audit_log_purge(
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    organizations: Sequence[Organization] | None = None,
    batch_size: int | None = None,
    pause: float | None = None,
    deadline: float | None = None,
    on_batch: BatchCallback | None = None,
    max_share: float | None = None,
) -> PurgeResult:
    """Remove, per organization, the events older than its plan's retention with their
    search terms and hourly counts. (Expired export files are the exports app's own
    hourly job: audit never reaches into exports.)

    Each batch of AUDIT_PURGE_BATCH_SIZE oldest events is one short transaction,
    followed by a pause of AUDIT_PURGE_PAUSE seconds, so the audit log page and
    recording go on meanwhile. Records `audit_log_purged` (count) for each organization
    that lost events, when its plan records audit log activity. `deadline` (a
    time.monotonic() value) stops between batches with `complete=False`; what was
    removed so far is recorded. A dry run counts and changes nothing.

    An organization whose expired events are more than `max_share` (default
    AUDIT_PURGE_MAX_SHARE) of its log, and at least PURGE_HOLD_MIN_EVENTS, is held:
    nothing is removed, `audit_log_purge_held` is recorded and staff are emailed. An
    operator releases it with `purge_audit_log --org ID --allow-large`.
    """
    now = now or timezone.now()
    batch_size = batch_size or settings.AUDIT_PURGE_BATCH_SIZE
    pause = settings.AUDIT_PURGE_PAUSE if pause is None else pause
    every_org = organizations is None  # months are dropped only in a run over all of them
    if organizations is None:
        organizations = Organization.objects.select_related("plan").order_by("pk")
    result = PurgeResult(dry_run=dry_run)
    batches = 0
    max_share = settings.AUDIT_PURGE_MAX_SHARE if max_share is None else max_share
    dropped: dict[int, int] = {}
    if every_org and not dry_run:
        dropped = _partitions_drop(now, max_share)
    for org in organizations:
        purge = OrgPurge(org, retention_cutoff(org, now))
        purge.events = dropped.get(org.pk, 0)
        result.orgs.append(purge)
        purge.held = _too_large(purge, max_share)
        if purge.held:
            if not dry_run:
                _purge_hold(purge, max_share)
                if purge.events:  # the drop's own RetentionMark stands
                    _purge_record(purge, mark=False)
            continue
        if dry_run:
            purge.events = Event.objects.filter(
                organization=org, occurred_at__lt=purge.cutoff
            ).count()
            continue
        batches, result.complete = _org_purge(purge, batch_size, pause, deadline, batches, on_batch)
        if purge.events:
            _purge_record(purge)
        if not result.complete:
            break
    if every_org and not dry_run and result.complete:
        result.ingest_claims = ingest_claims_purge(
            now=now, batch_size=batch_size, pause=pause, deadline=deadline
        )
    return result


def ingest_claims_purge(
    *,
    now: datetime | None = None,
    batch_size: int = 1000,
    pause: float = 0.0,
    deadline: float | None = None,
) -> int:
    """Removes the ingest's idempotency keys (IngestedEvent) claimed longer ago than any
    plan keeps events; returns how many. A product that resends an event keeps getting
    `duplicate` for as long as the event may still be in the log; without this the
    keys, one per ingested event, outlived their events forever. Not audited: it tidies
    the ingest's bookkeeping, not the log.

    Oldest first along the primary key, whose ids are in claim order (up to the seconds
    between transactions running side by side), so no index on the claim time costs
    the ingest a write: each batch takes the `batch_size` lowest ids and removes those
    expired, in one short transaction, until a batch finds one that is not (the rest
    are younger; a straggler goes the next day) or `deadline` (time.monotonic()) has
    passed."""
    longest = _bounded(max(Plan.objects.values_list("retention_days", flat=True), default=0))
    cutoff = (now or timezone.now()) - timedelta(days=longest)
    table = connection.ops.quote_name(IngestedEvent._meta.db_table)
    removed = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table}"  # noqa: S608
                " ORDER BY id LIMIT %s) AND claimed_at < %s",
                [batch_size, connection.ops.adapt_datetimefield_value(cutoff)],
            )
            batch = cursor.rowcount
        removed += batch
        if batch < batch_size or (deadline is not None and time.monotonic() > deadline):
            return removed
        time.sleep(pause)


def _partitions_drop(now: datetime, max_share: float) -> dict[int, int]:
    """PostgreSQL with monthly partitions (audit.partitions): drops each month whose every
    event is past every organization's retention, oldest first, in one statement per
    month; returns the events removed per organization. The owner's function checks the
    month again and leaves the RetentionMarks; the audit_log_purged events are recorded
    by the per-organization pass (which then purges the boundary month in batches).

    A month holding events of an organization whose purge would be held (more than
    `max_share` of its log) is not dropped, nor any after it: the per-organization pass
    holds it and tells staff, as without partitions."""
    from .partitions import expired_months, month_bounds, partition_drop

    removed: Counter = Counter()
    # The function judges by the server's clock: a `now` ahead of it (a test, a
    # simulation) must not make the job ask for a month the function refuses.
    for month in expired_months(min(now, timezone.now())):
        start, end = month_bounds(month)
        org_ids = (
            EventHourlyTotal.objects.filter(hour__gte=start, hour__lt=end)
            .values_list("organization_id", flat=True)
            .distinct()
        )
        orgs = Organization.objects.select_related("plan").filter(pk__in=list(org_ids))
        held = [o.pk for o in orgs if _too_large(OrgPurge(o, retention_cutoff(o, now)), max_share)]
        if held:
            logger.warning("Partition %s not dropped: purge held for %s", month, held)
            break
        started = time.monotonic()
        try:
            with transaction.atomic():
                gone = partition_drop(month)
        except DatabaseError as exc:  # e.g. lock_timeout: the batches go on, and tomorrow
            logger.error("Partition %s not dropped: %s", month, exc)
            break
        removed.update(gone)
        logger.info(
            "Dropped the partitions of %s: %d events of %d organizations in %.2f s",
            month,
            sum(gone.values()),
            len(gone),
            time.monotonic() - started,
        )
    return dict(removed)


def _org_purge(
    purge: OrgPurge,
    batch_size: int,
    pause: float,
    deadline: float | None,
    batches: int,
    on_batch: BatchCallback | None,
) -> tuple[int, bool]:
    """One organization's batches; (batches done in the whole run, finished or not)."""
    while True:
        # Past the deadline, stop before the next batch; but a run always does at
        # least one, so a run that is continued again and again still finishes.
        if deadline is not None and batches and time.monotonic() >= deadline:
            return batches, False
        removed = _batch_purge(purge, batch_size)
        if removed:
            batches += 1
            if on_batch is not None:
                on_batch(purge)
        if removed < batch_size:
            return batches, True
        if pause:
            time.sleep(pause)


def _batch_purge(purge: OrgPurge, batch_size: int) -> int:
    """One transaction: the oldest `batch_size` expired events of one organization,
    their search terms and their share of the hourly counts. Returns how many events
    it took (fewer than `batch_size`: the organization has no more to purge).

    Plain SQL rather than the ORM: converting every column of every row cost more than
    the deletes."""
    org_id = purge.organization.pk
    with transaction.atomic(), connection.cursor() as cursor:
        cutoff = connection.ops.adapt_datetimefield_value(purge.cutoff)
        if connection.vendor == "postgresql":
            cursor.execute(_PG_BATCH_PURGE, [org_id, cutoff, batch_size])
            # Deleted by id, so a second purge running at the same time gets the rows
            # the first did not take, and the counts are decremented once.
            gone = sorted(cursor.fetchall(), key=lambda row: (row[1], row[0]))
            terms = _terms_delete(cursor, org_id, gone, gone)
            taken = len(gone)
        else:
            cursor.execute(_BATCH_SELECT, [org_id, cutoff, batch_size])
            rows = {row[0]: row for row in cursor.fetchall()}
            if not rows:
                return 0
            with purge_allowed():
                deleted = _events_delete(cursor, list(rows))
                gone = [rows[i] for i in deleted]
                terms = _terms_delete(cursor, org_id, list(rows.values()), gone)
                _hourly_counts_subtract(cursor, org_id, gone)
            taken = len(rows)
    purge.events += len(gone)
    purge.terms += terms
    purge.batches += 1 if gone else 0
    return taken


def _events_delete(cursor, ids: list[int]) -> list[int]:
    """SQLite: deletes the events `ids`; returns those that were there to delete."""
    table = Event._meta.db_table
    deleted = []
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        cursor.execute(
            f"DELETE FROM {table} WHERE id IN ({', '.join(['%s'] * len(chunk))}) RETURNING id",
            chunk,
        )
        deleted += [r[0] for r in cursor.fetchall()]
    return deleted


def _db_time_adapter() -> Callable[[datetime], object]:
    """Times read by a raw query, as parameters that match the stored values exactly.
    SQLite gives naive UTC datetimes, which Django stores as str(value). PostgreSQL
    gives aware ones; ISO text cast back by the server is exact, and psycopg dumps
    thousands of strings several times faster than as many datetimes."""
    return str if connection.vendor == "sqlite" else datetime.isoformat


def _json(value):
    return json.loads(value) if isinstance(value, str) else (value or [])


def _action_keys(action_ids: set[int]) -> dict[int, str]:
    """Activity keys by id (some of an event's details are search terms, by action)."""
    keys = activity_keys_by_id()
    if not action_ids <= keys.keys():  # an activity added since the cache was read
        activity_cache_clear()
        keys = activity_keys_by_id()
    return keys


def _terms_delete(cursor, org_id: int, rows: list[tuple], gone: list[tuple]) -> int:
    """Deletes the search-term rows none of whose events is left, among those that hold
    events of `gone` (the events of the batch `rows` that were deleted); returns how
    many rows went.

    A term row holds one UTC day of one term's events and is keyed by its newest
    (audit.recording.term_rows), and the batch is every event of the organization from
    its first (occurred_at, id) to its last: so each distinct term of the batch's events
    (derived from each event exactly as the recording service derived them) is one key
    range, from the batch's first time to the end of its last day. A row that still
    holds an event the batch did not take (its last hour's, which the next batch takes)
    stays, and goes with the batch that takes its last event: that batch derives the
    same term from it."""
    terms: set[int] = set()
    keys = _action_keys({row[2] for row in gone})
    for _, _, action_id, a_type, _, a_name, a_email, site, context, container, details in gone:
        derived = event_terms(
            actor_type=a_type,
            actor_name=a_name,
            actor_email=a_email,
            site_name=site,
            items=[*_json(context), *_json(container)],
            action=keys.get(action_id, ""),
            details=_json(details),
        )
        terms |= {term_hash(term) for term in derived}
    if not terms:
        return 0
    first, last = rows[0][1], rows[-1][1]
    if connection.vendor == "postgresql":
        # The owner's function (audit/guard.py) deletes only rows of events now gone.
        cursor.execute(
            "SELECT audit_purge_terms(%s, %s::bigint[], %s::timestamptz, %s::timestamptz, %s)",
            [org_id, sorted(terms), first.isoformat(), last.isoformat(), [row[0] for row in gone]],
        )
        return cursor.fetchone()[0]
    # SQLite: naive UTC datetimes, stored as str(value).
    day_end = datetime(last.year, last.month, last.day) + timedelta(days=1)
    table = EventTerm._meta.db_table
    cursor.executemany(
        f"DELETE FROM {table} AS r WHERE organization_id = %s AND term_hash = %s "
        "AND occurred_at >= %s AND occurred_at < %s AND coalesce(oldest_at, occurred_at) <= %s "
        "AND NOT EXISTS (SELECT 1 FROM json_each(coalesce(r.event_ids, json_array(r.event_id))) "
        f"AS u JOIN {Event._meta.db_table} AS e ON e.id = u.value)",
        [(org_id, term, str(first), str(day_end), str(last)) for term in sorted(terms)],
    )
    return cursor.rowcount


def _hourly_counts_subtract(cursor, org_id: int, rows: list[tuple]) -> None:
    """SQLite (on PostgreSQL audit_purge_batch does the same). The batch took the
    organization's oldest events: every hour before the hour of
    its newest is now empty, so those hours' counts go whole; that last hour, which
    may keep events, loses what the batch removed from it."""
    if not rows:
        return
    last_hour = max(at for _, at, *_ in rows).replace(minute=0, second=0, microsecond=0)
    in_last_hour = Counter(action_id for _, at, action_id, *_ in rows if at >= last_hour)
    table = EventHourlyCount._meta.db_table
    hour = _db_time_adapter()(last_hour)
    cursor.execute(f"DELETE FROM {table} WHERE organization_id = %s AND hour < %s", [org_id, hour])
    # Per action: the row goes when the batch took all of its count, else it shrinks.
    # (Each statement names the whole primary key: "count = 0" alone led SQLite to
    # walk every count row of the organization through the other index.)
    params = [(org_id, hour, action_id, n) for action_id, n in in_last_hour.items()]
    cursor.executemany(
        f"DELETE FROM {table} WHERE organization_id = %s AND hour = %s AND action_id = %s "
        "AND count <= %s",
        params,
    )
    cursor.executemany(
        f"UPDATE {table} SET count = count - %s "
        "WHERE organization_id = %s AND hour = %s AND action_id = %s",
        [(n, org_id, hour, action_id) for _, hour, action_id, n in params],
    )
    totals = EventHourlyTotal._meta.db_table
    removed = sum(in_last_hour.values())
    cursor.execute(f"DELETE FROM {totals} WHERE organization_id = %s AND hour < %s", [org_id, hour])
    cursor.execute(
        f"DELETE FROM {totals} WHERE organization_id = %s AND hour = %s AND count <= %s",
        [org_id, hour, removed],
    )
    cursor.execute(
        f"UPDATE {totals} SET count = count - %s WHERE organization_id = %s AND hour = %s",
        [removed, org_id, hour],
    )


PURGE_HOLD_MIN_EVENTS = 1000  # below this many, a small log empties as its retention says


def _too_large(purge: OrgPurge, max_share: float) -> int:
    """How many events the purge would remove, when that is more than `max_share` of the
    organization's log (and at least PURGE_HOLD_MIN_EVENTS); else 0. Read from the
    hourly totals (whole hours before the cutoff's), never by counting events."""
    totals = EventHourlyTotal.objects.filter(organization=purge.organization)
    hour = purge.cutoff.replace(minute=0, second=0, microsecond=0)
    expired = totals.filter(hour__lt=hour).aggregate(n=Sum("count"))["n"] or 0
    if expired < PURGE_HOLD_MIN_EVENTS:
        return 0
    total = totals.aggregate(n=Sum("count"))["n"] or 0
    return expired if expired > max_share * total else 0


def _purge_hold(purge: OrgPurge, max_share: float) -> None:
    org = purge.organization
    logger.error(
        "%s: purge held: %d expired events are more than %.0f%% of the log",
        org,
        purge.held,
        max_share * 100,
    )
    recorded = event_record(
        organization=org,
        action="audit_log_purge_held",
        actor=SYSTEM,
        details={"count": purge.held, "share": f"{max_share:.0%}"},
    )
    purge.record_refusal = recorded.reason
    staff = User.objects.filter(is_superuser=True, is_active=True).values_list("email", flat=True)
    if staff:
        send_mail(
            f"Audit log purge held for {org.name}",
            f"The retention job did not remove {purge.held:,} expired activities of "
            f"{org.name} (organization {org.pk}): that is more than {max_share:.0%} of its "
            "audit log, which it takes for a mistake (a plan or clock changed?) until "
            "someone checks.\n\nIf the removal is right, run:\n"
            f"    python manage.py purge_audit_log --org {org.pk} --allow-large\n",
            None,
            list(staff),
            fail_silently=True,
        )


def _purge_record(purge: OrgPurge, *, mark: bool = True) -> None:
    # Kept beside the blocks, which the purge leaves whole: verification then reads the
    # sealed events older than the cutoff as removed by retention (audit.integrity).
    if mark:
        RetentionMark.objects.create(
            organization=purge.organization,
            cutoff=purge.cutoff,
            purged_at=timezone.now(),
            events=purge.events,
        )
    recorded = event_record(
        organization=purge.organization,
        action="audit_log_purged",
        actor=SYSTEM,
        details={"count": purge.events},
    )
    purge.record_refusal = recorded.reason
    logger.info(
        "%s: removed %d events older than %s%s",
        purge.organization,
        purge.events,
        purge.cutoff.isoformat(),
        f" (not recorded: {recorded.reason})" if recorded.reason else "",
    )
