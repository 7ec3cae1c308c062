from django import forms
from django.contrib.auth import forms as auth_forms
from django.db.models.functions import Lower

from .models import EMAIL_TAKEN, User, email_normalize


class AccountForm(forms.ModelForm):
    """The account's own display settings: the time zone its pages show times in."""

    class Meta:
        model = User
        fields = ["time_zone"]
        labels = {"time_zone": "Time zone"}
        help_texts = {"time_zone": "Dates and times in the audit log are shown in this zone."}


class UserEmailMixin:
    """Staff's add and change forms: the email stored as every other path stores it, and
    one that another account has in any case refused with a message (the database
    would refuse it too, as an IntegrityError)."""

    def clean_email(self) -> str:
        email = email_normalize(self.cleaned_data.get("email"))
        others = User.objects.alias(email_lower=Lower("email")).exclude(pk=self.instance.pk)
        if email and others.filter(email_lower=email).exists():
            raise forms.ValidationError(EMAIL_TAKEN, code="unique")
        return email


class UserCreationForm(UserEmailMixin, auth_forms.AdminUserCreationForm):
    class Meta(auth_forms.AdminUserCreationForm.Meta):
        model = User
        fields = ["email"]


class UserChangeForm(UserEmailMixin, auth_forms.UserChangeForm):
    class Meta(auth_forms.UserChangeForm.Meta):
        model = User
        fields = "__all__"


class ApiKeyForm(forms.Form):
    """A new API key: a name to tell it apart, and how many days it works."""

    DAY_CHOICES = [(d, f"{d} day{'' if d == 1 else 's'}") for d in (1, 7, 30, 60, 90, 180, 365)]

    name = forms.CharField(
        max_length=100,
        error_messages={"required": "Give the key a name."},
        help_text="What uses it, e.g. “SIEM export” or “Nightly backup script”.",
    )
    days = forms.TypedChoiceField(
        label="Expires after",
        choices=DAY_CHOICES,
        coerce=int,
        initial=30,
        error_messages={"invalid_choice": "Choose 1, 7, 30, 60, 90, 180 or 365 days."},
    )
