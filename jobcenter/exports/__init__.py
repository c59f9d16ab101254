"""Streaming CSV and NDJSON exports of jobs, snapshots and error records.

One module for the three ways in (the API's /api/v1/exports/, the admin's export links
and actions, `manage.py export_jobs`), so a file looks the same whichever way staff
asked for it, and the filters are the list endpoints' own (`jobcenter.queries.filters`).

An export of a million rows must neither time out nor fill memory, so rows are read by
keyset pagination: chunks of CHUNK_SIZE rows, `WHERE (key, id) > last` over the
queryset's own ordering, each chunk a short query of its own (no server-side cursor,
no read transaction held open for minutes on SQLite), with a constant number of
queries per chunk. Each chunk is written out as one block of bytes before the next is
read. On SQLite and PostgreSQL the database writes the CSV cells itself (times, quoted
formulas, booleans; expressions below), so a CSV chunk goes to csv.writer as fetched.

CSV: UTF-8 with a byte-order mark (spreadsheets then read non-ASCII text right), one
header row, RFC 4180 quoting, times in UTC ISO 8601 (`2026-03-01T12:00:00Z`), booleans
`true`/`false`, empty cells for nulls, and every text cell that a spreadsheet would run
as a formula (starting with `=`, `+`, `-`, `@`, a tab or a carriage return) prefixed
with a single quote (OWASP's advice). NDJSON: one JSON object per line, the same keys
with JSON types, plus the raw provider payload (`payload`, or `raw` for error records).
The columns are documented in README.md ("Exports"); keep the two in step.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connections
from django.db.models import (
    CharField,
    DateTimeField,
    Expression,
    F,
    Field,
    Func,
    Model,
    QuerySet,
    Value,
)
from django.http import QueryDict, StreamingHttpResponse
from django.utils import timezone
from django_filters import FilterSet

from jobcenter.models import Job, JobError, JobSnapshot
from jobcenter.queries.filters import ErrorFilter, JobFilter, SnapshotFilter
from jobcenter.queries.keyset import ordering_key, segments_after

CHUNK_SIZE = 5000
EXPORT_PERMISSION = "jobcenter.export_job"
FORMATS = ("csv", "ndjson")
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson"}
BOM = "\ufeff"
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
FORMULA_CODES = ", ".join(str(ord(prefix)) for prefix in FORMULA_PREFIXES)  # for SQL


# --- cells ------------------------------------------------------------------------------


def spreadsheet_safe(value: object) -> str:
    """The cell as text; one a spreadsheet would run as a formula gets a leading quote."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def utc_text(value: datetime | str | None) -> str | None:
    """UTC ISO 8601 with a `Z`, as the API writes times (DRF's DateTimeField).

    Takes the database's own value: an aware datetime (PostgreSQL), or the naive UTC
    text Django stores in SQLite (`2026-03-01 12:00:00[.123456]`), rewritten without
    parsing it: at a million rows with ten times each, parsing was half the export.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if len(value) in (19, 26) and value[10] == " ":
            return f"{value[:10]}T{value[11:]}Z"
        value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class UtcText(Func):
    """A time column as `utc_text` writes it, formatted by the database itself.

    At a million rows with a dozen times each, turning driver datetimes into text in
    Python was most of an export's time; the database does it in C. The text is DRF's:
    microseconds only when there are any, `Z` for UTC, NULL stays NULL.
    """

    output_field = CharField()
    VENDORS = ("sqlite", "postgresql")

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # Django stores naive UTC text, `YYYY-MM-DD HH:MM:SS[.ffffff]`.
        template = "(REPLACE(%(expressions)s, ' ', 'T') || 'Z')"
        return self.as_sql(compiler, connection, template=template, **extra)

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # The UTC wall time's plain text cast is a third cheaper than to_char, whatever
        # the session's time zone. Only its two ISO shapes take it, `YYYY-MM-DD HH:MM:SS`
        # and six fraction digits (PostgreSQL trims a fraction's trailing zeros, DRF does
        # not); any other (a trimmed fraction, another DateStyle) takes to_char.
        utc = "(%(expressions)s AT TIME ZONE 'UTC')"
        text = f"({utc})::text"
        template = (
            f"CASE WHEN {text} LIKE '____-__-__ __:__:__' "
            f"OR {text} LIKE '____-__-__ __:__:__.______' "
            f"THEN replace({text}, ' ', 'T') || 'Z' "
            f"WHEN date_trunc('second', {utc}) = {utc} "
            f"""THEN to_char({utc}, 'YYYY-MM-DD"T"HH24:MI:SS"Z"') """
            f"""ELSE to_char({utc}, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') END"""
        )
        return self.as_sql(compiler, connection, template=template, **extra)


