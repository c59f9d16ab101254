"""The base of Job Center's commands: what a command changes is recorded as its own."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from jobcenter.audit.context import acting_as


class AuditedCommand(BaseCommand):
    """A command whose changes the audit log records as `command:<name>` on this host,
    however it is run (`manage.py`, `call_command` from code or a test)."""

    def execute(self, *args: Any, **options: Any) -> Any:
        name = type(self).__module__.rsplit(".", 1)[-1]
        with acting_as(f"command:{name}"):
            return super().execute(*args, **options)
