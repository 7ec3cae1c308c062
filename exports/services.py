"""Audit log exports: the request, the CSV the worker builds, its email, the cleanup.

A request is made in the web process (`export_request_create`, at most
EXPORT_MAX_CONCURRENT in progress per admin and organization); the django-q2 worker
runs `export_file_build` for it. That function may run more than once for the same
export, even at the same time (django-q2 retries a task whose worker died, or that
outlived its retry): it takes a lease on the row (`export_claim`) that it renews while
it streams, so a second builder takes over only once the first has stopped renewing;
it writes to a temporary file of its own and renames it onto the final path in the
same transaction as the RUNNING -> READY flip, which only the lease holder can make
(a builder that lost its lease stops without writing). The audit event is recorded
on that flip. The email is claimed, sent, and only then marked sent; a failed send
releases the claim for the next try. So a retry never leaves two files, two events
or, once one has been sent, two emails.

Every 5 minutes `exports_stalled` (a django-q2 schedule) puts back on the queue an
export whose task was lost, fails one whose worker died on every retry, and retries
emails that could not be sent.
"""

import csv
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.tasks import async_task

from audit.catalogue import CATEGORY_BY_KEY
from audit.integrity import SigningKeyMissing, manifest_make, seal_org
from audit.selectors import event_walk
from audit.services import Actor, event_record
from orgs.models import Membership, Organization, Product, User

from .models import ExportRequest

log = logging.getLogger(__name__)

CSV_HEADER = (
    "Time (UTC)",
    "Actor name",
    "Actor email",
    "Activity",
    "Activity key",
    "Category",
    "Product",
    "Site",
    "Details",
    "Content",
    "IP address",
    "Country",
    "Region",
    "City",
    "User agent",
    "Event ID",
)
# A spreadsheet treats a cell starting with one of these as a formula (OWASP "CSV
# injection"); a leading apostrophe makes it plain text.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
CHUNK_SIZE = 1000
# A queued export whose task is not on the queue this long after it was put there is
# put back, at most Q_CLUSTER["max_attempts"] times, then failed.
REQUEUE_AFTER = timedelta(minutes=5)
# A send whose sender died (never released its claim) may be tried again after this.
EMAIL_CLAIM = timedelta(minutes=10)
EMAIL_ATTEMPTS = 5


class ExportError(Exception):
    """A failure worth telling the requester about in plain words."""


class ExportLimitReached(ExportError):
    """The admin already has EXPORT_MAX_CONCURRENT exports queued or running."""


class ExportClaimLost(Exception):
    """Another builder took the export over after this one's lease lapsed."""


_FORMULA_FIRST = frozenset(FORMULA_PREFIXES)


def csv_cell(value: object) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return "'" + text if text and text[0] in _FORMULA_FIRST else text


def _utc_iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# Looked up once per row: dicts, not the enum machinery (which rebuilds its lists).
_PRODUCT_LABELS = dict(Product.Kind.choices)
_CATEGORY_LABELS = {key: category.label for key, category in CATEGORY_BY_KEY.items()}


class _Lease:
    """A builder's hold on an export, renewed (at most every third of the lease) as
    it writes; renewing raises ExportClaimLost once another builder holds it."""

    def __init__(self, export_id: int, token: str):
        self.export_id, self.token = export_id, token
        self.renewed = timezone.now()

    def keep(self) -> None:
        now = timezone.now()
        lease = timedelta(seconds=settings.EXPORT_LEASE)
        if now - self.renewed < lease / 3:
            return
        if not ExportRequest.objects.filter(
            pk=self.export_id, status=ExportRequest.Status.RUNNING, claim_token=self.token
        ).update(lease_expires_at=now + lease):
            raise ExportClaimLost
        self.renewed = now


class _HashingFile:
    """A text sink for csv.writer that encodes to UTF-8, hashes and counts as it goes,
    keeping the builder's lease as it does."""

    def __init__(self, raw, lease: _Lease | None = None):
        self.raw = raw
        self.lease = lease
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, text: str) -> None:
        if self.lease is not None:
            self.lease.keep()
        data = text.encode("utf-8")
        self.raw.write(data)
        self.sha256.update(data)
        self.size += len(data)


# The event fields a CSV row shows, in CSV_HEADER's order.
_ROW_FIELDS = (
    "occurred_at",
    "actor_name",
    "actor_email",
    "action__label",
    "action__key",
    "action__category",
    "product_kind",
    "site_name",
    "message",
    "content",
    "ip",
    "country",
    "region",
    "city",
    "user_agent",
    "id",
)


