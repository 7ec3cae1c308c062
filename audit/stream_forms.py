"""The stream form: validates what an admin typed and returns typed values; the
service (audit.streams) checks the plan, the limit and the destination."""

from django import forms

from orgs.models import Product

from .catalogue import CATEGORIES


class StreamForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        error_messages={"required": "Give the stream a name, e.g. “Splunk HEC”."},
    )
    url = forms.CharField(
        label="Destination URL",
        max_length=500,
        widget=forms.URLInput(attrs={"placeholder": "https://siem.example.com/audit"}),
        error_messages={"required": "Enter the URL events are POSTed to."},
    )
    authorization = forms.CharField(
        label="Authorization header",
        required=False,
        max_length=1000,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Optional, sent as is (e.g. “Splunk 1234…”). Never shown again once saved.",
    )
    remove_authorization = forms.BooleanField(
        label="Remove the saved Authorization header", required=False
    )
    categories = forms.MultipleChoiceField(
        label="Activity categories",
        required=False,
        choices=[(c.key, c.label) for c in CATEGORIES],
        widget=forms.CheckboxSelectMultiple,
        help_text="None checked: every category.",
        error_messages={"invalid_choice": "Choose activity categories from the list."},
    )
    product_kinds = forms.MultipleChoiceField(
        label="Products",
        required=False,
        choices=Product.Kind.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text="None checked: every product, and activity of no product.",
        error_messages={"invalid_choice": "Choose products from the list."},
    )

    def __init__(self, *args, editing: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if not editing:
            del self.fields["remove_authorization"]
        else:
            self.fields[
                "authorization"
            ].help_text = "A header value is saved: leave this empty to keep it, or type a new one."

    def authorization_value(self) -> str | None:
        """The new header value; None keeps the saved one (editing)."""
        if self.cleaned_data.get("remove_authorization"):
            return ""
        return self.cleaned_data["authorization"] or None
