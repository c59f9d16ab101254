"""`manage.py rotate_credential_keys`: re-encrypt every stored secret under the newest key.

Rotation: put the new key first in JOBCENTER_FERNET_KEYS, keep the old ones after it,
run this, then drop the old keys. Every encrypted field is covered (provider credentials
and webhook signing secrets), so dropping an old key afterwards breaks nothing.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError
from django.db import models, transaction

from jobcenter import crypto
from jobcenter.management.base import AuditedCommand
from jobcenter.models import AlertChannel, ProviderAccount

# (model, encrypted field, what a row is called in messages)
ENCRYPTED_FIELDS: tuple[tuple[type[models.Model], str, str], ...] = (
    (ProviderAccount, "credentials_encrypted", "account"),
    (AlertChannel, "secret_encrypted", "alert channel"),
)


class Command(AuditedCommand):
    help = "Re-encrypt stored secrets with the first key of JOBCENTER_FERNET_KEYS."

    def handle(self, *args: Any, **options: Any) -> None:
        rotated: dict[str, int] = {}
        unreadable: list[str] = []
        with transaction.atomic():
            for model, field, label in ENCRYPTED_FIELDS:
                rotated[label] = 0
                for row in model.objects.select_for_update().exclude(**{field: ""}):
                    try:
                        setattr(row, field, crypto.rotate(getattr(row, field)))
                    except crypto.CredentialsUnreadable:
                        unreadable.append(f"{label} {row}")
                        continue
                    row.save(update_fields=[field])
                    rotated[label] += 1
            if unreadable:
                raise CommandError(
                    "nothing was changed: no key in JOBCENTER_FERNET_KEYS reads the secrets "
                    f"of {', '.join(unreadable)}; add back the key they were written with"
                )
        self.stdout.write(
            "re-encrypted with the newest key: "
            + ", ".join(f"{count} {label}(s)" for label, count in rotated.items())
        )