def csv_rows_write(out, events: Iterable[Mapping], *, limit: int) -> int:
    """Writes the header and at most `limit` of `events` (dicts of _ROW_FIELDS, in
    their order) as CSV rows to `out`; returns the number of rows. `events` is read
    lazily (audit.selectors.event_walk reads CHUNK_SIZE at a time), so memory stays
    flat whatever the limit."""
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    count = 0
    for row in islice(events, limit):
        (occurred_at, name, email, label, key, category, kind, site, message, content, ip,
         country, region, city, agent, event_id) = map(row.__getitem__, _ROW_FIELDS)  # fmt: skip
        writer.writerow(
            [
                _utc_iso(occurred_at),
                csv_cell(name),
                csv_cell(email),
                csv_cell(label),
                csv_cell(key),
                _CATEGORY_LABELS.get(category, category),
                csv_cell(_PRODUCT_LABELS.get(kind, kind)),
                csv_cell(site),
                csv_cell(message),
                csv_cell(content),
                csv_cell(ip),
                csv_cell(country),
                csv_cell(region),
                csv_cell(city),
                csv_cell(agent),
                event_id,
            ]
        )
        count += 1
    return count


def export_filter(*, organization: Organization, user: User, filters: Mapping):
    """The audit log's own filter, rebuilt from saved parameters as `user` sees it."""
    from audit.filters import EventFilter  # the page's FilterSet: one definition for all

    return EventFilter(filters, org=organization, tz=ZoneInfo(user.time_zone or "UTC"))


def export_request_create(
    *,
    organization: Organization,
    requested_by: User,
    filters: Mapping,
    filters_summary: Iterable[str],
    ip: str | None = None,
    user_agent: str = "",
) -> ExportRequest:
    """Saves an export request and enqueues its job once the transaction commits.

    Raises ExportLimitReached when the admin already has EXPORT_MAX_CONCURRENT exports
    of this organization queued or running. The count is taken with the admin's
    membership row locked (PostgreSQL) or inside the write transaction (SQLite,
    BEGIN IMMEDIATE), so two requests at once cannot both pass it."""
    with transaction.atomic():
        list(
            Membership.objects.select_for_update()
            .filter(organization=organization, user=requested_by)
            .values_list("pk", flat=True)
        )
        in_progress = ExportRequest.objects.filter(
            organization=organization,
            requested_by=requested_by,
            status__in=[ExportRequest.Status.QUEUED, ExportRequest.Status.RUNNING],
        ).count()
        if in_progress >= settings.EXPORT_MAX_CONCURRENT:
            raise ExportLimitReached(
                f"You already have {in_progress} exports in progress; wait for one to finish."
            )
        export = ExportRequest.objects.create(
            organization=organization,
            requested_by=requested_by,
            filters=dict(filters),
            filters_summary=list(filters_summary),
            ip=ip or None,
            user_agent=(user_agent or "")[:500],
            enqueued_at=timezone.now(),
        )
        transaction.on_commit(lambda: _enqueue(export.pk))
    return export


def _enqueue(export_id: int) -> None:
    async_task(
        "exports.tasks.export_build",
        export_id,
        task_name=f"export-{export_id}",
        group="exports",
    )


def export_relative_path(export: ExportRequest) -> Path:
    # Fixed per export, so a retried job overwrites rather than adds a file; a random
    # key rather than the id, so another database's export of the same id never does.
    return Path("exports") / str(export.organization_id) / f"{export.file_key}.csv"


def export_claim(*, export_id: int) -> str | None:
    """Takes the lease on a queued export, or on a running one whose lease has lapsed
    (its builder died or hangs); returns the claim token, or None if another builder
    holds it or the export is finished."""
    now = timezone.now()
    token = uuid.uuid4().hex
    lapsed = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now)
    claimable = Q(status=ExportRequest.Status.QUEUED) | (
        Q(status=ExportRequest.Status.RUNNING) & lapsed
    )
    claimed = ExportRequest.objects.filter(claimable, pk=export_id).update(
        status=ExportRequest.Status.RUNNING,
        claim_token=token,
        lease_expires_at=now + timedelta(seconds=settings.EXPORT_LEASE),
        started_at=now,
        attempts=F("attempts") + 1,
    )
    return token if claimed else None


