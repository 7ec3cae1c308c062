"""A URLconf for tests/orgs/test_cached_url.py: the org picker at another path."""

from django.urls import include, path

urlpatterns = [path("elsewhere/", include("orgs.urls"))]
