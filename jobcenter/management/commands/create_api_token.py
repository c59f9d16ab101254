"""`manage.py create_api_token USERNAME [--name N] [--days D]`: make an API token.

The key goes alone to standard output (`TOKEN=$(python manage.py create_api_token
alice)`), what it is to standard error. It is shown this once: only its digest is kept.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from jobcenter.management.base import AuditedCommand
from jobcenter.management.errors import format_validation_error
from jobcenter.tokens import create_token


class Command(AuditedCommand):
    help = "Make a new API token for a staff user and print its key (shown once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="an active staff user")
        parser.add_argument("--name", default="command line", help="what the token is for")
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help=(
                "days until it expires, 1 to "
                f"{settings.JOBCENTER_API_TOKEN_MAX_DAYS} "
                "(default: JOBCENTER_API_TOKEN_DAYS, 90 unless set)"
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()._default_manager
        try:
            user = users.get_by_natural_key(options["username"])
        except users.model.DoesNotExist:
            raise CommandError(f"No user {options['username']!r}.") from None
        days = options["days"] if options["days"] is not None else settings.JOBCENTER_API_TOKEN_DAYS
        try:
            token, key = create_token(user, options["name"], days)
        except ValidationError as exc:
            raise CommandError(format_validation_error(exc)) from None
        self.stdout.write(key)
        self.stderr.write(
            f"API token {token.name!r} for {user.get_username()}, expires "
            f"{token.expiry:%Y-%m-%d %H:%M %Z}. This is the only time the key is shown: "
            "store it now. Use it as `Authorization: Token <key>`.",
            style_func=lambda text: text,
        )