def export_file_build(*, export_id: int) -> ExportRequest:
    """Builds the CSV of one export and emails the requester; safe to run again, and
    at the same time (see the module's docstring)."""
    token = export_claim(export_id=export_id)
    export = ExportRequest.objects.select_related("organization", "requested_by").get(pk=export_id)
    if token:
        try:
            _file_write(export, token)
        except ExportClaimLost:
            log.warning("Export %s was taken over by another builder; this one stops", export_id)
            _part_unlink(export, token)
        except Exception as exc:
            log.exception("Export %s failed", export_id)
            message = str(exc) if isinstance(exc, ExportError) else "An unexpected error."
            ExportRequest.objects.filter(
                pk=export_id, status=ExportRequest.Status.RUNNING, claim_token=token
            ).update(status=ExportRequest.Status.FAILED, finished_at=timezone.now(), error=message)
            _part_unlink(export, token)
        export.refresh_from_db()
    _email_once(export)
    return export


def _part_path(export: ExportRequest, token: str) -> Path:
    # One temporary file per claim: a builder that lost its lease and has not noticed
    # yet never writes into its successor's file.
    final = Path(settings.PRIVATE_STORAGE_DIR) / export_relative_path(export)
    return final.with_name(f"{final.stem}.{token}.part")


def _part_unlink(export: ExportRequest, token: str) -> None:
    part = _part_path(export, token)
    part.unlink(missing_ok=True)
    manifest_path(part).unlink(missing_ok=True)


def _part_paths_unlink(export: ExportRequest) -> None:
    final = Path(settings.PRIVATE_STORAGE_DIR) / export_relative_path(export)
    for pattern in (f"{final.stem}.*.part", f"{final.stem}.*.part.manifest.json"):
        for part in final.parent.glob(pattern):
            part.unlink(missing_ok=True)


def _file_write(export: ExportRequest, token: str) -> None:
    event_filter = export_filter(
        organization=export.organization, user=export.requested_by, filters=export.filters
    )
    if not event_filter.is_valid():
        raise ExportError("The filters of this export are no longer valid.")
    relative = export_relative_path(export)
    final = Path(settings.PRIVATE_STORAGE_DIR) / relative
    part = _part_path(export, token)
    final.parent.mkdir(parents=True, exist_ok=True)
    sealing = _seal(export.organization)
    with open(part, "wb") as raw:
        out = _HashingFile(raw, _Lease(export.pk, token))
        limit = settings.EXPORT_MAX_ROWS
        events = event_walk(event_filter, limit=limit, chunk=CHUNK_SIZE, values=_ROW_FIELDS)
        rows = csv_rows_write(out, events, limit=limit)
        raw.flush()
        os.fsync(raw.fileno())
    finished = timezone.now()
    if sealing:
        manifest = manifest_make(
            organization=export.organization,
            file_name=export.download_name,
            sha256=out.sha256.hexdigest(),
            rows=rows,
            filters=dict(export.filters),
            exported_at=finished,
            event_ids=_csv_event_ids(part),
        )
        manifest_path(part).write_text(json.dumps(manifest, indent=2) + "\n")
    # The flip locks the row (and on SQLite the database) until commit, so a builder
    # taking over meanwhile waits, then finds it READY; the file lands only with it.
    with transaction.atomic():
        became_ready = ExportRequest.objects.filter(
            pk=export.pk, status=ExportRequest.Status.RUNNING, claim_token=token
        ).update(
            status=ExportRequest.Status.READY,
            finished_at=finished,
            expires_at=finished + timedelta(seconds=settings.EXPORT_LINK_TTL),
            row_count=rows,
            size_bytes=out.size,
            sha256=out.sha256.hexdigest(),
            file_name=str(relative),
            error="",
            lease_expires_at=None,
        )
        if not became_ready:
            raise ExportClaimLost
        os.replace(part, final)
        if sealing:
            os.replace(manifest_path(part), manifest_path(final))
        _part_paths_unlink(export)  # what builders that died before this one left
        event_record(
            organization=export.organization,
            action="audit_log_exported",
            actor=Actor.for_user(export.requested_by),
            details={
                "count": rows,
                "filters": "; ".join(export.filters_summary),
                "export_id": export.pk,
            },
            ip=export.ip,
            user_agent=export.user_agent,
        )


def _csv_event_ids(path: Path) -> list[int]:
    """The event ids of a written export file (its last column): exactly the rows it
    holds, whatever was recorded while it was written."""
    with open(path, newline="", encoding="utf-8") as file:
        rows = csv.reader(file)
        next(rows, None)
        return [int(row[-1]) for row in rows]


