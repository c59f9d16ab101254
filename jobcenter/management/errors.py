"""How commands word a ValidationError: field by field, on one line."""

from __future__ import annotations

from django.core.exceptions import ValidationError


def format_validation_error(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
    return " ".join(exc.messages)
