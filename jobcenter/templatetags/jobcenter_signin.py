"""What the login page offers: sign-in with the identity provider, passwords, or both."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import template
from django.conf import settings
from django.urls import reverse

from jobcenter.oidc import config

register = template.Library()


@register.simple_tag
def sign_in_options(next_url: str = "") -> dict[str, Any]:
    """The identity provider's button (its URL keeps `next`), its label, and whether
    password sign-in is open to everyone."""
    url = ""
    if config.enabled():
        url = reverse("oidc_authentication_init")
        if next_url:
            url += "?" + urlencode({"next": next_url})
    return {
        "oidc_url": url,
        "oidc_label": settings.JOBCENTER_OIDC_BUTTON_LABEL,
        "password_login": settings.JOBCENTER_PASSWORD_LOGIN,
    }
