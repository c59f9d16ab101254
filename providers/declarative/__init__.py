"""Providers declared in YAML instead of coded (docs/providers.md).

A definition in `providers/definitions/` (or in the folder JOBCENTER_PROVIDER_DEFINITIONS_DIR
names) is read with its line numbers and checked against `providers/definitions/schema.json`
(`loader`), and `provider_class` builds a `providers.base.Provider` subclass from it
(`provider`), which pages (`paging`), authenticates (`auth`) and reads fields (`fields`) as
the definition says. Pure Python, no Django.
"""

from __future__ import annotations

from functools import cache

from providers.declarative.loader import (
    Definition,
    DefinitionError,
    load_definition,
    load_folder,
)
from providers.declarative.provider import DeclarativeProvider, provider_class


@cache
def load_provider(path: str) -> type[DeclarativeProvider]:
    """The provider class the definition at `path` declares, checked and built once."""
    return provider_class(load_definition(path))


__all__ = [
    "DeclarativeProvider",
    "Definition",
    "DefinitionError",
    "load_definition",
    "load_folder",
    "load_provider",
    "provider_class",
]
