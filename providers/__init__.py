"""Provider modules: pure Python, no Django. `jobcenter` reaches them only through here.

The registry is explicit and the only one: one entry per provider, its slug to the
"module:Class" of its provider and of its sandbox. A coded provider is its module
(`providers/<slug>.py`), its sandbox (`providers/sandbox/<slug>.py`) and one entry here.
A declared provider is a definition in `providers/definitions/` (docs/providers.md): its
entry is made from the file, naming the file it is built from and the sandbox the file
names. More definitions come from the folder the settings hand to `register_definitions`.
The sandbox server, the admin, the API and the sync all read this registry.

Nothing is imported until asked for, so the sandbox process (which imports this package
first) loads only the sandbox modules it serves: a definition is read here for its slug
and sandbox only, and checked whole when its provider is first asked for (Django's
start-up asks for every one, so an invalid definition stops it).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import yaml

if TYPE_CHECKING:
    from providers.base import Provider
    from providers.sandbox.core import ProviderSandbox


class Registered(NamedTuple):
    """Where one provider's two halves live, as "module:Class"; for a declared provider,
    also the definition file its class is built from (`provider` is then the engine)."""

    provider: str
    sandbox: str
    definition: str = ""


DEFINITIONS_DIR = Path(__file__).resolve().parent / "definitions"
DECLARED = "providers.declarative:DeclarativeProvider"


def _declared(folder: Path) -> dict[str, Registered]:
    """An entry per definition in `folder`, read for its slug and sandbox only; a file
    that does not give them is checked whole here, for its error."""
    entries: dict[str, Registered] = {}
    for path in sorted(folder.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            slug, sandbox = str(data["slug"]), str(data["sandbox"])
        except (yaml.YAMLError, TypeError, KeyError):
            from providers.declarative import load_definition

            load_definition(path)  # raises DefinitionError naming the file and the line
            raise
        entries[slug] = Registered(DECLARED, sandbox, str(path))
    return entries


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
    **_declared(DEFINITIONS_DIR),
}

# Views of the registry: slug -> "module:Class" (and, as before, the set of slugs).
PROVIDER_CLASSES: dict[str, str] = {slug: entry.provider for slug, entry in REGISTRY.items()}
SANDBOX_CLASSES: dict[str, str] = {slug: entry.sandbox for slug, entry in REGISTRY.items()}


def _load(dotted: str) -> type:
    module_name, class_name = dotted.split(":")
    return getattr(importlib.import_module(module_name), class_name)


@cache
def get_provider(slug: str) -> type[Provider]:
    """The provider class for `slug`; KeyError when there is no such provider.

    A declared provider's definition is checked here (DefinitionError when invalid).
    """
    entry = REGISTRY[slug]
    if entry.definition:
        from providers.declarative import load_provider

        return load_provider(entry.definition)
    return _load(entry.provider)


def register_definitions(folder: str | os.PathLike[str] | None) -> list[str]:
    """Add the definitions in `folder` (JOBCENTER_PROVIDER_DEFINITIONS_DIR) to the
    registry; returns their slugs. All are checked first: one invalid definition, or a
    slug already registered, refuses them all with DefinitionError naming file and line.
    """
    if not folder:
        return []
    from providers.declarative import DefinitionError, load_folder, load_provider

    definitions = load_folder(folder)
    taken = [d for d in definitions if d.slug in REGISTRY]
    if taken:
        raise DefinitionError(
            "\n".join(d.problem(("slug",), f"{d.slug!r} is already a provider")[1] for d in taken)
        )
    for definition in definitions:
        path = str(definition.path)
        load_provider(path)  # built now, so nothing fails later
        entry = Registered(DECLARED, str(definition.data["sandbox"]), path)
        REGISTRY[definition.slug] = entry
        PROVIDER_CLASSES[definition.slug] = entry.provider
        SANDBOX_CLASSES[definition.slug] = entry.sandbox
    return [d.slug for d in definitions]


def unregister(slugs: list[str]) -> None:
    """Take providers out of the registry again (tests that registered a folder)."""
    for slug in slugs:
        for registry in (REGISTRY, PROVIDER_CLASSES, SANDBOX_CLASSES):
            registry.pop(slug, None)
    get_provider.cache_clear()
    get_sandbox.cache_clear()


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
