"""`manage.py setup_schedules`: create (or correct) the every-minute dispatch schedule.

With JOBCENTER_PRUNE_DAILY on it also keeps the daily prune schedule
(`jobcenter.sync.pruning.ensure_prune_schedule`), and removes it when the setting is off.

Also creates the default alert rules (inactive until staff give them a channel), and stops
any stored schedule that runs something other than Job Center's own tasks (saved before
schedules were checked on save; kept, with repeats 0, for someone to look at).
"""

from __future__ import annotations

from typing import Any

from jobcenter.alerts.defaults import ensure_default_rules
from jobcenter.management.base import AuditedCommand
from jobcenter.sync.pruning import PRUNE_SCHEDULE, ensure_prune_schedule
from jobcenter.tasks import ensure_schedule, stop_foreign_schedules


class Command(AuditedCommand):
    help = "Create the django-q2 schedule that dispatches due syncs every minute (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        for foreign in stop_foreign_schedules():
            self.stderr.write(
                f"stopped schedule {foreign.pk} {foreign.name!r}: it runs {foreign.func!r}"
                + (f" with hook {foreign.hook!r}" if foreign.hook else "")
                + ", not one of Job Center's tasks"
            )
        schedule = ensure_schedule()
        for rule in ensure_default_rules():
            self.stdout.write(
                f"alert rule {rule.name!r}: " + ("active" if rule.is_active else "needs a channel")
            )
        self.stdout.write(
            f"schedule {schedule.name!r}: every minute, next run {schedule.next_run:%H:%M:%S}"
        )
        prune = ensure_prune_schedule()
        if prune is None:
            self.stdout.write(f"schedule {PRUNE_SCHEDULE!r}: off (JOBCENTER_PRUNE_DAILY)")
        else:
            self.stdout.write(
                f"schedule {prune.name!r}: daily, next run {prune.next_run:%Y-%m-%d %H:%M} UTC"
            )
