from django.urls import path

from orgs import converters  # noqa: F401  (registers <id:...>)

from . import stream_views, views

app_name = "audit"
STREAM = "o/<id:org_id>/audit-log/streams/<id:stream_id>/"
urlpatterns = [
    path("o/<id:org_id>/audit-log/", views.event_list, name="event-list"),
    path("o/<id:org_id>/audit-log/events/<id:event_id>/", views.event_detail, name="event-detail"),
    path(
        "o/<id:org_id>/audit-log/events/<id:event_id>/proof/",
        views.event_proof_download,
        name="event-proof",
    ),
    path("o/<id:org_id>/audit-log/settings/", views.activity_settings, name="activity-settings"),
    path("o/<id:org_id>/audit-log/streams/", stream_views.stream_list, name="stream-list"),
    path("o/<id:org_id>/audit-log/streams/add/", stream_views.stream_add, name="stream-add"),
    path(STREAM, stream_views.stream_detail, name="stream-detail"),
    path(STREAM + "edit/", stream_views.stream_edit, name="stream-edit"),
    path(STREAM + "pause/", stream_views.stream_pause_view, name="stream-pause"),
    path(STREAM + "resume/", stream_views.stream_resume_view, name="stream-resume"),
    path(STREAM + "test/", stream_views.stream_test_view, name="stream-test"),
    path(STREAM + "rotate/", stream_views.stream_rotate_view, name="stream-rotate"),
    path(STREAM + "delete/", stream_views.stream_delete_view, name="stream-delete"),
    path(".well-known/audit-log-signing-key", views.signing_keys, name="signing-keys"),
]
