"""`manage.py sandbox --port 8765`: the local provider sandbox (no database needed)."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import CommandParser

from jobcenter.management.base import AuditedCommand
from providers.sandbox.__main__ import add_arguments, serve


class Command(AuditedCommand):
    help = "Run the sandbox that speaks the providers' job APIs on loopback."
    requires_system_checks: list = []
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        serve(argparse.Namespace(**options))