def manifest_path(csv_path: Path) -> Path:
    """The signed manifest beside an export file (or its part)."""
    return csv_path.with_name(csv_path.name + ".manifest.json")


def _seal(organization: Organization) -> bool:
    """Seals the organization's events so far, so that the manifest names the blocks of
    the exported events; False when no signing key is configured (no manifest)."""
    try:
        seal_org(organization.pk)
    except SigningKeyMissing:
        log.warning("No audit log signing key: export without a signed manifest")
        return False
    return True


def _email_once(export: ExportRequest) -> None:
    """Sends the ready or failed email unless it has been sent: claims the send, sends,
    then marks it sent. A failed send releases the claim (and re-raises) so a later run
    tries again, up to EMAIL_ATTEMPTS; a sender that died leaves a claim that lapses
    after EMAIL_CLAIM. Once marked sent, it is never sent again."""
    if export.status not in (ExportRequest.Status.READY, ExportRequest.Status.FAILED):
        return
    claimed_at = timezone.now()
    claimable = Q(email_claimed_at__isnull=True) | Q(email_claimed_at__lte=claimed_at - EMAIL_CLAIM)
    claimed = (
        ExportRequest.objects.filter(
            pk=export.pk, email_sent_at__isnull=True, email_attempts__lt=EMAIL_ATTEMPTS
        )
        .filter(claimable)
        .update(email_claimed_at=claimed_at, email_attempts=F("email_attempts") + 1)
    )
    if not claimed:
        return
    try:
        export_email_message(export).send()
    except Exception:
        ExportRequest.objects.filter(pk=export.pk, email_claimed_at=claimed_at).update(
            email_claimed_at=None
        )
        raise
    ExportRequest.objects.filter(pk=export.pk, email_sent_at__isnull=True).update(
        email_sent_at=timezone.now(), email_claimed_at=None
    )


def export_email_message(export: ExportRequest) -> EmailMultiAlternatives:
    ready = export.status == ExportRequest.Status.READY
    context = {
        "export": export,
        "org": export.organization,
        "user": export.requested_by,
        "download_url": settings.SITE_URL
        + reverse("exports:export-download", args=[export.organization_id, export.pk]),
        "exports_url": settings.SITE_URL
        + reverse("exports:export-list", args=[export.organization_id]),
    }
    name = "export_ready" if ready else "export_failed"
    subject = "Your audit log is ready to download" if ready else "Your audit log export failed"
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string(f"exports/email/{name}.txt", context),
        to=[export.requested_by.email],
    )
    message.attach_alternative(render_to_string(f"exports/email/{name}.html", context), "text/html")
    return message


def export_files_purge_expired(now: datetime | None = None) -> int:
    """Deletes the files of exports whose link has expired; returns how many."""
    now = now or timezone.now()
    expired = ExportRequest.objects.filter(
        status=ExportRequest.Status.READY, expires_at__lte=now, file_deleted_at__isnull=True
    ).only("pk", "file_name")
    deleted = 0
    for export in expired.iterator(chunk_size=500):
        if export.file_name:
            export.file_path.unlink(missing_ok=True)
            manifest_path(export.file_path).unlink(missing_ok=True)
        ExportRequest.objects.filter(pk=export.pk).update(file_deleted_at=now)
        deleted += 1
    return deleted


def _patience() -> timedelta:
    """How long every retry django-q2 would make of one task can take."""
    q = settings.Q_CLUSTER
    return timedelta(seconds=q["retry"] * max(q.get("max_attempts") or 1, 1) + q["timeout"])


def _pending_task_names() -> set[str] | None:
    """Names of the tasks on the ORM broker's queue (taken or not: a row stays until
    its task is acknowledged); None when the broker cannot be read (Redis)."""
    if Conf.SYNC:
        return set()
    if not Conf.ORM:
        return None
    return {row.name() for row in OrmQ.objects.all()}


