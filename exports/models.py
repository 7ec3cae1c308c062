import uuid
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
    # When its task was last put on the queue, and how often it has been put back
    # because the task was lost (see exports_lost_requeue).
    enqueued_at = models.DateTimeField(default=timezone.now)
    requeues = models.PositiveSmallIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    # The running builder's claim: only the holder of `claim_token` may finish the
    # export, and another builder may take it over only once `lease_expires_at` has
    # passed (the holder renews it while it streams).
    claim_token = models.CharField(max_length=32, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    row_count = models.PositiveIntegerField(null=True, blank=True)
    size_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    # The file's name: random, so two databases sharing PRIVATE_STORAGE_DIR (whose
    # organization and export ids repeat) never write the same path.
    file_key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    file_name = models.CharField(
        max_length=300, blank=True, help_text="Relative to PRIVATE_STORAGE_DIR."
    )
    file_deleted_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    # Set once the email has gone. email_claimed_at marks a send in progress (a claim
    # that lapses if its sender dies); email_attempts counts the tries.
    email_sent_at = models.DateTimeField(null=True, blank=True)
    email_claimed_at = models.DateTimeField(null=True, blank=True)
    email_attempts = models.PositiveSmallIntegerField(default=0)
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
