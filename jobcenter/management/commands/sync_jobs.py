"""`manage.py sync_jobs [--account NAME ...]`: sync now, in this process."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from jobcenter.management.base import AuditedCommand
from jobcenter.models import ProviderAccount, SyncOutcome, SyncTrigger
from jobcenter.sync.engine import sync_account

OK_OUTCOMES = {SyncOutcome.SUCCEEDED, SyncOutcome.PARTIAL}


class Command(AuditedCommand):
    help = "Sync provider accounts now; exit status 1 when any sync failed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--account", action="append", default=[], help="account name (repeatable)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        names = options["account"]
        accounts = ProviderAccount.objects.filter(enabled=True).order_by("name")
        if names:
            accounts = ProviderAccount.objects.filter(name__in=names).order_by("name")
            missing = set(names) - {a.name for a in accounts}
            if missing:
                raise CommandError(f"no such account: {', '.join(sorted(missing))}")
        if not accounts:
            self.stdout.write("no enabled accounts to sync")
            return
        failed = []
        for account in accounts:
            run = sync_account(
                account.pk,
                trigger=SyncTrigger.COMMAND,
                on_progress=lambda line, name=account.name: self.stdout.write(f"  {name} / {line}"),
            )
            self.stdout.write(
                f"{account.name}: {run.outcome} — {run.pages} pages, {run.requests} requests, "
                f"{run.retries} retries; {run.jobs_seen} jobs seen, {run.jobs_created} new, "
                f"{run.jobs_changed} changed, {run.jobs_gone} gone, "
                f"{run.snapshots_written} snapshots, {run.errors_fetched} error records"
                + (f"\n  error: {run.error}" if run.error else "")
            )
            if run.outcome not in OK_OUTCOMES:
                failed.append(account.name)
        if failed:
            raise CommandError(f"sync failed for: {', '.join(failed)}")
