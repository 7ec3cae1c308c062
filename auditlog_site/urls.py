from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("orgs.auth_urls")),  # sign-in, password reset and change
    path("", include("orgs.urls")),
    path("", include("audit.urls")),
    path("", include("exports.urls")),
]
