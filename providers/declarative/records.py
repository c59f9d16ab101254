"""Error records as a definition declares them: from a JSON list's items or a CSV
document's rows, each field read by a reference (optionally narrowed by a regular
expression), and which parts are the failing record's own data."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import requests

from providers.base import JobErrorRecord, PersonalData
from providers.declarative.fields import as_text, read
from providers.errors import BadResponse

ERROR_FIELDS = ("message", "code", "title", "source", "external_id")


def csv_rows(
    response: requests.Response, label: str, excerpt: Callable[[Any], str]
) -> Iterator[dict[str, Any]]:
    """The rows of a CSV answer as dicts by column; another content type, or CSV that
    does not read, is a BadResponse with a (redacted) excerpt."""
    content_type = response.headers.get("Content-Type", "")
    if "csv" not in content_type:
        raise BadResponse(
            f"{label} answered with {content_type or 'no content type'} instead of CSV",
            excerpt=excerpt(response.text),
        )
    try:
        yield from csv.DictReader(io.StringIO(response.text))
    except csv.Error as exc:
        raise BadResponse(
            f"{label} sent CSV that does not read ({exc})", excerpt=excerpt(response.text)
        ) from None


def error_record(errors: Mapping[str, Any], item: dict[str, Any]) -> JobErrorRecord:
    """One error record from an item (a JSON object or a CSV row), as `errors` maps it."""
    texts = {name: field_text(errors.get(name), item) for name in ERROR_FIELDS}
    declared = errors.get("personal_data") or {}
    paths = [tuple(p) for p in declared.get("raw_paths") or ()]
    if "all_but" in declared:
        paths += [(key,) for key in item if key not in declared["all_but"]]
    return JobErrorRecord(
        **texts,
        raw=item,
        personal_data=PersonalData(tuple(paths), tuple(declared.get("fields") or ())),
    )


def field_text(field: Any, item: Mapping[str, Any]) -> str:
    """A reference's text, or {from, match}: the match's first group ("" without one)."""
    if field is None:
        return ""
    if isinstance(field, str):
        return as_text(read(field, item))
    found = re.search(field["match"], as_text(read(field["from"], item)))
    return found.group(1) if found else ""
