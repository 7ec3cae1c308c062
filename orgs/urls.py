from django.urls import path

from . import views

app_name = "orgs"
urlpatterns = [
    path("", views.org_picker, name="org-picker"),
    path("account/", views.account, name="account"),
]