def exports_lost_requeue(now: datetime | None = None) -> int:
    """Puts back on the queue the queued exports whose task is no longer there (the
    queue row was lost: broker wiped, worker restarted) REQUEUE_AFTER after their last
    enqueue, at most Q_CLUSTER["max_attempts"] times; then fails and tells the
    requester. On a broker it cannot read, it waits as long as every retry of the
    task could take instead. Returns how many it put back."""
    now = now or timezone.now()
    budget = max(settings.Q_CLUSTER.get("max_attempts") or 1, 1)
    pending = _pending_task_names()
    wait = REQUEUE_AFTER if pending is not None else _patience()
    lost = ExportRequest.objects.filter(
        status=ExportRequest.Status.QUEUED, enqueued_at__lt=now - wait
    ).values_list("pk", "requeues")
    requeued = 0
    for export_id, requeues in list(lost):
        if pending and f"export-{export_id}" in pending:
            continue
        if requeues >= budget:
            if ExportRequest.objects.filter(
                pk=export_id, status=ExportRequest.Status.QUEUED
            ).update(
                status=ExportRequest.Status.FAILED,
                finished_at=now,
                error="The export did not start.",
            ):
                _email_quietly(export_id)
        elif ExportRequest.objects.filter(
            pk=export_id, status=ExportRequest.Status.QUEUED, requeues=requeues
        ).update(requeues=F("requeues") + 1, enqueued_at=now):
            log.warning("Export %s had no task on the queue; enqueued it again", export_id)
            _enqueue(export_id)
            requeued += 1
    return requeued


def exports_abandoned_requeue(now: datetime | None = None) -> int:
    """On a broker that forgets a task once a worker has taken it (Redis), puts back on
    the queue the running exports whose builder died: their lease lapsed and was not
    renewed, and no enqueue of theirs is younger than a lease. The next builder takes
    the lapsed lease over (export_claim). At most Q_CLUSTER["max_attempts"] times in
    all; exports_stalled_fail ends the rest. The ORM broker needs none of this: it
    hands an unacknowledged task out again after Q_RETRY. Returns how many it put back."""
    if Conf.SYNC or Conf.ORM:
        return 0
    now = now or timezone.now()
    budget = max(settings.Q_CLUSTER.get("max_attempts") or 1, 1)
    lease = timedelta(seconds=settings.EXPORT_LEASE)
    abandoned = Q(
        status=ExportRequest.Status.RUNNING,
        lease_expires_at__lte=now,
        enqueued_at__lt=now - lease,
    )
    requeued = 0
    for export_id, requeues in list(
        ExportRequest.objects.filter(abandoned).values_list("pk", "requeues")
    ):
        if requeues < budget and ExportRequest.objects.filter(
            abandoned, pk=export_id, requeues=requeues
        ).update(requeues=F("requeues") + 1, enqueued_at=now):
            log.warning("Export %s lost its builder; enqueued it again", export_id)
            _enqueue(export_id)
            requeued += 1
    return requeued


def exports_stalled_fail(now: datetime | None = None) -> int:
    """Marks failed, and tells the requester about, exports still running long after
    every retry django-q2 would make has timed out (a worker killed on each try) and
    whose builder no longer renews its lease."""
    now = now or timezone.now()
    stalled = ExportRequest.objects.filter(
        Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now),
        status=ExportRequest.Status.RUNNING,
        started_at__lt=now - _patience(),
    ).values_list("pk", flat=True)
    failed = 0
    for export_id in list(stalled):
        done = ExportRequest.objects.filter(
            Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now),
            pk=export_id,
            status=ExportRequest.Status.RUNNING,
        ).update(
            status=ExportRequest.Status.FAILED,
            finished_at=now,
            error="The export did not finish.",
        )
        if done:
            failed += 1
            _part_paths_unlink(ExportRequest.objects.get(pk=export_id))
            _email_quietly(export_id)
    return failed


def export_emails_retry(now: datetime | None = None) -> int:
    """Sends the emails of finished exports that could not be sent (while the link
    would still work); returns how many were tried."""
    now = now or timezone.now()
    unsent = ExportRequest.objects.filter(
        Q(email_claimed_at__isnull=True) | Q(email_claimed_at__lte=now - EMAIL_CLAIM),
        status__in=[ExportRequest.Status.READY, ExportRequest.Status.FAILED],
        email_sent_at__isnull=True,
        email_attempts__lt=EMAIL_ATTEMPTS,
        finished_at__gte=now - timedelta(seconds=settings.EXPORT_LINK_TTL),
    ).values_list("pk", flat=True)
    export_ids = list(unsent)
    for export_id in export_ids:
        _email_quietly(export_id)
    return len(export_ids)


def _email_quietly(export_id: int) -> None:
    """_email_once for the sweeps: one failed send must not stop the others."""
    export = ExportRequest.objects.select_related("organization", "requested_by").get(pk=export_id)
    try:
        _email_once(export)
    except Exception:
        log.exception("The email of export %s could not be sent; it will be tried again", export_id)
