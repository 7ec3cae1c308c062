from django.urls import path

from orgs import converters  # noqa: F401  (registers <id:...>)

from . import views

app_name = "audit"
urlpatterns = [
    path("o/<id:org_id>/audit-log/", views.event_list, name="event-list"),
    path("o/<id:org_id>/audit-log/events/<id:event_id>/", views.event_detail, name="event-detail"),
    path("o/<id:org_id>/audit-log/settings/", views.activity_settings, name="activity-settings"),
]
