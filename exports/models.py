from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.text import slugify

from orgs.models import Organization


class ExportRequest(models.Model):
    """One "Export log" click: the filters in force, the job's progress and the file.

    "Expired" is not stored: a ready export whose link has passed `expires_at`, or
    whose file the cleanup has deleted, reads as expired."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="export_requests"
    )
    filters = models.JSONField(default=dict, blank=True, help_text="The filter's parameters.")
    filters_summary = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    row_count = models.PositiveIntegerField(null=True, blank=True)
    size_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    file_name = models.CharField(
        max_length=300, blank=True, help_text="Relative to PRIVATE_STORAGE_DIR."
    )
    file_deleted_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    email_sent_at = models.DateTimeField(null=True, blank=True)
    # Where the request came from, for the audit_log_exported event the worker records.
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["organization", "requested_by", "created_at"], name="export_org_user_time"
            ),
            models.Index(fields=["status", "expires_at"], name="export_status_expiry"),
        ]

    def __str__(self) -> str:
        return f"Export {self.pk} of {self.organization_id} ({self.status})"

    @property
    def pending(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)

    def is_expired(self, now: datetime | None = None) -> bool:
        if self.status != self.Status.READY:
            return False
        now = now or timezone.now()
        return self.file_deleted_at is not None or (
            self.expires_at is not None and now >= self.expires_at
        )

    def is_downloadable(self, now: datetime | None = None) -> bool:
        return self.status == self.Status.READY and not self.is_expired(now)

    @property
    def display_status(self) -> str:
        return "Expired" if self.is_expired() else self.get_status_display()

    @property
    def file_path(self) -> Path:
        return Path(settings.PRIVATE_STORAGE_DIR) / self.file_name

    @property
    def download_name(self) -> str:
        day = (self.finished_at or self.created_at).date().isoformat()
        org = slugify(self.organization.name) or str(self.organization_id)
        return f"audit-log-{org}-{day}.csv"
