"""Provider modules: pure Python, no Django. `jobcenter` reaches them only through here.

The registry is explicit: one line per provider, slug to "module:Class". Adding a
provider means one new module (and its sandbox) and one line here.
"""

from __future__ import annotations

import importlib
from functools import cache

from providers.base import Provider

PROVIDER_CLASSES: dict[str, str] = {
    "klaviyo": "providers.klaviyo:KlaviyoProvider",
    "elasticpath": "providers.elasticpath:ElasticPathProvider",
    "fullstory": "providers.fullstory:FullstoryProvider",
}


@cache
def get_provider(slug: str) -> type[Provider]:
    """The provider class for `slug`; KeyError when there is no such provider."""
    module_name, class_name = PROVIDER_CLASSES[slug].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def provider_choices() -> list[tuple[str, str]]:
    """(slug, label) for every registered provider, for forms and filters."""
    return [(slug, get_provider(slug).label) for slug in PROVIDER_CLASSES]
