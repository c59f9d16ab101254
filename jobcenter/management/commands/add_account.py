"""`manage.py add_account NAME --provider SLUG [--base-url URL]`, credentials as JSON on stdin.

Credentials never go on the command line, where shell history and `ps` would keep them.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from jobcenter.accounts import create_account
from jobcenter.management.base import AuditedCommand
from jobcenter.management.errors import format_validation_error
from providers import PROVIDER_CLASSES, get_provider


class Command(AuditedCommand):
    help = "Add a provider account; read its credentials as a JSON object on standard input."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--provider", required=True, choices=sorted(PROVIDER_CLASSES))
        parser.add_argument("--base-url", default="", help="blank for the provider's default")
        parser.add_argument("--interval", type=int, default=None, help="sync interval, minutes")

    def handle(self, *args: Any, **options: Any) -> None:
        provider = get_provider(options["provider"])
        fields = ", ".join(f'"{f.name}"' for f in provider.credential_fields)
        if sys.stdin.isatty():
            self.stderr.write(f"Paste the credentials as JSON ({{{fields}}}), then Ctrl-D:")
        raw = sys.stdin.read()
        try:
            credentials = json.loads(raw)
        except ValueError:
            raise CommandError(f"stdin is not JSON: expected an object with {fields}") from None
        if not isinstance(credentials, dict):
            raise CommandError(f"stdin must hold a JSON object with {fields}")
        try:
            account = create_account(
                options["name"],
                options["provider"],
                credentials,
                base_url=options["base_url"],
                sync_interval_minutes=options["interval"],
            )
        except ValidationError as exc:
            raise CommandError(format_validation_error(exc)) from None
        self.stdout.write(
            f"added account {account.name!r} ({provider.label}, credentials "
            f"{account.credentials_hint or 'stored'})"
        )
