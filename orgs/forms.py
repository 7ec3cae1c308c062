from django import forms

from .models import User


class AccountForm(forms.ModelForm):
    """The account's own display settings: the time zone its pages show times in."""

    class Meta:
        model = User
        fields = ["time_zone"]
        labels = {"time_zone": "Time zone"}
        help_texts = {"time_zone": "Dates and times in the audit log are shown in this zone."}
