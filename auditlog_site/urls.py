from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    # The Django admin, for staff. Not /admin/: the vendor's REST API lives at
    # /admin/v1/ and /admin/v2/, and /admin/ serves nothing.
    path("staff/", admin.site.urls),
    path("accounts/", include("orgs.auth_urls")),  # sign-in, password reset and change
    path("", include("orgs.urls")),
    path("", include("audit.urls")),
    path("", include("exports.urls")),
]
