"""SQLite since 3.32 binds up to 32,766 parameters per statement; Django assumes 999.

With 999, every bulk write of a 100-job page splits into several statements; with the
real limit a page is written in a constant handful, which is what the sync engine needs.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.sqlite3 import base, features
from django.utils.functional import cached_property

from jobcenter.sqlite_engine import checkpoints


class DatabaseFeatures(features.DatabaseFeatures):
    @cached_property
    def max_query_params(self) -> int:  # type: ignore[override]
        return 32766 if base.Database.sqlite_version_info >= (3, 32, 0) else 999


class DatabaseWrapper(base.DatabaseWrapper):
    features_class = DatabaseFeatures

    def get_new_connection(self, conn_params: dict) -> Any:
        connection = super().get_new_connection(conn_params)
        if checkpoints.in_background():  # a sync's helper thread checkpoints meanwhile
            connection.execute("PRAGMA wal_autocheckpoint=0")
        return connection
