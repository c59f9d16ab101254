"""Fast inserts for the sync engine's page writes.

`QuerySet.bulk_create` compiles one multi-row INSERT in Python, preparing every value of
every row through the field machinery: for a page of 100 jobs, 100 snapshots and a few
hundred error records that compilation costs more than the database does. Here the SQL
is one parameterized statement run with `executemany` (a C loop in sqlite3) or one COPY
(PostgreSQL), and only the fields that need it (JSON, datetimes) are prepared, once per
value.

Rows may be model instances or plain dicts keyed by attribute name (missing keys take
the field's default): a new job, its snapshots and error records are only ever
inserted, and building a model instance for each cost a fifth of a page write. A JSON
value already encoded (`JSONText`) is written as it is: a job and its first snapshot
carry the same payload, encoded once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from django.conf import settings
from django.db import connections, models, router

Row = models.Model | Mapping[str, Any]


class JSONText(str):
    """A JSON document already encoded, for a JSONField column of `insert_rows` rows."""

    __slots__ = ()


def _datetime_preparer(field: models.Field, connection: Any) -> Callable[[Any], Any]:
    """Django's own preparation, with a shortcut for the aware UTC times the sync writes.

    Django's SQLite backend stores naive UTC text, `str(naive datetime)`; PostgreSQL's
    driver takes aware datetimes as they are. Anything else takes Django's path.
    """

    def django_way(value: Any) -> Any:
        return field.get_db_prep_save(value, connection)

    if not settings.USE_TZ or connection.vendor not in ("sqlite", "postgresql"):
        return django_way
    sqlite = connection.vendor == "sqlite"
    last: list[Any] = [None, None]  # the value prepared last, and what it became

    def prepare(value: Any) -> Any:
        if value is None:
            return None
        if value is last[0]:  # a page's rows share one "now": prepared once
            return last[1]
        if type(value) is datetime and value.tzinfo is UTC:
            prepared = value.replace(tzinfo=None).isoformat(" ") if sqlite else value
        else:
            prepared = django_way(value)
        last[0], last[1] = value, prepared
        return prepared

    return prepare


def _preparer(field: models.Field, connection: Any) -> Callable[[Any], Any] | None:
    if isinstance(field, models.DateTimeField):
        return _datetime_preparer(field, connection)
    if isinstance(field, models.JSONField):
        # Both backends take JSON text for a JSON column (PostgreSQL casts it to jsonb).
        return lambda value: (
            str(value) if type(value) is JSONText else field.get_db_prep_save(value, connection)
        )
    if isinstance(field, models.DateField):
        return lambda value: field.get_db_prep_save(value, connection)
    return None


def returns_inserted_rows(connection: Any) -> bool:
    """Whether `insert_rows(..., returning=...)` is the cheapest way to learn new ids.

    On PostgreSQL it is not: Django's psycopg cursors bind on the client, so a multi-row
    INSERT ... RETURNING is a statement of literal values the server parses and plans
    anew each time (170 µs a job row), where COPY and one indexed read of the ids cost
    a third of that.
    """
    return connection.features.can_return_rows_from_bulk_insert and not _copies(connection)


def _copies(connection: Any) -> bool:
    return connection.vendor == "postgresql"


def insert_rows(
    model: type[models.Model], rows: Sequence[Row], returning: Sequence[str] = ()
) -> list[tuple[Any, ...]]:
    """INSERT `rows` (primary keys left to the database) in one statement: executemany,
    or COPY on PostgreSQL.

    With `returning` (attribute names), it is one multi-row INSERT ... RETURNING per
    chunk of rows the database's parameter limit allows, and the result is the returned
    values, in no particular order (SQLite promises none): return a key with the id.
    Callers check `returns_inserted_rows` first.
    """
    if not rows:
        return []
    connection = connections[router.db_for_write(model)]
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    one_row = "({})".format(", ".join(["%s"] * len(fields)))
    target = "{} ({})".format(
        quote(model._meta.db_table), ", ".join(quote(f.column) for f in fields)
    )
    sql = f"INSERT INTO {target} VALUES "  # noqa: S608 (names from model meta, quoted)
    names = [f.attname for f in fields]
    preparers = [
        (i, prepare) for i, f in enumerate(fields) if (prepare := _preparer(f, connection))
    ]
    whole_row = itemgetter(*names)
    params = []
    for row in rows:
        if isinstance(row, models.Model):
            values = [getattr(row, name) for name in names]
        else:
            try:
                values = list(whole_row(row))
            except KeyError:  # a partial row: the missing columns take their defaults
                values = [
                    row[name] if name in row else field.get_default()
                    for name, field in zip(names, fields, strict=True)
                ]
        for i, prepare in preparers:
            values[i] = prepare(values[i])
        params.append(values)
    with connection.cursor() as cursor:
        if not returning and _copies(connection):
            _copy(connection, cursor, target, params)
            return []
        if not returning:
            cursor.executemany(sql + one_row, params)
            return []
        columns = {f.attname: f.column for f in model._meta.concrete_fields}
        suffix = " RETURNING " + ", ".join(quote(columns[name]) for name in returning)
        per_statement = (connection.features.max_query_params or 65_535) // len(fields)
        returned: list[tuple[Any, ...]] = []
        for start in range(0, len(params), per_statement):
            chunk = params[start : start + per_statement]
            cursor.execute(
                sql + ", ".join([one_row] * len(chunk)) + suffix,
                [value for values in chunk for value in values],
            )
            returned.extend(cursor.fetchall())
        return returned


def _copy(connection: Any, cursor: Any, target: str, params: list) -> None:
    """The rows by PostgreSQL's COPY: one statement, no INSERT parsed and planned a row.

    Django's psycopg cursors bind parameters on the client, so executemany sent each row
    as an INSERT of its own, literal values and all (100 µs a snapshot row, 70 µs an error
    record). COPY streams them into `target` ("table (columns)", quoted). Logged as
    Django logs its queries (query counts in tests and the debug toolbar see it).
    """
    statement = f"COPY {target} FROM STDIN"
    started = time.monotonic()
    with connection.wrap_database_errors, cursor.cursor.copy(statement) as copy:
        for values in params:
            copy.write_row(values)
    if connection.queries_logged:
        connection.queries_log.append(
            {
                "sql": f"{statement} -- {len(params)} rows",
                "time": f"{time.monotonic() - started:.3f}",
            }
        )
