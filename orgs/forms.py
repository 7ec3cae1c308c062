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
