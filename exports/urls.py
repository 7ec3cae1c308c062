from django.urls import path

from . import views

app_name = "exports"
urlpatterns = [
    path("o/<int:org_id>/audit-log/exports/", views.export_list, name="export-list"),
]
