from django.contrib import admin
from django.urls import include, path

from audit import ingest  # noqa: F401 - adds POST /ingest/v1/events to `api`
from audit.api import api

urlpatterns = [
    # The Django admin, for staff. Not /admin/: the vendor's REST API lives at
    # /admin/v1/ and /admin/v2/, and /admin/ serves nothing.
    path("staff/", admin.site.urls),
    path("accounts/", include("orgs.auth_urls")),  # sign-in, password reset and change
    path("", include("orgs.urls")),
    path("", include("audit.urls")),
    path("", include("exports.urls")),
    # The REST API: /admin/v1/, /admin/v2/, /ingest/v1/, /api/openapi.json and /api/docs.
    path("", api.urls),
]
