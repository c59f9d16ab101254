"""The provider registry is the one place that knows the providers.

Adding a provider touches its module, its sandbox module and one entry in
`providers.REGISTRY`; `jobcenter/` names no provider, and `providers/` imports neither
Django nor `jobcenter`, and has no import cycle (function-level imports included).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from providers import (
    PROVIDER_CLASSES,
    REGISTRY,
    SANDBOX_CLASSES,
    get_provider,
    get_sandbox,
    options_from_environment,
)

ROOT = Path(__file__).resolve().parent.parent


def test_each_entry_names_a_provider_and_its_sandbox_under_its_slug() -> None:
    assert set(PROVIDER_CLASSES) == set(SANDBOX_CLASSES) == set(REGISTRY)
    for slug in REGISTRY:
        assert get_provider(slug).slug == slug
        assert get_sandbox(slug).prefix == slug  # the sandbox serves it under /<slug>/


def test_no_provider_is_named_in_jobcenter_outside_migrations() -> None:
    """Provider knowledge lives in providers/: a slug or label in jobcenter/ is a leak."""
    names = {slug for slug in REGISTRY} | {get_provider(slug).label for slug in REGISTRY}
    leaks = []
    for directory, subdirectories, files in os.walk(ROOT / "jobcenter"):
        subdirectories[:] = [d for d in subdirectories if d not in ("migrations", "__pycache__")]
        for name in files:
            path = Path(directory, name)
            text = path.read_bytes().decode("utf-8", errors="ignore").lower()
            for number, line in enumerate(text.splitlines(), 1):
                leaks += [
                    f"{path.relative_to(ROOT)}:{number}: {provider}"
                    for provider in sorted(names)
                    if provider.lower() in line
                ]
    assert leaks == []


def provider_imports() -> dict[str, set[str]]:
    """Module -> the modules it imports, every import statement counted, nested ones too."""
    graph: dict[str, set[str]] = {}
    for path in (ROOT / "providers").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}".rstrip(".")
                imported.add(base)
                imported.update(f"{base}.{alias.name}" for alias in node.names)
        graph[module] = imported
    return graph


def test_providers_import_neither_django_nor_jobcenter() -> None:
    offending = {
        module: sorted(i for i in imported if i.split(".")[0] in ("django", "jobcenter"))
        for module, imported in provider_imports().items()
    }
    assert {m: i for m, i in offending.items() if i} == {}


def test_providers_have_no_import_cycle() -> None:
    graph = provider_imports()
    edges = {
        module: {i for i in imported if i in graph} - {module} for module, imported in graph.items()
    }
    # A package's __init__ runs before its submodules: importing providers.x imports
    # providers, so a module importing its own package is no cycle. Everything else is.
    for module, targets in edges.items():
        edges[module] = {t for t in targets if not module.startswith(t + ".")}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        assert module not in visiting, " -> ".join([*visiting[visiting.index(module) :], module])
        visiting.append(module)
        for target in sorted(edges[module]):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(edges):
        visit(module)
    assert "providers.base" not in edges["providers.http"]


def test_the_sandbox_loads_only_sandbox_modules() -> None:
    """The sandbox process imports no provider client, no requests and no Django."""
    code = (
        "import sys; from providers.sandbox.server import make_server; "
        "make_server(port=0).server_close(); "
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('providers', 'requests', 'django', 'jobcenter'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert set(loaded) == {
        "providers",
        "providers.sandbox",
        "providers.sandbox.core",
        "providers.sandbox.server",
        *(SANDBOX_CLASSES[slug].split(":")[0] for slug in REGISTRY),
    }


def test_a_provider_names_the_environment_variables_it_reads() -> None:
    assert options_from_environment({}) == {}
    environ = {
        variable: f"value of {variable}"
        for slug in REGISTRY
        for variable in get_provider(slug).environment_options.values()
    }
    options = options_from_environment(environ)
    for slug in REGISTRY:
        declared = get_provider(slug).environment_options
        assert options.get(slug, {}) == {
            name: f"value of {variable}" for name, variable in declared.items()
        }


@pytest.mark.parametrize("slug", sorted(REGISTRY))
def test_tracked_kinds_are_the_kinds_no_listing_shows(slug: str) -> None:
    provider = get_provider(slug)
    assert provider.tracked_kinds() == tuple(k for k in provider.kinds if not k.listable)
    if not provider.listing_names():  # nothing listed: every job is tracked by id
        assert provider.tracked_kinds() == provider.kinds
