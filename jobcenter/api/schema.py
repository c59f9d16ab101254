"""OpenAPI post-processing: document the error answers every operation can give.

drf-spectacular documents success bodies only. Clients (and schemathesis) should know
that a bad filter is a 400 with field errors, that a missing row is a 404, and that
tracking, syncing and exports can be throttled (429). Query parameters sent empty count
as absent (as django-filter reads them), which `allowEmptyValue` says.
"""

from __future__ import annotations

from typing import Any

ERROR = {
    "type": "object",
    "description": "What went wrong, in `detail`.",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
FIELD_ERRORS = {
    "type": "object",
    "description": "Field name (or `non_field_errors`, or `detail`) to the problems with it.",
    "additionalProperties": {},
}
THROTTLED_SUFFIXES = ("/track/", "/sync/", "/test/")
THROTTLED_PREFIXES = ("/api/v1/exports/",)


def _response(description: str, component: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{component}"}}},
    }


def add_error_responses(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """A drf-spectacular POSTPROCESSING_HOOK adding 400/401/403/404/429 answers."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ApiError", ERROR)
    schemas.setdefault("ApiFieldErrors", FIELD_ERRORS)
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "query" and not parameter.get("required"):
                    # `?status=&terminal=` (an empty filter form) means "no filter".
                    parameter["allowEmptyValue"] = True
            responses = operation.setdefault("responses", {})
            has_input = bool(operation.get("requestBody")) or any(
                p.get("in") == "query" for p in operation.get("parameters", [])
            )
            if has_input:
                responses.setdefault("400", _response("Invalid input.", "ApiFieldErrors"))
            responses.setdefault("401", _response("Not authenticated.", "ApiError"))
            responses.setdefault("403", _response("Not allowed.", "ApiError"))
            if "{" in path:
                responses.setdefault("404", _response("No such row.", "ApiError"))
            throttled = method == "post" and path.endswith(THROTTLED_SUFFIXES)
            if throttled or path.startswith(THROTTLED_PREFIXES):
                responses.setdefault(
                    "429", _response("Too many requests; retry later.", "ApiError")
                )
    return result
