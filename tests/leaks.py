"""Checks that a secret appears nowhere staff or an attacker could read it."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import connection
from django.test import Client
from django.urls import reverse

from jobcenter.models import ProviderAccount, SyncRun


def assert_not_in_database(secret: str) -> None:
    """The secret appears in clear nowhere in the database: the file itself on SQLite (what
    was committed), every table on PostgreSQL."""
    if connection.vendor == "sqlite":
        connection.close()  # flush to the file (WAL included)
        name = Path(settings.DATABASES["default"]["TEST"]["NAME"])
        for path in [name, *name.parent.glob(name.name + "-*")]:
            assert secret.encode() not in path.read_bytes(), path
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
