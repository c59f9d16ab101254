"""Job Center's SQLite backend: Django's, with the statement rewrite remembered."""

from __future__ import annotations

import pytest
from django.db import connection

from jobcenter.sqlite_engine.base import _qmark_style

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "sqlite", reason="the SQLite backend only"),
]


def test_placeholders_are_rewritten_as_django_does_and_literals_survive() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s, '100%%', %s || '%%s'", [1, "a"])
        assert cursor.fetchone() == (1, "100%", "a%s")
        cursor.execute("SELECT %(a)s || %(b)s", {"a": "x", "b": "y"})  # pyformat: Django's
        assert cursor.fetchone() == ("xy",)


def test_a_statement_seen_again_is_not_rewritten_again() -> None:
    _qmark_style.cache_clear()
    query = "SELECT " + ", ".join(["%s"] * 500)
    with connection.cursor() as cursor:
        for _ in range(3):
            cursor.execute(query, list(range(500)))
            assert cursor.fetchone() == tuple(range(500))
    info = _qmark_style.cache_info()
    assert (info.misses, info.hits) == (1, 2)
