from django.urls import path

from . import (
    converters,  # noqa: F401  (registers <id:...>)
    views,
)

app_name = "orgs"
urlpatterns = [
    path("", views.org_picker, name="org-picker"),
    path("account/", views.account, name="account"),
    path("o/<id:org_id>/audit-log/api-keys/", views.api_key_list, name="api-key-list"),
    path("o/<id:org_id>/audit-log/api-keys/create/", views.api_key_create, name="api-key-create"),
    path(
        "o/<id:org_id>/audit-log/api-keys/<id:key_id>/revoke/",
        views.api_key_revoke,
        name="api-key-revoke",
    ),
]
