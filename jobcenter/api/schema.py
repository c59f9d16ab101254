"""OpenAPI post-processing: document the error answers every operation can give.

drf-spectacular documents success bodies only. Clients (and schemathesis) should know
that a bad filter is a 400 with field errors, that a missing row is a 404, and that
tracking, syncing and exports can be throttled (429). Query parameters sent empty count
as absent (as django-filter reads them), which `allowEmptyValue` says. Lists and details
answer with an `ETag` and take `If-None-Match` (a 304 when it matches:
`jobcenter.api.conditional`).
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
NOT_CONDITIONAL = ("/api/v1/exports/",)  # streamed downloads: no ETag
ETAG_HEADER = {
    "description": "A weak tag of this answer, for this caller and this URL; send it back "
    "in `If-None-Match` to get a 304 while the answer is unchanged.",
    "schema": {"type": "string"},
}
IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "description": "ETags of answers already held (a list, or `*`): a 304 when one of "
    "them is the current answer's.",
    "schema": {"type": "string"},
}


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
            if method == "get" and not path.startswith(NOT_CONDITIONAL):
                add_conditional(operation, responses)
            throttled = method == "post" and path.endswith(THROTTLED_SUFFIXES)
            if throttled or path.startswith(THROTTLED_PREFIXES):
                responses.setdefault(
                    "429", _response("Too many requests; retry later.", "ApiError")
                )
    return result


def add_conditional(operation: dict[str, Any], responses: dict[str, Any]) -> None:
    """`If-None-Match` in, `ETag` out, and the 304 (`jobcenter.api.conditional`)."""
    operation.setdefault("parameters", []).append(IF_NONE_MATCH)
    if "200" in responses:
        responses["200"].setdefault("headers", {})["ETag"] = ETAG_HEADER
    responses.setdefault(
        "304",
        {
            "description": "Not modified: the answer is the one `If-None-Match` named. No body.",
            "headers": {"ETag": ETAG_HEADER},
        },
    )
