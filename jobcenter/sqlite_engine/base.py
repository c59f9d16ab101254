"""Django's SQLite backend, with two changes the sync engine's page writes need.

- SQLite since 3.32 binds up to 32,766 parameters per statement; Django assumes 999.
  With 999, every bulk write of a 100-job page splits into several statements; with the
  real limit a page is written in a constant handful.
- Django rewrites every statement's `%s` placeholders to `?` with a regular expression.
  A page's multi-row INSERT holds thousands of them, and the same statement comes back
  page after page: the rewrite is remembered.
"""

from __future__ import annotations

import functools
from typing import Any

from django.db.backends.sqlite3 import base, features
from django.utils.functional import cached_property

from jobcenter.sqlite_engine import checkpoints


class DatabaseFeatures(features.DatabaseFeatures):
    @cached_property
    def max_query_params(self) -> int:  # type: ignore[override]
        return 32766 if base.Database.sqlite_version_info >= (3, 32, 0) else 999


@functools.lru_cache(maxsize=256)
def _qmark_style(query: str) -> str:
    """Django's own "format" to "qmark" rewrite, once per distinct statement."""
    return base.FORMAT_QMARK_REGEX.sub("?", query).replace("%%", "%")


class SQLiteCursorWrapper(base.SQLiteCursorWrapper):
    def convert_query(self, query: str, *, param_names: list[str] | None = None) -> str:
        if param_names is None:
            return _qmark_style(query)
        return super().convert_query(query, param_names=param_names)


class DatabaseWrapper(base.DatabaseWrapper):
    features_class = DatabaseFeatures

    def create_cursor(self, name: str | None = None) -> Any:
        return self.connection.cursor(factory=SQLiteCursorWrapper)

    def get_new_connection(self, conn_params: dict) -> Any:
        connection = super().get_new_connection(conn_params)
        if checkpoints.in_background():  # a sync's helper thread checkpoints meanwhile
            connection.execute("PRAGMA wal_autocheckpoint=0")
        return connection
