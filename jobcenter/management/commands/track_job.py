"""`manage.py track_job --account NAME --kind KIND --id ID`: poll a job by id until it ends."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from jobcenter.management.base import AuditedCommand
from jobcenter.management.errors import format_validation_error
from jobcenter.sync.tracking import track_job


class Command(AuditedCommand):
    help = "Track a provider job by id (for providers without a job list, or old jobs)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--account", required=True, help="account name or id")
        parser.add_argument("--kind", required=True, help="job kind, e.g. events-batch-import")
        parser.add_argument("--id", required=True, dest="external_id", help="the provider's job id")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            job, created = track_job(options["account"], options["kind"], options["external_id"])
        except ValidationError as exc:
            raise CommandError(format_validation_error(exc)) from None
        verb = "now tracking" if created else "already known; tracking"
        self.stdout.write(
            f"{verb} {job.kind} {job.external_id} on {job.account.name} (job {job.pk})"
        )