class CsvText(Func):
    """A text column as one CSV cell: `spreadsheet_safe`, then quoted as csv.writer does
    (QUOTE_MINIMAL: when it holds a comma, a double quote, CR or LF). NULL stays NULL.

    At a few million cells SQLite's GLOB is a third cheaper than `instr` and `substr`
    calls, and PostgreSQL's `strpos` and `ascii` cheaper than its `~` (by a quarter)
    or `left` (by a third).
    """

    output_field = CharField()
    template = (
        "CASE WHEN {quoted} THEN '\"' || CASE WHEN {formula} THEN '''' ELSE '' END "
        "|| replace(%(expressions)s, '\"', '\"\"') || '\"' "
        "WHEN {formula} THEN '''' || %(expressions)s ELSE %(expressions)s END"
    )

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        template = self.template.format(
            quoted="%(expressions)s GLOB '*[,\"\n\r]*'",
            formula="%(expressions)s GLOB '[=+@\t\r-]*'",
        )
        return self.as_sql(compiler, connection, template=template, **extra)

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        template = self.template.format(
            quoted=" OR ".join(
                f"strpos(%(expressions)s, {char}) > 0"
                for char in ("','", "'\"'", "chr(10)", "chr(13)")
            ),
            # The first character's code: no substring made, integers compared.
            formula=f"ascii(%(expressions)s) IN ({FORMULA_CODES})",
        )
        return self.as_sql(compiler, connection, template=template, **extra)


class CsvBool(Func):
    """A boolean column as `true`/`false` text (NULL stays NULL), by the database."""

    output_field = CharField()
    template = "CASE WHEN %(expressions)s THEN 'true' WHEN NOT %(expressions)s THEN 'false' END"


class CsvLine(Func):
    """One whole CSV line (without its line break) from cell expressions, by the database.

    A million rows are then a million strings from the driver, not thirty million cells
    for csv.writer to take apart again. One call of SQLite's `printf` (PostgreSQL's
    `format`) builds the line: `%s` writes NULL as nothing, as csv.writer writes None,
    and the line is built once instead of copied at every `||`. The format string is a
    parameter, so its `%s` never meets the driver's placeholders.
    """

    output_field = CharField()

    MAX_CELLS = 99  # PostgreSQL functions take at most 100 arguments

    def __init__(self, *cells: Expression) -> None:
        if len(cells) > self.MAX_CELLS:
            raise ValueError(f"a CSV line of at most {self.MAX_CELLS} cells, not {len(cells)}")
        super().__init__(Value(",".join(["%s"] * len(cells))), *cells)

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, function="printf", **extra)

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, function="format", **extra)


def _csv_text(value: Any) -> Any:
    """spreadsheet_safe for a text column's value, inlined: it runs for every cell."""
    if value and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value  # csv writes None as ""


def _csv_bool(value: Any) -> str:
    return "" if value is None else ("true" if value else "false")


def _json_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)  # SQLite answers 0 and 1


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Kind:
    """How one kind of column is written, from the database driver's raw values.

    On SQLite and PostgreSQL the database writes the cells: `csv_sql` a CSV cell exactly
    as csv.writer writes the Python converter's value, `json_sql` (where set) the JSON
    value's text. The Python converters are the same rules for any other database.
    """

    csv: Callable[[Any], Any]
    json: Callable[[Any], Any]
    csv_sql: type[Func] | None  # None: the stored value is the cell (CsvLine's `%s`)
    json_sql: type[Func] | None = None


TEXT = Kind(_csv_text, _same, CsvText)
NUMBER = Kind(_same, _same, None)  # csv writes numbers as they are, None as ""
BOOL = Kind(_csv_bool, _json_bool, CsvBool)
TIME = Kind(utc_text, utc_text, UtcText, json_sql=UtcText)


@dataclass(frozen=True)
class Column:
    """One exported column: its stable name, where it is read from, how it is written."""

    name: str
    source: str  # a `values_list` path on the exported model
    kind: Kind = TEXT


def _columns(spec: str, prefix: str = "", rename: Callable[[str], str] = str) -> list[Column]:
    """Columns from 'name:kind' words: one place that says what each column holds."""
    kinds = {"text": TEXT, "number": NUMBER, "bool": BOOL, "time": TIME}
    result = []
    for word in spec.split():
        name, _, kind = word.partition(":")
        result.append(Column(rename(name), prefix + name, kinds[kind or "text"]))
    return result


