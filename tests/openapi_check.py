"""Validate the sandbox's request log against the providers' official OpenAPI specs.

Every request a provider module sent, and every answer the sandbox gave, is checked
with openapi-core against `../shared/specs/<name>.openapi.json` (or its copy in
`tests/specs/` where the shared folder is not beside the clone), so the provider code
and the sandbox can only drift from the real API by failing a test.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_core.validation.response.exceptions import MissingData
from werkzeug.datastructures import ImmutableMultiDict

# The shared specs folder beside the project is the source of truth; tests/specs holds a
# copy of it (checked equal below) so that a clone elsewhere validates all the same.
SHARED_SPECS_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "specs"
VENDORED_SPECS_DIR = Path(__file__).resolve().parent / "specs"
SPECS_DIR = Path(
    os.environ.get("JOBCENTER_SPECS_DIR")
    or (SHARED_SPECS_DIR if SHARED_SPECS_DIR.is_dir() else VENDORED_SPECS_DIR)
)
# Specs read where they are and never copied into the project (HubSpot's is not licensed
# for redistribution): tests that need them skip when the folder is absent.
REFERENCE_ONLY_DIR = SHARED_SPECS_DIR / "reference-only"


def spec_path(name: str, folder: Path | None = None) -> Path:
    return (folder or SPECS_DIR) / f"{name}.openapi.json"


@cache
def load_spec(
    name: str, folder: Path | None = None, json_media_types: tuple[str, ...] = ()
) -> OpenAPI:
    """The OpenAPI document `name` (e.g. "klaviyo-jobs") from the shared specs folder, or
    from `folder`. `json_media_types`: media types beside JSON whose bodies are read as
    JSON (Mailchimp's application/problem+json, the */* of HubSpot's error answers)."""
    config = Config(extra_media_type_deserializers=dict.fromkeys(json_media_types, json.loads))
    with open(spec_path(name, folder)) as fh:
        return OpenAPI.from_dict(json.load(fh), config=config)


def spec_server(name: str, folder: Path | None = None) -> str:
    with open(spec_path(name, folder)) as fh:
        return json.load(fh)["servers"][0]["url"]


def _request(entry: dict[str, Any], server_url: str) -> MockRequest:
    headers = {k.lower(): v for k, v in entry["headers"].items()}
    return MockRequest(
        server_url,
        entry["method"].lower(),
        entry["path"],
        args=ImmutableMultiDict(parse_qsl(entry["query_string"], keep_blank_values=True)),
        headers=headers,
        data=(entry.get("body") or "").encode() or None,
        content_type=headers.get("content-type", "application/json").split(";")[0],
    )


def request_errors(
    name: str, entry: dict[str, Any], server_url: str | None = None, **spec: Any
) -> list[str]:
    """Why the logged request breaks the spec; empty when it validates. `spec`: the
    folder and json_media_types of `load_spec`."""
    openapi = load_spec(name, **spec)
    request = _request(entry, server_url or spec_server(name, spec.get("folder")))
    return [str(e) + _cause(e) for e in openapi.iter_request_errors(request)]


def response_errors(
    name: str, entry: dict[str, Any], server_url: str | None = None, **spec: Any
) -> list[str]:
    """Why the logged answer breaks the spec's response schemas; empty when it validates.
    `spec`: the folder and json_media_types of `load_spec`."""
    openapi = load_spec(name, **spec)
    request = _request(entry, server_url or spec_server(name, spec.get("folder")))
    response = MockResponse(
        (entry.get("response_body") or "").encode(),
        status_code=entry["status"],
        headers=entry.get("response_headers") or {},
        content_type=(entry.get("content_type") or "").split(";")[0],
    )
    errors = list(openapi.iter_response_errors(request, response))
    if response.data == b"" and any(isinstance(e, MissingData) for e in errors):
        errors = _empty_body_errors(openapi, request, entry)
    return [str(e) + _cause(e) for e in errors]


def _empty_body_errors(
    openapi: OpenAPI, request: MockRequest, entry: dict[str, Any]
) -> list[Exception]:
    """Errors of an answer with no body at all, where the spec documents a content schema.

    Converted Swagger 2.0 specs write "no body" as a JSON content whose schema is `{}`
    (Fullstory's 202 "still processing"). An empty body is accepted exactly where that
    schema accepts any value: it is checked as a JSON `null`, which every typed schema
    (an object, a string, ...) still refuses.
    """
    response = MockResponse(
        b"null",
        status_code=entry["status"],
        headers=entry.get("response_headers") or {},
        content_type="application/json",
    )
    return list(openapi.iter_response_errors(request, response))


def _cause(error: Exception) -> str:
    parts = []
    cause = error.__cause__
    while cause is not None:
        parts.append(f" <- {cause}"[:500])
        schema_errors = getattr(cause, "schema_errors", None)
        if schema_errors:
            parts.extend(f" [{e.message}]"[:300] for e in schema_errors)
        cause = cause.__cause__
    return "".join(parts)
