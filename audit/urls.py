from django.urls import path

from orgs import converters  # noqa: F401  (registers <id:...>)

from . import views

app_name = "audit"
urlpatterns = [
    path("o/<id:org_id>/audit-log/", views.event_list, name="event-list"),
    path("o/<id:org_id>/audit-log/events/<id:event_id>/", views.event_detail, name="event-detail"),
    path(
        "o/<id:org_id>/audit-log/events/<id:event_id>/proof/",
        views.event_proof_download,
        name="event-proof",
    ),
    path("o/<id:org_id>/audit-log/settings/", views.activity_settings, name="activity-settings"),
    path(".well-known/audit-log-signing-key", views.signing_keys, name="signing-keys"),
]
