"""The exported columns, and how each cell is written.

CSV: UTF-8 with a byte-order mark (spreadsheets then read non-ASCII text right), one
header row, RFC 4180 quoting, times in UTC ISO 8601 (`2026-03-01T12:00:00Z`), booleans
`true`/`false`, empty cells for nulls, and every text cell that a spreadsheet would run
as a formula (starting with `=`, `+`, `-`, `@`, a tab or a carriage return) prefixed
with a single quote (OWASP's advice). NDJSON: one JSON object per line, the same keys
with JSON types, plus the raw provider payload (`payload`, or `raw` for error records).

On SQLite and PostgreSQL the database writes the CSV cells itself (the expressions
below), so a CSV chunk goes out as fetched; the Python converters are the same rules for
any other database. JOB_COLUMNS is also the API's job field list (`JobSerializer`): the
job columns are declared here once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db.models import CharField, Expression, Func, Value

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


def same(value: Any) -> Any:
    """The converter that leaves a value as the driver gave it (the stream skips it)."""
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


TEXT = Kind(_csv_text, same, CsvText)
NUMBER = Kind(same, same, None)  # csv writes numbers as they are, None as ""
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


# Also the API's job fields, in this order (its JobSerializer reads them here): a job
# reads the same in the API's JSON and in an exported file.
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
