"""Exports as streams of bytes: rows by keyset chunks, written block by block.

An export of a million rows must neither time out nor fill memory, so rows are read by
keyset pagination: chunks of CHUNK_SIZE rows, `WHERE (key, id) > last` over the
queryset's own ordering, each chunk a short query of its own (no server-side cursor,
no read transaction held open for minutes on SQLite), with a constant number of
queries per chunk. Each chunk is written out as one block of bytes before the next is
read.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from django.db import connections
from django.db.models import DateTimeField, Expression, F, Field, QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone

from jobcenter.exports.columns import Column, CsvLine, UtcText, same
from jobcenter.exports.specs import FORMATS, ExportSpec
from jobcenter.queries.keyset import ordering_key, segments_after

CHUNK_SIZE = 5000
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson"}
BOM = "\ufeff"


def keyset_chunks(
    queryset: QuerySet,
    columns: Sequence[str | Expression],
    chunk_size: int | None = None,
) -> Iterator[list[tuple]]:
    """`columns` of every row of `queryset`, in its order, `chunk_size` rows per query.

    The queryset must be ordered by a key that ends with the id (every FilterSet orders
    so). Each chunk starts strictly after the last row of the one before, so rows are
    neither skipped nor repeated while the key's values do not change during the export.

    A column is a field path or an expression (a cell the database writes). Values are
    the database driver's own, without Django's per-value converters (the column kinds'
    converters in `columns` take them as they come): times as SQLite text or PostgreSQL datetimes,
    booleans as 0/1 on SQLite, JSON as its text.

    Each row holds the `columns`, then the key columns they do not name as plain fields
    (the next chunk's position). A time key is read as UtcText where the database has
    it: its text parses back to the stored time, and SQLite's driver would otherwise
    parse every row's time in Python.
    """
    chunk_size = chunk_size or CHUNK_SIZE
    key = ordering_key(queryset)
    connection = connections[queryset.db]
    selected = list(columns)
    positions = []
    for part in key:
        if part.name in selected:
            positions.append(selected.index(part.name))
            continue
        positions.append(len(selected))
        as_text = isinstance(part.field, DateTimeField) and connection.vendor in UtcText.VENDORS
        selected.append(UtcText(F(part.name)) if as_text else part.name)
    values: list[Any] | None = None
    while True:
        rows: list[tuple] = []
        for segment in segments_after(queryset, key, values, False):
            sql, params = segment.values_list(*selected)[
                : chunk_size - len(rows)
            ].query.sql_with_params()
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                rows += cursor.fetchall()
            if len(rows) == chunk_size:
                break
        if rows:
            yield rows
        if len(rows) < chunk_size:
            return
        last = rows[-1]
        values = [_key_value(part.field, last[i]) for part, i in zip(key, positions, strict=True)]


def _key_value(field: Field, raw: Any) -> Any:
    """A raw key value as a lookup takes it (SQLite's time text as an aware datetime)."""
    if isinstance(raw, str) and isinstance(field, DateTimeField):
        raw = datetime.fromisoformat(raw)
    if isinstance(raw, datetime) and raw.tzinfo is None:
        return raw.replace(tzinfo=UTC)  # Django stores UTC
    return raw


def _raw_json(value: Any) -> str:
    """Stored JSON as one line of JSON text, re-encoded only when it is not one already."""
    if isinstance(value, str) and "\n" not in value and "\r" not in value:
        return value
    if isinstance(value, str):
        value = json.loads(value)
    return json.dumps(value, separators=(",", ":"))


def _converted(
    rows: list[tuple], width: int, active: list[tuple[int, Callable[[Any], Any]]]
) -> Iterator[list[Any]]:
    """Each row's first `width` values, with the `active` converters applied in place."""
    for row in rows:
        values = list(row[:width])
        for i, convert in active:
            values[i] = convert(values[i])
        yield values


def export_chunks(
    spec: ExportSpec,
    fmt: str,
    queryset: QuerySet,
    *,
    chunk_size: int | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> Iterator[bytes]:
    """The export as blocks of bytes: the header at once, then one block per chunk.

    `on_rows` is told the number of rows in each block (the command's progress bar).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}")
    # The database writes the cells where it can (SQLite, PostgreSQL); Python elsewhere.
    in_database = connections[queryset.db].vendor in UtcText.VENDORS
    if in_database and fmt == "csv":
        line = CsvLine(*(_csv_cell(column) for column in spec.columns))
        chunks = _csv_line_chunks(keyset_chunks(queryset, [line], chunk_size))
    else:
        chunks = _python_chunks(spec, fmt, queryset, chunk_size, in_database)
    header = io.StringIO()
    if fmt == "csv":
        csv.writer(header).writerow(spec.header())
        yield (BOM + header.getvalue()).encode()
    for text, count in chunks:
        # "replace": a lone surrogate in stored text must not end the download midway.
        yield text.encode("utf-8", "replace")
        if on_rows is not None:
            on_rows(count)


def _csv_cell(column: Column) -> Expression:
    """The CSV cell of a column as the database writes it."""
    written = column.kind.csv_sql
    return written(F(column.source)) if written else F(column.source)


def _csv_line_chunks(chunks: Iterator[list[tuple]]) -> Iterator[tuple[str, int]]:
    """Each chunk of database-written CSV lines as one text, and its number of rows."""
    for rows in chunks:
        yield "".join([row[0] + "\r\n" for row in rows]), len(rows)


def _python_chunks(
    spec: ExportSpec, fmt: str, queryset: QuerySet, chunk_size: int | None, in_database: bool
) -> Iterator[tuple[str, int]]:
    """Each chunk as text, and its number of rows, with the cells converted in Python."""
    columns: list[str | Expression] = []
    converters = []
    for column in spec.columns:
        written = column.kind.json_sql if in_database and fmt == "ndjson" else None
        columns.append(written(F(column.source)) if written else column.source)
        python = column.kind.csv if fmt == "csv" else column.kind.json
        converters.append(same if written else python)
    if fmt == "ndjson":
        columns.append(spec.raw)
    width = len(spec.columns)
    # Only the columns whose converter does something are touched in each row.
    active = [(i, convert) for i, convert in enumerate(converters) if convert is not same]
    names = spec.header()
    raw_key = f',"{spec.raw}":'
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for rows in keyset_chunks(queryset, columns, chunk_size):
        buffer.seek(0)
        buffer.truncate()
        if fmt == "csv":
            writer.writerows(_converted(rows, width, active))
        else:
            for row in rows:
                record = {
                    name: convert(value)
                    for name, convert, value in zip(names, converters, row, strict=False)
                }
                # The stored JSON text goes in as it is: no decoding and encoding again.
                line = json.dumps(record, separators=(",", ":"))
                buffer.write(f"{line[:-1]}{raw_key}{_raw_json(row[width])}}}\n")
        yield buffer.getvalue(), len(rows)


def export_filename(
    spec: ExportSpec, fmt: str, when: datetime | None = None, label: str = ""
) -> str:
    """`jobcenter-jobs-20261123T164500Z.csv`: what, (whose), and when, in UTC."""
    stamp = (when or timezone.now()).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    middle = "-" + re.sub(r"[^A-Za-z0-9._-]+", "_", label)[:120] if label else ""
    return f"jobcenter-{spec.name}{middle}-{stamp}.{fmt}"


def streaming_response(
    spec: ExportSpec, fmt: str, queryset: QuerySet, *, label: str = ""
) -> StreamingHttpResponse:
    """The export as a download, streamed chunk by chunk."""
    response = StreamingHttpResponse(
        export_chunks(spec, fmt, queryset), content_type=CONTENT_TYPES[fmt]
    )
    filename = export_filename(spec, fmt, label=label)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response
