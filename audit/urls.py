from django.urls import path

from . import views

app_name = "audit"
urlpatterns = [
    path("o/<int:org_id>/audit-log/", views.event_list, name="event-list"),
    path(
        "o/<int:org_id>/audit-log/events/<int:event_id>/", views.event_detail, name="event-detail"
    ),
    path("o/<int:org_id>/audit-log/settings/", views.activity_settings, name="activity-settings"),
]
