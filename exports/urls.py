from django.urls import path

from orgs import converters  # noqa: F401  (registers <id:...>)

from . import views

app_name = "exports"
urlpatterns = [
    path("o/<id:org_id>/audit-log/exports/", views.export_list, name="export-list"),
    path("o/<id:org_id>/audit-log/exports/new/", views.export_new, name="export-new"),
    path("o/<id:org_id>/audit-log/exports/create/", views.export_create, name="export-create"),
    path(
        "o/<id:org_id>/audit-log/exports/<id:export_id>/download/",
        views.export_download,
        name="export-download",
    ),
    path(
        "o/<id:org_id>/audit-log/exports/<id:export_id>/manifest/",
        views.export_manifest,
        name="export-manifest",
    ),
    path(
        "o/<id:org_id>/audit-log/exports/<id:export_id>/again/",
        views.export_again,
        name="export-again",
    ),
]
