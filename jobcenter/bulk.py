"""Fast inserts for the sync engine's page writes.

`QuerySet.bulk_create` compiles one multi-row INSERT in Python, preparing every value of
every row through the field machinery: for a page of 100 jobs, 100 snapshots and a few
hundred error records that compilation costs more than the database does. Here the SQL
is one parameterized statement run with `executemany` (a C loop in sqlite3, a pipeline in
psycopg), and only the fields that need it (JSON, datetimes) go through Django's value
preparation, once per value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.db import connections, models, router


def _preparer(field: models.Field, connection: Any) -> Callable[[Any], Any]:
    if isinstance(field, models.JSONField | models.DateTimeField | models.DateField):
        return lambda value: field.get_db_prep_save(value, connection)
    return lambda value: value


def insert_rows(model: type[models.Model], objs: Sequence[models.Model]) -> None:
    """INSERT `objs` (primary keys left to the database) in one executemany statement."""
    if not objs:
        return
    connection = connections[router.db_for_write(model)]
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    sql = "INSERT INTO {} ({}) VALUES ({})".format(  # noqa: S608 (names from model meta, quoted)
        quote(model._meta.db_table),
        ", ".join(quote(f.column) for f in fields),
        ", ".join(["%s"] * len(fields)),
    )
    preparers = [(f.attname, _preparer(f, connection)) for f in fields]
    rows = [[prepare(getattr(obj, attname)) for attname, prepare in preparers] for obj in objs]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)
