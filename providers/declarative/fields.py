"""The small languages of a definition: field references, templates and hooks.

A field reference is a JSON pointer when it starts with "/" (RFC 6901), else a JMESPath
expression; either reads a missing value as None. A template is text with `{name}`
placeholders. A hook is a Python function named "module:function".
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import jmespath
from jmespath.exceptions import JMESPathError

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MISSING = object()

Reader = Callable[[Any], Any]


def _pointer(ref: str) -> Reader:
    """A reader for a JSON pointer: each token a key of an object or an index of a list."""
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in ref.split("/")[1:]]

    def read(value: Any) -> Any:
        for token in tokens:
            if isinstance(value, Mapping):
                value = value.get(token, _MISSING)
            elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
                value = value[int(token)]
            else:
                return None
            if value is _MISSING:
                return None
        return value

    return read


@lru_cache(maxsize=1024)
def compile_ref(ref: str) -> Reader:
    """A reader for a field reference; ValueError saying why when it does not compile."""
    if ref.startswith("/"):
        if re.search(r"~[^01]|~$", ref):
            raise ValueError("in a JSON pointer '~' is written ~0 and '/' ~1")
        return _pointer(ref)
    try:
        expression = jmespath.compile(ref)
    except JMESPathError as exc:
        raise ValueError(f"not a JMESPath expression ({str(exc).splitlines()[0]})") from None
    return expression.search


def read(ref: str | None, value: Any) -> Any:
    """The value a reference names in `value`; None when it is absent (or no reference)."""
    if ref is None:
        return None
    return compile_ref(ref)(value)


def template_names(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def render(text: str, values: Mapping[str, str], *, path: bool = False) -> str:
    """The template with each placeholder filled; in a path each value is one segment.

    Placeholders were checked at load, so a missing value is a credential left blank: it
    renders empty, and the provider answers for it (an authentication failure).
    """

    def fill(match: re.Match[str]) -> str:
        value = str(values.get(match[1], ""))
        return quote(value, safe="") if path else value

    return PLACEHOLDER.sub(fill, text)


@lru_cache(maxsize=64)
def resolve_hook(name: str) -> Callable[..., Any]:
    """The function "module:function" names; ValueError saying why when it cannot be had."""
    module_name, _, function_name = name.partition(":")
    if not module_name or not function_name:
        raise ValueError("a hook is written module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name} ({exc})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ValueError(f"{module_name} has no function {function_name}")
    return function


def as_count(value: Any) -> int | None:
    """A count from JSON: an integer, or digits in a string; None when absent.

    ValueError for anything else (a boolean, a fraction, words): the caller reports the
    answer as malformed.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("a boolean is not a count")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise ValueError("not a whole number")


def as_text(value: Any) -> str:
    """A field's text: None is blank, lists are joined, the rest is `str`."""
    if value is None:
        return ""
    if isinstance(value, list):
        return "; ".join(as_text(item) for item in value if item not in (None, ""))
    return str(value)
