"""canonical_json: the one text a payload is stored and digested as."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from providers.base import canonical_json, payload_digest


def reference(value: Any) -> str:
    """What the stored payloads were written as: json.dumps with the canonical options."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": [1, 2.5, None, True, False], "c": {"z": "é ü \u2028", "y": '\n\t"\\'}},
        {"nested": [{"k": [{"deep": {"x": -0.0, "big": 10**20, "small": 1e-7}}]}]},
        {"when": datetime(2026, 3, 1, 12, 0, tzinfo=UTC), "nan": float("nan")},
        [],
        {},
        "text",
        42,
        None,
        "\ud800 lone surrogate",
    ],
)
def test_canonical_json_writes_what_json_dumps_wrote(value: Any) -> None:
    # The stored texts and digests of earlier syncs must stay equal: a payload that
    # encodes differently would look changed and get a snapshot it should not.
    assert canonical_json(value) == reference(value)


def test_key_order_does_not_change_the_text_or_digest() -> None:
    first = {"id": "1", "attributes": {"status": "complete", "errors": [{"b": 2, "a": 1}]}}
    second = {"attributes": {"errors": [{"a": 1, "b": 2}], "status": "complete"}, "id": "1"}
    assert canonical_json(first) == canonical_json(second)
    assert payload_digest(first) == payload_digest(second)
    assert payload_digest(first) != payload_digest({**first, "id": "2"})


def test_encoding_after_a_failure_is_unaffected() -> None:
    # The encoder is made once and reused: an object it cannot encode must not leave
    # state behind that changes the next call's text.
    with pytest.raises(TypeError):
        canonical_json({1.5j: "complex keys are not JSON"})
    assert canonical_json({"a": [1, {"b": 2}]}) == '{"a":[1,{"b":2}]}'
