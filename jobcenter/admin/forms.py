"""Forms shared by the admin: the account form with write-only credential inputs."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from jobcenter.accounts import clean_rate_limits, merge_credentials, validate_base_url
from jobcenter.models import ProviderAccount
from jobcenter.sync.tracking import track_job
from providers import PROVIDER_CLASSES, get_provider


def credential_field_name(provider_slug: str, name: str) -> str:
    return f"credential__{provider_slug}__{name}"


def credential_inputs() -> dict[str, forms.Field]:
    """One write-only input per credential of every registered provider."""
    inputs: dict[str, forms.Field] = {}
    for slug in PROVIDER_CLASSES:
        provider = get_provider(slug)
        for field in provider.credential_fields:
            widget = (
                forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"})
                if field.secret
                else forms.TextInput(attrs={"autocomplete": "off"})
            )
            inputs[credential_field_name(slug, field.name)] = forms.CharField(
                label=f"{provider.label}: {field.label}",
                required=False,
                strip=True,
                widget=widget,
                help_text=field.help_text,
            )
    return inputs


class BaseProviderAccountForm(forms.ModelForm):
    """Credentials are typed in, never shown back: a blank input keeps the stored value.

    One password input per credential of every provider; only the chosen provider's are
    read. That keeps the form working without JavaScript.
    """

    class Meta:
        model = ProviderAccount
        fields = [
            "name",
            "provider",
            "team",
            "base_url",
            "enabled",
            "sync_interval_minutes",
            "rate_limits",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is None:
            return
        for field in self.instance.provider_class.credential_fields:
            name = credential_field_name(self.instance.provider, field.name)
            if name in self.fields:
                text = self.fields[name].help_text
                self.fields[name].help_text = (text + " " if text else "") + (
                    "Leave blank to keep the stored value."
                )

    def clean_rate_limits(self) -> dict:
        value = self.cleaned_data.get("rate_limits") or {}
        clean_rate_limits(value)
        return value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        slug = cleaned.get("provider")
        if not slug:
            return cleaned
        try:
            cleaned["base_url"] = validate_base_url(slug, cleaned.get("base_url", ""))
        except ValidationError as exc:
            self.add_error("base_url", exc)
        typed = {
            f.name: cleaned.get(credential_field_name(slug, f.name), "")
            for f in get_provider(slug).credential_fields
        }
        try:
            # The instance still holds the stored provider: the form fills it in later.
            self.credentials = merge_credentials(self.instance, slug, typed)
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                self.add_error(credential_field_name(slug, name), messages)
        return cleaned

    def save(self, commit: bool = True) -> ProviderAccount:
        account = super().save(commit=False)
        account.set_credentials(self.credentials)
        if commit:
            account.save()
        return account


ProviderAccountForm = type(
    "ProviderAccountForm",
    (BaseProviderAccountForm,),
    {"__module__": __name__, **credential_inputs()},
)


class TrackJobForm(forms.Form):
    """Register a job id to poll; the tracking service does the validating."""

    account = forms.ModelChoiceField(queryset=ProviderAccount.objects.order_by("name"))
    kind = forms.ChoiceField(help_text="Only the chosen account's provider's kinds are accepted.")
    # Not required here: the tracking service refuses a blank id in its own words.
    external_id = forms.CharField(
        label="Job id",
        required=False,
        strip=True,
        help_text="The id the provider returned when the job was created.",
    )

    def __init__(
        self, *args: Any, accounts: QuerySet[ProviderAccount] | None = None, **kwargs: Any
    ) -> None:
        """`accounts`: those the staff member may track jobs of (their teams')."""
        super().__init__(*args, **kwargs)
        if accounts is not None:
            self.fields["account"].queryset = accounts
        self.fields["kind"].choices = [
            (
                get_provider(slug).label,
                [(kind.name, kind.label) for kind in get_provider(slug).kinds],
            )
            for slug in PROVIDER_CLASSES
        ]

    def save(self) -> tuple[Any, bool]:
        """Track the job; ValidationErrors land on the form's fields."""
        try:
            return track_job(
                self.cleaned_data["account"],
                self.cleaned_data["kind"],
                self.cleaned_data["external_id"],
            )
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, messages)
            raise
