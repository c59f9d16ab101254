"""Checks that a secret appears nowhere staff or an attacker could read it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.test import Client
from django.urls import reverse

from jobcenter.models import ProviderAccount, SyncRun

# Reads the files named on its command line and prints those holding stdin's bytes.
SCAN_FILES = (
    "import sys; secret = sys.stdin.buffer.read(); "
    "print(*(p for p in sys.argv[1:] if secret in open(p, 'rb').read()), sep='\\n')"
)


def assert_not_in_database(secret: str) -> None:
    """The secret appears in clear nowhere in the database: the files themselves on SQLite
    (what was committed, the rate-limit side file and the WALs included), every table on
    PostgreSQL.

    The files are read by a child process: POSIX record locks belong to a process, so
    opening and closing a database file here would drop every SQLite lock this process's
    connections hold on it, and the next process to open it would rebuild the WAL index
    under their feet ("file is not a database", then a corrupt file).
    """
    if connection.vendor == "sqlite":
        connection.close()  # flush to the file (WAL included)
        name = Path(settings.DATABASES["default"]["TEST"]["NAME"])
        paths = [str(p) for p in [name, *name.parent.glob(name.name + "-*")]]
        found = subprocess.run(
            [sys.executable, "-c", SCAN_FILES, *paths],
            input=secret.encode(),
            capture_output=True,
            check=True,
        ).stdout.decode()
        assert not found.strip(), found
        return
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            assert secret not in repr(cursor.fetchall()), table


def admin_pages_for(client: Client, account: ProviderAccount, run: SyncRun) -> list[str]:
    """The admin pages that show an account and its runs, as HTML."""
    urls = [
        reverse("admin:jobcenter_provideraccount_change", args=[account.pk]),
        reverse("admin:jobcenter_provideraccount_changelist"),
        reverse("admin:jobcenter_syncrun_changelist"),
        reverse("admin:jobcenter_syncrun_change", args=[run.pk]),
        reverse("admin:jobcenter_job_changelist"),
    ]
    pages = []
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        pages.append(response.content.decode())
    return pages


def assert_secret_nowhere(
    secret: str, *, client: Client, account: ProviderAccount, run: SyncRun, log_text: str
) -> None:
    assert secret not in run.error
    account.refresh_from_db()
    assert secret not in account.last_error
    for page in admin_pages_for(client, account, run):
        assert secret not in page
    assert secret not in log_text
    assert_not_in_database(secret)
