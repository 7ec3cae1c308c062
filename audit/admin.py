from django.contrib import admin
from django.core.paginator import Paginator
from django.utils.functional import cached_property
from django_q import admin as django_q_admin
from django_q import models as django_q_models

from orgs.admin import DeletionsRecordedMixin, ReadOnlyAdminMixin
from orgs.models import Organization

from .models import Activity, ActivitySetting, Event, EventTerm, Stream, StreamAttempt
from .selectors import term_event_ids
from .services import (
    activity_setting_refusal,
    activity_setting_update,
    normalize_term,
    request_meta,
    term_hash,
)


@admin.register(Activity)
class ActivityAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The catalogue is code (audit/catalogue.py, copied by migrations): a relabelled
    activity would relabel every past event. Staff may look, not change."""

    list_display = ["key", "label", "category", "user_created", "template"]
    list_filter = ["category", "user_created"]
    search_fields = ["key", "label"]


@admin.register(ActivitySetting)
class ActivitySettingAdmin(DeletionsRecordedMixin, admin.ModelAdmin):
    list_display = ["product", "organization", "content_stored", "updated_at", "updated_by"]
    list_filter = ["content_stored"]
    list_select_related = ["product__site", "organization", "updated_by"]
    search_fields = ["organization__name"]

    # Changes go through the organization's page (orgs/admin.py), which records them.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    # Deleting a row means Stored again (the default): recorded like any other change.
    deletion_select_related = ("organization__plan", "product__site")

    def deletion_record(self, request, obj):
        _setting_reset(request, obj)


def _setting_reset(request, setting: ActivitySetting) -> None:
    if not setting.content_stored and not activity_setting_refusal(
        setting.organization, setting.product
    ):
        activity_setting_update(
            organization=setting.organization,
            product=setting.product,
            content_stored=True,
            actor_user=request.user,
            **request_meta(request),
        )


class BoundedCountPaginator(Paginator):
    """The admin changelist would COUNT the whole events table on every page; this
    paginator counts at most CAP rows (an index walk that stops there), so the page
    costs the same at 1M rows as at 1k. Past the cap, narrow with filters."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        return self.object_list[: self.CAP].count()


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "occurred_at",
        "organization",
        "action",
        "actor_name",
        "actor_email",
        "message",
        "ip",
    ]
    list_select_related = ["organization", "action"]
    list_filter = ["action__category", "organization"]
    search_fields = ["actor_email"]  # handled by get_search_results: exact term, indexed
    search_help_text = "Exact user name or email, group name or site name."
    ordering = ["-id"]
    show_full_result_count = False
    paginator = BoundedCountPaginator
    list_per_page = 50

    def get_search_results(self, request, queryset, search_term):
        term = normalize_term(search_term)
        if not term:
            return queryset, False
        # The term index leads with the organization: name them all so it is used. By
        # the term's hash: staff's list may show the rare event of a colliding term.
        rows = EventTerm.objects.filter(
            organization_id__in=Organization.objects.values("id"), term_hash=term_hash(term)
        )
        return queryset.filter(id__in=term_event_ids(rows)), False


# The task queue (django-q2) is monitored here, never edited: a schedule or queued task
# names any importable function, which the worker runs (os.system, a management command
# that erases tables...). Jobs are made by migrations and by the app's own code.
class _ReadOnlyTaskAdmin(ReadOnlyAdminMixin):
    actions = None  # no "resubmit task" either


for _model, _admin_class in [
    (django_q_models.Schedule, django_q_admin.ScheduleAdmin),
    (django_q_models.Success, django_q_admin.TaskAdmin),
    (django_q_models.Failure, django_q_admin.FailAdmin),
    (django_q_models.OrmQ, django_q_admin.QueueAdmin),
]:
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
    admin.site.register(_model, type(_admin_class.__name__, (_ReadOnlyTaskAdmin, _admin_class), {}))


class StreamAttemptInline(admin.TabularInline):
    model = StreamAttempt
    fields = ["started_at", "status_code", "error", "batch_size", "latency_ms"]
    readonly_fields = fields
    ordering = ["-id"]
    extra = 0
    max_num = 0
    can_delete = False


@admin.register(Stream)
class StreamAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Streams are the organization's to manage (the Streams page records every
    change): staff look. The secrets and the Authorization header are never shown."""

    list_display = ["name", "organization", "url", "enabled", "failures", "last_success_at"]
    list_filter = ["enabled"]
    list_select_related = ["organization"]
    search_fields = ["name", "organization__name"]
    fields = [
        "organization",
        "name",
        "url",
        "categories",
        "product_kinds",
        "enabled",
        "paused_reason",
        "cursor_txid",
        "cursor_id",
        "failures",
        "first_failure_at",
        "next_attempt_at",
        "last_error",
        "last_success_at",
        "lease_owner",
        "lease_until",
        "created_at",
        "created_by",
    ]
    inlines = [StreamAttemptInline]


@admin.register(StreamAttempt)
class StreamAttemptAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["started_at", "stream", "status_code", "error", "batch_size", "latency_ms"]
    list_select_related = ["stream"]
    fields = [
        "stream",
        "started_at",
        "batch_id",
        "status_code",
        "error",
        "batch_size",
        "latency_ms",
        "first_event_id",
        "last_event_id",
        "is_test",
    ]
