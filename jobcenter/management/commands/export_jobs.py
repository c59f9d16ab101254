"""`manage.py export_jobs --what jobs|snapshots|errors --format csv|ndjson [filters] [-o FILE]`.

The same files as the API's /api/v1/exports/ and the admin's export links, with the
same filter names (`--status failed --account Main`, or `--filter name=value` for any
filter of the list endpoint). A progress bar goes to stderr when stderr is a terminal,
so piping the file on stdout stays clean.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from django.core.management.base import CommandError, CommandParser
from django.http import QueryDict

from jobcenter.exports.specs import EXPORTS, FORMATS, ExportSpec, FilterError, filtered
from jobcenter.exports.stream import export_chunks
from jobcenter.management.base import AuditedCommand

# Flags for the filters used most; every other one through --filter NAME=VALUE.
FLAGS = {
    "account": "account id or name",
    "provider": "provider slug (repeatable)",
    "kind": "job kind (repeatable)",
    "status": "normalized status (repeatable)",
    "created_after": "created by the provider at or after (ISO 8601)",
    "created_before": "created by the provider before (ISO 8601)",
    "changed_after": "last changed at or after (ISO 8601)",
    "changed_before": "last changed before (ISO 8601)",
    "search": "external id (exact) or text in error records",
    "ordering": "sort order, as the list endpoint's ?ordering=",
}
REPEATABLE = {"provider", "kind", "status"}
BAR_WIDTH = 30
REDRAW_SECONDS = 0.2


class Progress:
    """Rows written, rate and (when known) a bar, redrawn in place on a terminal."""

    def __init__(self, stream: IO[str] | None, total: int | None) -> None:
        self.stream = stream  # None: count only
        self.total = total
        self.rows = 0
        self.started = time.monotonic()
        self.drawn = 0.0

    def __call__(self, rows: int) -> None:
        self.rows += rows
        now = time.monotonic()
        if now - self.drawn >= REDRAW_SECONDS:
            self.draw(now)

    def draw(self, now: float, end: str = "") -> None:
        if self.stream is None:
            return
        self.drawn = now
        rate = self.rows / max(now - self.started, 1e-9)
        if self.total:
            done = min(self.rows / self.total, 1.0)
            filled = int(done * BAR_WIDTH)
            bar = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done:4.0%} "
            count = f"{self.rows:,}/{self.total:,}"
        else:
            bar, count = "", f"{self.rows:,}"
        self.stream.write(f"\r{bar}{count} rows, {rate:,.0f} rows/s{end}")
        self.stream.flush()

    def finish(self) -> None:
        self.draw(time.monotonic(), end="\n")


class Command(AuditedCommand):
    help = (
        "Export jobs, snapshots or error records as CSV or NDJSON, with the API's filters; "
        "streamed, any size."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--what", choices=list(EXPORTS), default="jobs")
        parser.add_argument("--format", choices=FORMATS, default="csv", dest="fmt")
        parser.add_argument("-o", "--output", help="file to write (default: stdout)")
        for name, text in FLAGS.items():
            parser.add_argument(
                f"--{name.replace('_', '-')}",
                dest=f"filter_{name}",
                action="append" if name in REPEATABLE else "store",
                help=text,
            )
        parser.add_argument(
            "--filter",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="any filter of the matching list endpoint (repeatable), e.g. gone=true",
        )
        parser.add_argument(
            "--no-progress", action="store_true", help="no progress bar, even on a terminal"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        spec = EXPORTS[options["what"]]
        query = self.query(spec, options)
        try:
            queryset = filtered(spec, query)
        except FilterError as exc:
            raise CommandError(f"invalid filter: {exc}") from None
        show = not options["no_progress"] and sys.stderr.isatty()
        progress = Progress(
            sys.stderr if show else None, queryset.order_by().count() if show else None
        )
        with self.output(options["output"]) as out:
            for block in export_chunks(spec, options["fmt"], queryset, on_rows=progress):
                out.write(block)
        progress.finish()
        if options["output"]:
            self.stderr.write(f"{progress.rows:,} rows written to {options['output']}")

    def query(self, spec: ExportSpec, options: dict[str, Any]) -> QueryDict:
        """The flags and --filter pairs as the QueryDict the list endpoint would get."""
        query = QueryDict(mutable=True)
        known = set(spec.filterset.base_filters)
        for name in FLAGS:
            value = options.get(f"filter_{name}")
            if value is None:
                continue
            if name not in known:
                raise CommandError(f"--{name.replace('_', '-')} does not apply to {spec.name}")
            query.setlist(name, value if isinstance(value, list) else [value])
        for pair in options["filter"]:
            name, sep, value = pair.partition("=")
            if not sep or name not in known:
                raise CommandError(
                    f"--filter {pair!r}: expected NAME=VALUE with NAME one of "
                    f"{', '.join(sorted(known))}"
                )
            query.appendlist(name, value)
        return query

    @contextmanager
    def output(self, path: str | None) -> Iterator[IO[bytes]]:
        if not path:
            yield sys.stdout.buffer
            sys.stdout.buffer.flush()
            return
        with open(path, "wb") as handle:
            yield handle
