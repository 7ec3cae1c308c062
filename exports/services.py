"""Audit log exports: the request, the CSV the worker builds, its email, the cleanup.

A request is made in the web process (`export_request_create`); the django-q2 worker
runs `export_file_build` for it. That function may run more than once for the same
export (a worker that died is retried): it claims the row with a conditional update,
writes to a fixed temporary path and renames it onto a fixed final path, records the
audit event only on the one RUNNING -> READY transition, and sends the email only to
the caller that flips `email_sent_at` from NULL. So a retry never leaves two files,
two events or two emails.
"""

import csv
import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import F, QuerySet
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django_q.tasks import async_task

from audit.catalogue import CATEGORY_BY_KEY
from audit.services import Actor, event_record
from orgs.models import Organization, Product, User

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
# A spreadsheet treats a cell starting with one of these as a formula (OWASP "CSV
# injection"); a leading apostrophe makes it plain text.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
CHUNK_SIZE = 1000


class ExportError(Exception):
    """A failure worth telling the requester about in plain words."""


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


class _HashingFile:
    """A text sink for csv.writer that encodes to UTF-8, hashes and counts as it goes."""

    def __init__(self, raw):
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        self.raw.write(data)
        self.sha256.update(data)
        self.size += len(data)


def csv_rows_write(out, events: QuerySet, *, limit: int) -> int:
    """Writes the header and at most `limit` events of `events` (in its order) as CSV
    rows to `out`; returns the number of rows. Rows are fetched CHUNK_SIZE at a time
    as plain tuples, so memory stays flat whatever the limit."""
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    count = 0
    rows = events.values_list(*_ROW_FIELDS)[:limit].iterator(chunk_size=CHUNK_SIZE)
    for row in rows:
        (occurred_at, name, email, label, key, category, kind, site, message, content, ip,
         country, region, city, agent, event_id) = row  # fmt: skip
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
    """Saves an export request and enqueues its job once the transaction commits."""
    with transaction.atomic():
        export = ExportRequest.objects.create(
            organization=organization,
            requested_by=requested_by,
            filters=dict(filters),
            filters_summary=list(filters_summary),
            ip=ip or None,
            user_agent=(user_agent or "")[:500],
        )
        transaction.on_commit(
            lambda: async_task(
                "exports.tasks.export_build",
                export.pk,
                task_name=f"export-{export.pk}",
                group="exports",
            )
        )
    return export


def export_relative_path(export: ExportRequest) -> Path:
    # Deterministic, so a retried job overwrites rather than adds a file.
    return Path("exports") / str(export.organization_id) / f"{export.pk}.csv"


def export_file_build(*, export_id: int) -> ExportRequest:
    """Builds the CSV of one export and emails the requester; safe to run again."""
    claimed = ExportRequest.objects.filter(
        pk=export_id, status__in=[ExportRequest.Status.QUEUED, ExportRequest.Status.RUNNING]
    ).update(
        status=ExportRequest.Status.RUNNING,
        started_at=timezone.now(),
        attempts=F("attempts") + 1,
    )
    export = ExportRequest.objects.select_related("organization", "requested_by").get(pk=export_id)
    if claimed:
        try:
            _file_write(export)
        except Exception as exc:
            log.exception("Export %s failed", export_id)
            message = str(exc) if isinstance(exc, ExportError) else "An unexpected error."
            ExportRequest.objects.filter(pk=export_id, status=ExportRequest.Status.RUNNING).update(
                status=ExportRequest.Status.FAILED, finished_at=timezone.now(), error=message
            )
            _part_path(export).unlink(missing_ok=True)
        export.refresh_from_db()
    _email_once(export)
    return export


def _part_path(export: ExportRequest) -> Path:
    return Path(settings.PRIVATE_STORAGE_DIR) / export_relative_path(export).with_suffix(
        ".csv.part"
    )


def _file_write(export: ExportRequest) -> None:
    event_filter = export_filter(
        organization=export.organization, user=export.requested_by, filters=export.filters
    )
    if not event_filter.is_valid():
        raise ExportError("The filters of this export are no longer valid.")
    relative = export_relative_path(export)
    final = Path(settings.PRIVATE_STORAGE_DIR) / relative
    part = _part_path(export)
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(part, "wb") as raw:
        out = _HashingFile(raw)
        rows = csv_rows_write(out, event_filter.qs, limit=settings.EXPORT_MAX_ROWS)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(part, final)
    finished = timezone.now()
    with transaction.atomic():
        became_ready = ExportRequest.objects.filter(
            pk=export.pk, status=ExportRequest.Status.RUNNING
        ).update(
            status=ExportRequest.Status.READY,
            finished_at=finished,
            expires_at=finished + timedelta(seconds=settings.EXPORT_LINK_TTL),
            row_count=rows,
            size_bytes=out.size,
            sha256=out.sha256.hexdigest(),
            file_name=str(relative),
            error="",
        )
        if became_ready:
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


def _email_once(export: ExportRequest) -> None:
    if export.status not in (ExportRequest.Status.READY, ExportRequest.Status.FAILED):
        return
    claimed_at = timezone.now()
    claimed = ExportRequest.objects.filter(pk=export.pk, email_sent_at__isnull=True).update(
        email_sent_at=claimed_at
    )
    if not claimed:
        return
    try:
        export_email_message(export).send()
    except Exception:
        # Let a retry of the task send it; nothing else has claimed it meanwhile.
        ExportRequest.objects.filter(pk=export.pk, email_sent_at=claimed_at).update(
            email_sent_at=None
        )
        raise


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
        ExportRequest.objects.filter(pk=export.pk).update(file_deleted_at=now)
        deleted += 1
    return deleted


def exports_stalled_fail(now: datetime | None = None) -> int:
    """Marks failed, and tells the requester about, exports still running long after
    every retry django-q2 would make has timed out (a worker killed on each try)."""
    now = now or timezone.now()
    q = settings.Q_CLUSTER
    patience = timedelta(seconds=q["retry"] * max(q.get("max_attempts") or 1, 1) + q["timeout"])
    stalled = ExportRequest.objects.filter(
        status=ExportRequest.Status.RUNNING, started_at__lt=now - patience
    ).values_list("pk", flat=True)
    failed = 0
    for export_id in list(stalled):
        failed += ExportRequest.objects.filter(
            pk=export_id, status=ExportRequest.Status.RUNNING
        ).update(
            status=ExportRequest.Status.FAILED,
            finished_at=now,
            error="The export did not finish.",
        )
        export = ExportRequest.objects.select_related("organization", "requested_by").get(
            pk=export_id
        )
        _part_path(export).unlink(missing_ok=True)
        _email_once(export)
    return failed
