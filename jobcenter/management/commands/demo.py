"""`manage.py demo`: the whole Job Center on loopback, with sandbox providers.

Migrates, creates the dispatch schedule (`setup_schedules`), starts the sandbox,
configures one sandbox account per provider (synced every minute), runs a first sync of
each, creates an admin user with a printed random password, then starts the web server
and the django-q2 cluster, which keeps every account syncing on its interval. It runs
until Ctrl-C or SIGTERM, then stops every process it started.

Each child leads its own process group: the demo stops them in order (the cluster first,
so a sync in flight ends before the sandbox goes), then kills what is left of each group,
which catches the workers the cluster forked even if the cluster itself died first.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError, CommandParser
from django.utils import timezone
from django_q.models import Schedule

from jobcenter.alerts.defaults import use_channel_for_default_rules
from jobcenter.alerts.delivery import deliver_pending_now
from jobcenter.management.base import AuditedCommand
from jobcenter.models import AlertChannel, ProviderAccount, SyncTrigger
from jobcenter.observability.files import ENVIRONMENT_VARIABLE as METRICS_DIR
from jobcenter.sync.engine import sync_account
from jobcenter.sync.tracking import track_job
from jobcenter.tasks import SCHEDULE_NAME
from providers import get_provider
from providers.sandbox.client import SandboxClient, sandbox_command, wait_until_healthy

# How long the cluster may take to finish a sync in flight and stop its workers, and
# the other children to exit, before what is left of their groups is killed.
CLUSTER_STOP_SECONDS = 30.0
CHILD_STOP_SECONDS = 10.0


def stop_on_sigterm(signum: int, frame: object) -> None:
    """Stop like Ctrl-C, so the sandbox, web server and cluster are stopped too."""
    raise KeyboardInterrupt


class Children:
    """The demo's child processes, each the leader of its own process group.

    Own groups, because Ctrl-C in a terminal signals the whole foreground group at once:
    the cluster would lose its workers mid-sync and the sandbox would vanish under them.
    Here only the demo gets it, and `stop` takes the children down in order.
    """

    def __init__(self) -> None:
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(args, process_group=0, **kwargs)
        self.processes.append((name, process))
        return process

    def exited(self) -> tuple[str, int] | None:
        """(name, exit code) of a child that has stopped, else None."""
        for name, process in self.processes:
            if process.poll() is not None:
                return name, process.returncode
        return None

    def stop(self) -> None:
        """Stop every child gracefully, in reverse start order, then kill their groups."""
        # A second Ctrl-C must not cut the stop short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for name, process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # as Ctrl-C: qcluster stops its workers
            wait = CLUSTER_STOP_SECONDS if name == "cluster" else CHILD_STOP_SECONDS
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=wait)
        for _, process in self.processes:
            # What is left of the group; ProcessLookupError when all of it has exited.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class Command(AuditedCommand):
    help = "Run a local demo: sandbox providers, the cluster syncing, the admin on 127.0.0.1."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000, help="web server port")
        parser.add_argument("--sandbox-port", type=int, default=8765, help="sandbox port")
        parser.add_argument("--jobs-per-kind", type=int, default=25)

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.JOBCENTER_ALLOW_LOOPBACK_PROVIDERS:
            raise CommandError("the demo needs DEBUG=1 (sandbox accounts live on loopback)")
        # Links in alert messages point at this demo's web server (children inherit it).
        os.environ.setdefault("JOBCENTER_SITE_URL", f"http://127.0.0.1:{options['port']}")
        settings.JOBCENTER_SITE_URL = os.environ["JOBCENTER_SITE_URL"]
        # /metrics: this process, the web server and the cluster count into one directory
        # (jobcenter.observability.files), a fresh one unless the environment names one.
        metrics_dir = ""
        if not os.environ.get(METRICS_DIR):
            metrics_dir = os.environ[METRICS_DIR] = tempfile.mkdtemp(prefix="jc-metrics-")
        children = Children()
        signal.signal(signal.SIGTERM, stop_on_sigterm)
        try:
            call_command("migrate", interactive=False, verbosity=0)
            self.stdout.write("database migrated")
            call_command("setup_schedules", stdout=self.stdout)
            sandbox = self.start_sandbox(children, options)
            accounts = self.configure_accounts(sandbox)
            self.track_unlisted_jobs(sandbox, accounts)
            password = self.admin_user()
            self.console_alerts()
            web = self.manage("runserver", f"127.0.0.1:{options['port']}", "--noreload")
            children.start("web server", web)
            for account, _ in accounts:
                self.sync(account)
            deliver_pending_now()  # the cluster is not up yet: print the first alerts here
            self.start_cluster(children, accounts)
            self.wait_for_web_server(children, options["port"])
            self.stdout.write(
                self.style.SUCCESS(
                    f"\nJob Center is up: http://127.0.0.1:{options['port']}/admin/\n"
                    f"  user: admin\n  password: {password}\n"
                    f"Metrics: http://127.0.0.1:{options['port']}/metrics\n"
                    "The cluster syncs every account each minute; press Ctrl-C to stop.\n"
                )
            )
            self.watch(children)
        except KeyboardInterrupt:
            self.stdout.write("\nstopping")
        finally:
            children.stop()
            if metrics_dir:
                shutil.rmtree(metrics_dir, ignore_errors=True)

    @staticmethod
    def wait_for_web_server(children: Children, port: int, seconds: float = 60) -> None:
        """Say the demo is up only once its web server answers: the first syncs can end
        before `runserver` has bound its port."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if children.exited() is not None:
                return  # watch() reports which child stopped, and why
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return
            time.sleep(0.1)
        raise CommandError(f"the web server did not answer on port {port}")

    @staticmethod
    def manage(*args: str) -> list[str]:
        """A manage.py command line in this interpreter; children inherit the environment,
        so they use the same settings and database."""
        return [sys.executable, str(settings.BASE_DIR / "manage.py"), *args]

    def start_sandbox(self, children: Children, options: dict[str, Any]) -> SandboxClient:
        port = options["sandbox_port"]
        process = children.start(
            "sandbox",
            sandbox_command(
                port, ["--jobs-per-kind", str(options["jobs_per_kind"]), "--seed", "1"]
            ),
            stdout=subprocess.DEVNULL,
        )
        try:
            sandbox = wait_until_healthy(process, port)
        except RuntimeError as exc:  # its own error (a port in use, say) is printed above
            raise CommandError(f"the sandbox did not start on port {port}: {exc}") from None
        self.stdout.write(f"sandbox providers on {sandbox.root}")
        return sandbox

    def configure_accounts(self, sandbox: SandboxClient) -> list[tuple[ProviderAccount, str]]:
        """One account per sandbox provider with that server's fresh credentials, each
        with its sandbox account id. Due at once: the cluster's first dispatch syncs it."""
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
            account.next_sync_at = timezone.now()
            account.blocked_until = None
            account.set_credentials(sandbox.credentials(described))
            account.save()
            accounts.append((account, described["id"]))
            self.stdout.write(f"account {account.name!r} → {account.base_url}")
        return accounts

    def track_unlisted_jobs(
        self, sandbox: SandboxClient, accounts: list[tuple[ProviderAccount, str]]
    ) -> None:
        """Jobs of kinds no listing shows are known only by the ids their client recorded:
        have the sandbox create a few, as a client would, and track them."""
        for account, sandbox_id in accounts:
            for kind in get_provider(account.provider).tracked_kinds():
                created = [
                    sandbox.control(sandbox_id, "create_jobs", kind=kind.name, count=2, size=25),
                    sandbox.control(
                        sandbox_id, "create_jobs", kind=kind.name, count=1, size=60, failed=9
                    ),
                ]
                for answer in created:
                    for external_id in answer["ids"]:
                        job, _ = track_job(account, kind.name, external_id)
                        self.stdout.write(f"tracking {kind.label} {job.external_id}")

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

    def start_cluster(
        self, children: Children, accounts: list[tuple[ProviderAccount, str]]
    ) -> None:
        """Start qcluster with the schedule and every account due now.

        django-q2's scheduler first looks at schedules about 30 s after the cluster
        starts; with `next_run` now, that first look dispatches every account.
        """
        now = timezone.now()
        Schedule.objects.filter(name=SCHEDULE_NAME).update(next_run=now)
        ProviderAccount.objects.filter(pk__in=[a.pk for a, _ in accounts]).update(next_sync_at=now)
        children.start("cluster", self.manage("qcluster"))

    def watch(self, children: Children) -> None:
        while True:
            exited = children.exited()
            if exited is not None:
                name, code = exited
                raise CommandError(f"the demo's {name} stopped (exit {code})")
            time.sleep(0.5)
