"""`manage.py demo`: a working Job Center on loopback, with sandbox providers.

Migrates, starts the sandbox, the django-q2 cluster and the web server, configures one
sandbox account per provider (synced every minute by the schedule), runs a first sync,
creates an admin user with a printed random password, and runs until Ctrl-C.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from jobcenter.alerts.defaults import use_channel_for_default_rules
from jobcenter.alerts.delivery import deliver_pending_now
from jobcenter.models import AlertChannel, ProviderAccount, SyncTrigger
from jobcenter.sync.engine import sync_account
from jobcenter.sync.tracking import track_job
from providers import get_provider
from providers.sandbox.client import SandboxClient, start_sandbox, stop_sandbox


def stop_on_sigterm(signum: int, frame: object) -> None:
    """Stop like Ctrl-C, so the sandbox, web server and cluster are stopped too."""
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = "Run a local demo: sandbox providers, a first sync, the admin on 127.0.0.1."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000, help="web server port")
        parser.add_argument("--sandbox-port", type=int, default=8765)
        parser.add_argument("--jobs-per-kind", type=int, default=25)

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.JOBCENTER_ALLOW_LOOPBACK_PROVIDERS:
            raise CommandError("the demo needs DEBUG=1 (sandbox accounts live on loopback)")
        children: list[subprocess.Popen[bytes]] = []
        signal.signal(signal.SIGTERM, stop_on_sigterm)
        try:
            call_command("migrate", interactive=False, verbosity=0)
            self.stdout.write("database migrated")
            sandbox_process, sandbox = start_sandbox(
                options["sandbox_port"],
                ["--jobs-per-kind", str(options["jobs_per_kind"]), "--seed", "1"],
            )
            children.append(sandbox_process)
            self.stdout.write(f"sandbox providers on {sandbox.root}")
            accounts = self.configure_accounts(sandbox)
            self.track_fullstory_batches(sandbox, accounts)
            password = self.admin_user()
            web = subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "runserver",
                    f"127.0.0.1:{options['port']}",
                    "--noreload",
                ],
                cwd=settings.BASE_DIR,
            )
            children.append(web)
            self.console_alerts()
            for account in accounts:
                self.sync(account)
            deliver_pending_now()  # no cluster runs yet: print the first alerts here
            self.stdout.write(
                self.style.SUCCESS(
                    f"\nJob Center is up: http://127.0.0.1:{options['port']}/admin/\n"
                    f"  user: admin\n  password: {password}\n"
                    "The cluster syncs every account each minute; press Ctrl-C to stop.\n"
                )
            )
            self.watch(children)
        except KeyboardInterrupt:
            self.stdout.write("\nstopping")
        finally:
            for child in reversed(children):
                if child.poll() is None:
                    child.send_signal(signal.SIGINT)
            for child in children:
                try:
                    child.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    stop_sandbox(child)

    def configure_accounts(self, sandbox: SandboxClient) -> list[ProviderAccount]:
        """One account per sandbox provider, with that server's fresh credentials."""
        accounts = []
        for described in sandbox.accounts():
            slug = described["provider"]
            provider = get_provider(slug)
            account, _ = ProviderAccount.objects.get_or_create(
                name=f"Sandbox {provider.label}", defaults={"provider": slug}
            )
            account.provider = slug
            account.base_url = sandbox.base_url(slug)
            account.enabled = True
            account.sync_interval_minutes = 1
            account.next_sync_at = timezone.now() + timedelta(minutes=1)
            account.set_credentials(described["credentials"])
            account.save()
            accounts.append(account)
            self.stdout.write(f"account {account.name!r} → {account.base_url}")
        return accounts

    def track_fullstory_batches(
        self, sandbox: SandboxClient, accounts: list[ProviderAccount]
    ) -> None:
        """Fullstory lists no jobs: create a few batches as a client would, and track them."""
        account = next((a for a in accounts if a.provider == "fullstory"), None)
        if account is None:
            return
        key = account.get_credentials()["api_key"]
        batches = {
            "events-batch-import": [
                {
                    "user": {"uid": f"demo-{n}"},
                    "name": "Order Completed",
                    "properties": {"order": n, **({"jobcenter_fail": True} if n % 7 == 0 else {})},
                }
                for n in range(60)
            ],
            "users-batch-import": [
                {"uid": f"demo-{n}", "display_name": f"Demo customer {n}"} for n in range(25)
            ],
        }
        for kind, objects in batches.items():
            segment = "events" if kind.startswith("events") else "users"
            response = requests.post(
                f"{sandbox.base_url('fullstory')}/v2/{segment}/batch",
                json={"requests": objects},
                headers={"Authorization": f"Basic {key}"},
                timeout=10,
            )
            response.raise_for_status()
            job, _ = track_job(account, kind, response.json()["job"]["id"])
            self.stdout.write(f"tracking Fullstory {kind} {job.external_id}")

    def console_alerts(self) -> None:
        """The default alert rules, sent by email to the console backend (DEBUG)."""
        channel, _ = AlertChannel.objects.get_or_create(
            name="Demo email (console)",
            defaults={"kind": "email", "recipients": "admin@example.invalid"},
        )
        use_channel_for_default_rules(channel)
        self.stdout.write(f"alerts: default rules email {channel.recipients} (printed below)")

    def admin_user(self) -> str:
        password = secrets.token_urlsafe(12)
        user, _ = get_user_model().objects.get_or_create(
            username="admin", defaults={"email": "admin@example.invalid"}
        )
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        return password

    def sync(self, account: ProviderAccount) -> None:
        run = sync_account(account.pk, trigger=SyncTrigger.SCHEDULE)
        self.stdout.write(
            f"synced {account.name}: {run.outcome}, {run.jobs_seen} jobs seen, "
            f"{run.jobs_created} new, {run.jobs_changed} changed"
            + (f" ({run.error})" if run.error else "")
        )

    def watch(self, children: list[subprocess.Popen[bytes]]) -> None:
        while True:
            for child in children:
                if child.poll() is not None:
                    raise CommandError(f"a demo process stopped (exit {child.returncode})")
            time.sleep(0.5)
