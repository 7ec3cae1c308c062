"""The activity settings form: one product, Stored or Not stored."""

from django import forms

from orgs.models import Organization, Product

STORED, NOT_STORED = "stored", "not-stored"


class ActivitySettingForm(forms.Form):
    product = forms.ModelChoiceField(
        queryset=Product.objects.none(),
        error_messages={
            "required": "Choose one of your organization's products.",
            "invalid_choice": "Choose one of your organization's products.",
        },
    )
    content = forms.ChoiceField(
        choices=[(STORED, "Stored"), (NOT_STORED, "Not stored")],
        widget=forms.RadioSelect,
        error_messages={
            "required": "Choose Stored or Not stored.",
            "invalid_choice": "Choose Stored or Not stored.",
        },
    )

    def __init__(self, *args, org: Organization, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["product"].queryset = Product.objects.filter(
            site__organization=org
        ).select_related("site")

    @property
    def content_stored(self) -> bool:
        return self.cleaned_data["content"] == STORED
