"""Provider modules: pure Python, no Django. `jobcenter` reaches them only through here.

The registry is explicit and the only one: one entry per provider, its slug to the
"module:Class" of its provider and of its sandbox. Adding a provider means its module
(`providers/<slug>.py`), its sandbox (`providers/sandbox/<slug>.py`) and one entry here;
the sandbox server, the admin, the API and the sync all read this registry.

Nothing is imported until asked for, so the sandbox process (which imports this package
first) loads only the sandbox modules it serves.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from providers.base import Provider
    from providers.sandbox.core import ProviderSandbox


class Registered(NamedTuple):
    """Where one provider's two halves live, as "module:Class"."""

    provider: str
    sandbox: str


REGISTRY: dict[str, Registered] = {
    "klaviyo": Registered(
        "providers.klaviyo:KlaviyoProvider", "providers.sandbox.klaviyo:KlaviyoSandbox"
    ),
    "elasticpath": Registered(
        "providers.elasticpath:ElasticPathProvider",
        "providers.sandbox.elasticpath:ElasticPathSandbox",
    ),
    "fullstory": Registered(
        "providers.fullstory:FullstoryProvider", "providers.sandbox.fullstory:FullstorySandbox"
    ),
}

# Views of the registry: slug -> "module:Class" (and, as before, the set of slugs).
PROVIDER_CLASSES: dict[str, str] = {slug: entry.provider for slug, entry in REGISTRY.items()}
SANDBOX_CLASSES: dict[str, str] = {slug: entry.sandbox for slug, entry in REGISTRY.items()}


def _load(dotted: str) -> type:
    module_name, class_name = dotted.split(":")
    return getattr(importlib.import_module(module_name), class_name)


@cache
def get_provider(slug: str) -> type[Provider]:
    """The provider class for `slug`; KeyError when there is no such provider."""
    return _load(REGISTRY[slug].provider)


@cache
def get_sandbox(slug: str) -> type[ProviderSandbox]:
    """The sandbox class serving `slug` under `/<slug>/`; KeyError when there is none."""
    return _load(REGISTRY[slug].sandbox)


def provider_choices() -> list[tuple[str, str]]:
    """(slug, label) for every registered provider, for forms and filters."""
    return [(slug, get_provider(slug).label) for slug in REGISTRY]


def options_from_environment(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Per slug, the options its provider reads from environment variables that are set.

    Each provider names its variables (`Provider.environment_options`); settings hand
    the result to the provider as `options`.
    """
    options: dict[str, dict[str, str]] = {}
    for slug in REGISTRY:
        found = {
            name: environ[variable]
            for name, variable in get_provider(slug).environment_options.items()
            if environ.get(variable)
        }
        if found:
            options[slug] = found
    return options