JOB_COLUMNS = [
    Column("id", "id", NUMBER),
    Column("account", "account_id", NUMBER),
    Column("account_name", "account__name"),
    *_columns(
        "provider kind external_id status provider_status total_count:number "
        "completed_count:number failed_count:number created_at:time started_at:time "
        "completed_at:time updated_at:time expires_at:time first_seen_at:time "
        "last_seen_at:time last_changed_at:time last_checked_at:time is_terminal:bool "
        "gone_at:time gone_reason tracked:bool errors_fetched_at:time error_count:number"
    ),
]

# The job a snapshot or error record belongs to: the same columns in both exports.
JOB_CONTEXT_COLUMNS = [
    Column("account", "job__account_id", NUMBER),
    Column("account_name", "job__account__name"),
    Column("provider", "job__provider"),
    Column("kind", "job__kind"),
    *_columns(
        "external_id status provider_status total_count:number completed_count:number "
        "failed_count:number created_at:time started_at:time completed_at:time "
        "updated_at:time expires_at:time first_seen_at:time last_seen_at:time "
        "last_changed_at:time",
        prefix="job__",
        rename=lambda name: f"job_{name}",
    ),
]

SNAPSHOT_COLUMNS = [
    Column("id", "id", NUMBER),
    Column("job", "job_id", NUMBER),
    *_columns(
        "observed_at:time status provider_status total_count:number completed_count:number "
        "failed_count:number digest"
    ),
    *JOB_CONTEXT_COLUMNS,
]

ERROR_COLUMNS = [
    Column("id", "id", NUMBER),
    Column("job", "job_id", NUMBER),
    *_columns("position:number code title message source external_id fetched_at:time"),
    *JOB_CONTEXT_COLUMNS,
]


@dataclass(frozen=True)
class ExportSpec:
    """What one export reads: model, filters, columns, and the raw JSON NDJSON adds."""

    name: str  # "jobs", "snapshots", "errors": in URLs, file names and --what
    model: type[Model]
    filterset: type[FilterSet]
    columns: Sequence[Column]
    raw: str  # NDJSON only: the field holding the provider's JSON as it was received

    @property
    def view_permission(self) -> str:
        return f"{self.model._meta.app_label}.view_{self.model._meta.model_name}"

    def header(self) -> list[str]:
        return [column.name for column in self.columns]


EXPORTS: dict[str, ExportSpec] = {
    spec.name: spec
    for spec in (
        ExportSpec("jobs", Job, JobFilter, JOB_COLUMNS, "payload"),
        ExportSpec("snapshots", JobSnapshot, SnapshotFilter, SNAPSHOT_COLUMNS, "payload"),
        ExportSpec("errors", JobError, ErrorFilter, ERROR_COLUMNS, "raw"),
    )
}


# --- who may export ---------------------------------------------------------------------


def can_export(user: Any, spec: ExportSpec) -> bool:
    """Staff with the export permission and the view permission of what is exported."""
    return bool(
        user
        and user.is_active
        and user.is_staff
        and user.has_perm(EXPORT_PERMISSION)
        and user.has_perm(spec.view_permission)
    )


# --- rows -------------------------------------------------------------------------------


class FilterError(ValueError):
    """The filters do not validate; `errors` maps each filter to its problems."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in errors.items()))
        self.errors = errors


def filtered(spec: ExportSpec, query: QueryDict, queryset: QuerySet | None = None) -> QuerySet:
    """The rows the matching list endpoint returns for `query`, in the same order."""
    base = spec.model._default_manager.all() if queryset is None else queryset
    filterset = spec.filterset(query, queryset=base)
    if not filterset.is_valid():
        raise FilterError({name: list(msgs) for name, msgs in filterset.errors.items()})
    return filterset.qs


def default_ordering(spec: ExportSpec) -> tuple[str, ...]:
    """The list endpoint's default order (newest first), a key ending with the id."""
    ordering = spec.filterset.base_filters["ordering"]
    return ordering.orderings[ordering.default]


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
    the database driver's own, without Django's per-value converters (the converters
    above take them as they come): times as SQLite text or PostgreSQL datetimes,
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
        converters.append(_same if written else python)
    if fmt == "ndjson":
        columns.append(spec.raw)
    width = len(spec.columns)
    # Only the columns whose converter does something are touched in each row.
    active = [(i, convert) for i, convert in enumerate(converters) if convert is not _same]
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
