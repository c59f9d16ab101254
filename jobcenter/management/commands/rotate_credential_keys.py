"""`manage.py rotate_credential_keys`: re-encrypt every account under the newest key.

Rotation: put the new key first in JOBCENTER_FERNET_KEYS, keep the old ones after it,
run this, then drop the old keys.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from jobcenter import crypto
from jobcenter.models import ProviderAccount


class Command(BaseCommand):
    help = "Re-encrypt stored credentials with the first key of JOBCENTER_FERNET_KEYS."

    def handle(self, *args: Any, **options: Any) -> None:
        rotated, unreadable = 0, []
        with transaction.atomic():
            for account in ProviderAccount.objects.select_for_update().exclude(
                credentials_encrypted=""
            ):
                try:
                    account.credentials_encrypted = crypto.rotate(account.credentials_encrypted)
                except crypto.CredentialsUnreadable:
                    unreadable.append(account.name)
                    continue
                account.save(update_fields=["credentials_encrypted"])
                rotated += 1
            if unreadable:
                raise CommandError(
                    "nothing was changed: no key in JOBCENTER_FERNET_KEYS reads the credentials "
                    f"of {', '.join(unreadable)}; add back the key they were written with"
                )
        self.stdout.write(
            f"re-encrypted the credentials of {rotated} account(s) with the newest key"
        )
