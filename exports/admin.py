from django.contrib import admin

from .models import ExportRequest


@admin.register(ExportRequest)
class ExportRequestAdmin(admin.ModelAdmin):
    """Staff can follow exports; the rows are written only by the export services."""

    list_display = [
        "id",
        "organization",
        "requested_by",
        "status",
        "created_at",
        "finished_at",
        "expires_at",
        "row_count",
        "size_bytes",
        "email_sent_at",
    ]
    list_filter = ["status"]
    list_select_related = ["organization", "requested_by"]
    search_fields = ["requested_by__email", "organization__name"]
    ordering = ["-id"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
