"""The layout's rules, checked by walking the code (no list of modules is written here).

The import graph is read with `ast` from every .py file under jobcenter/ and providers/,
so imports inside functions count as much as those at the top. Decisions:

- Imports under `if TYPE_CHECKING:` count. They are skipped at run time (that is how
  cycles hide there), but a module that names another's types still depends on it.
- `from X import name` is an edge to X.name when that is a module, else to X; a
  package's `__init__.py` is the package's module. `import a.b.c` is an edge to a.b.c
  only: the parent packages Python runs first are package mechanics, not a dependency
  (counting them would link every submodule back to its package's `__init__`).
- Dotted paths in strings (settings, django-q2 task names, migrations) are not edges;
  `test_every_dotted_path_stored_or_configured_resolves` checks that each one imports.
"""

from __future__ import annotations

import ast
import importlib
import itertools
import pydoc
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils.module_loading import import_string

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("jobcenter", "providers")
MAX_TOP_LEVEL_MODULES = 15
MAX_LINES = 600
# Whoever may import the API layer (besides the API's own modules).
API = "jobcenter.api"
API_IMPORTERS = {"jobcenter.urls"}
# What providers/ must not know about: the web framework, the app, the queue.
FRAMEWORKS = {
    "django",
    "jobcenter",
    "rest_framework",
    "django_q",
    "django_filters",
    "drf_spectacular",
}
# Task names databases written by earlier versions may still hold (django_q OrmQ,
# Schedule and Task rows): they must keep importing.
LEGACY_TASKS = [
    "jobcenter.tasks.run_sync",
    "jobcenter.tasks.dispatch_due_syncs",
    "jobcenter.alerts.deliver",
]


@dataclass(frozen=True)
class Import:
    """One import statement's target, where it was written."""

    target: str  # the absolute dotted name, resolved as described above
    path: Path
    line: int


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    imports: list[Import] = field(default_factory=list)  # every absolute name imported


def module_name(path: Path, root: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def python_files(root: Path, packages: tuple[str, ...]) -> Iterator[Path]:
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                yield path


def walk(root: Path, packages: tuple[str, ...]) -> dict[str, Module]:
    """Every module under `packages`, with every import in it (functions included)."""
    modules: dict[str, Module] = {}
    for path in python_files(root, packages):
        name, is_package = module_name(path, root)
        modules[name] = Module(name, path, is_package)
    for module in modules.values():
        tree = ast.parse(module.path.read_text(), filename=str(module.path))
        for node in ast.walk(tree):
            for target in imported_names(node, module, modules):
                module.imports.append(Import(target, module.path, node.lineno))
    return modules


def imported_names(node: ast.AST, module: Module, modules: dict[str, Module]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        package = module.name if module.is_package else module.name.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    return [
        f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
        for alias in node.names
    ]


def internal(name: str, modules: dict[str, Module]) -> str | None:
    """The module of ours `name` is (or lies in), if any: its longest known prefix."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def graph(modules: dict[str, Module]) -> dict[str, dict[str, Import]]:
    """module -> {module it imports: the first place it does}, ours only, no self-loops."""
    edges: dict[str, dict[str, Import]] = {name: {} for name in modules}
    for module in modules.values():
        for found in module.imports:
            target = internal(found.target, modules)
            if target is not None and target != module.name:
                edges[module.name].setdefault(target, found)
    return edges


def tangles(edges: dict[str, dict[str, Import]]) -> list[list[str]]:
    """The groups of modules that reach each other (strongly connected, Tarjan's)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:  # recursion depth: the graph's longest path, small
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return groups


def cycles(edges: dict[str, dict[str, Import]]) -> list[list[str]]:
    """The shortest cycle through the first module of each tangle."""
    return [shortest_cycle(group, edges) for group in tangles(edges)]


def shortest_cycle(group: list[str], edges: dict[str, dict[str, Import]]) -> list[str]:
    """The shortest path from the group's first module back to itself, inside the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(edges[node]):
                if nxt == start:
                    return [*paths[node], start]
                if nxt in members and nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle in {group}")  # Tarjan said there was one


def describe(cycle: list[str], edges: dict[str, dict[str, Import]]) -> str:
    steps = []
    for here, there in itertools.pairwise(cycle):
        where = edges[here][there]
        path = where.path.relative_to(ROOT) if where.path.is_relative_to(ROOT) else where.path
        steps.append(f"  {here} -> {there}  ({path}:{where.line})")
    return "\n".join(steps)


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return walk(ROOT, PACKAGES)


# --- the walker itself --------------------------------------------------------------------
def test_the_walker_sees_imports_in_functions_and_type_checking_blocks(tmp_path: Path) -> None:
    """A cycle made only of a function-level import and a TYPE_CHECKING import is found."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .leaf import VALUE\n")
    (package / "sub" / "leaf.py").write_text("VALUE = 1\n")
    (package / "a.py").write_text("def later():\n    from pkg import b\n    return b\n")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from . import a\n"
        "from pkg.sub import VALUE\nimport pkg.sub.leaf\n"
    )
    found = walk(tmp_path, ("pkg",))
    edges = graph(found)
    assert set(edges["pkg.a"]) == {"pkg.b"}  # `from pkg import b`: the module b
    assert set(edges["pkg.b"]) == {"pkg.a", "pkg.sub", "pkg.sub.leaf"}
    assert set(edges["pkg.sub"]) == {"pkg.sub.leaf"}  # relative, from a package
    assert cycles(edges) == [["pkg.a", "pkg.b", "pkg.a"]]
    assert "pkg/a.py:2" in describe(cycles(edges)[0], edges).replace(str(tmp_path) + "/", "")


# --- the rules ----------------------------------------------------------------------------
def test_the_import_graph_has_no_cycle(modules: dict[str, Module]) -> None:
    edges = graph(modules)
    assert sum(map(len, edges.values())) > 100, "the walker found too few imports to mean much"
    found = tangles(edges)
    report = "\n\n".join(
        f"{', '.join(group)} import each other, e.g.:\n"
        + describe(shortest_cycle(group, edges), edges)
        for group in found
    )
    assert not found, f"{len(found)} import cycle(s), function-level imports counted:\n{report}"


def test_only_the_api_and_the_url_conf_import_the_api(modules: dict[str, Module]) -> None:
    wrong = [
        f"{found.path.relative_to(ROOT)}:{found.line} imports {found.target}"
        for module in modules.values()
        if module.name != API
        and not module.name.startswith(API + ".")
        and module.name not in API_IMPORTERS
        for found in module.imports
        if found.target == API or found.target.startswith(API + ".")
    ]
    api_modules = [m for m in modules.values() if m.name.startswith(API + ".")]
    assert any(f.target.startswith(API + ".") for m in api_modules for f in m.imports)
    assert not wrong, "\n".join(wrong)


def test_nothing_names_the_api_in_a_string_but_settings(modules: dict[str, Module]) -> None:
    """Dotted-path strings are imports too (import_string); settings may name DRF classes."""
    allowed = {"jobcenter.settings", *API_IMPORTERS}
    wrong = []
    for module in modules.values():
        if module.name in allowed or module.name == API or module.name.startswith(API + "."):
            continue
        for node in ast.walk(ast.parse(module.path.read_text())):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and (node.value == API or node.value.startswith(API + "."))
            ):
                wrong.append(f"{module.path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not wrong, "\n".join(wrong)


def test_jobcenter_has_at_most_15_top_level_modules() -> None:
    top = sorted(path.name for path in (ROOT / "jobcenter").glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"{len(top)} modules: {', '.join(top)}"


def test_no_module_is_over_600_lines() -> None:
    too_long = {}
    for path in python_files(ROOT, PACKAGES):
        relative = path.relative_to(ROOT)
        if "migrations" in relative.parts or relative.parts[:2] == ("providers", "sandbox"):
            continue
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            too_long[str(relative)] = lines
    assert not too_long, f"over {MAX_LINES} lines: {too_long}"


def test_providers_know_nothing_of_django_or_jobcenter(modules: dict[str, Module]) -> None:
    providers = [m for m in modules.values() if m.name.split(".")[0] == "providers"]
    assert len(providers) > 5
    wrong = [
        f"{found.path.relative_to(ROOT)}:{found.line} imports {found.target}"
        for module in providers
        for found in module.imports
        if found.target.split(".")[0] in FRAMEWORKS
    ]
    assert not wrong, "\n".join(wrong)


# --- dotted paths that live outside the code ----------------------------------------------
def resolve(path: str) -> Any:
    """The object a dotted path names: the longest importable module, then attributes."""
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:end]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[end:]:
            found = getattr(found, attribute)
        return found
    raise ImportError(path)


def task_names_in_code(modules: dict[str, Module]) -> set[str]:
    """The task names jobcenter/ hands django-q2, as written: `async_task`'s first argument
    (a string, or a module constant read from the imported module) and "func" strings
    (a Schedule's function)."""
    names = set()
    for module in modules.values():
        if module.name.split(".")[0] != "jobcenter" or ".migrations" in module.name:
            continue
        for node in ast.walk(ast.parse(module.path.read_text())):
            if isinstance(node, ast.Call):
                callee = node.func
                called = callee.attr if isinstance(callee, ast.Attribute) else ""
                called = callee.id if isinstance(callee, ast.Name) else called
                if called == "async_task" and node.args:
                    first = node.args[0]
                    if isinstance(first, ast.Constant) and isinstance(first.value, str):
                        names.add(first.value)
                    elif isinstance(first, ast.Name):
                        constant = getattr(importlib.import_module(module.name), first.id)
                        assert isinstance(constant, str), (module.name, first.id)
                        names.add(constant)
                    else:
                        pytest.fail(f"{module.path}:{node.lineno}: a task name not written out")
                keywords = [k.value for k in node.keywords if k.arg == "func"]
            elif isinstance(node, ast.Dict):
                keywords = [
                    value
                    for key, value in zip(node.keys, node.values, strict=True)
                    if isinstance(key, ast.Constant) and key.value == "func"
                ]
            else:
                continue
            names.update(
                k.value
                for k in keywords
                if isinstance(k, ast.Constant) and isinstance(k.value, str)
            )
    return names


def queued_task_names(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """What `enqueue_sync` and the alert delivery queueing hand django-q2's broker."""
    from django_q.conf import Conf
    from django_q.models import OrmQ

    from jobcenter.alerts.delivery import enqueue_deliveries
    from jobcenter.models import ProviderAccount
    from jobcenter.tasks import enqueue_sync

    if "redis" in settings.Q_CLUSTER:
        pytest.skip("the queue is on Redis here; the ORM broker's rows are read")
    monkeypatch.setattr(Conf, "SYNC", False)  # queued, as in production, not run inline
    account = ProviderAccount.objects.create(name="queued", provider="klaviyo")
    enqueue_sync(account.pk)
    enqueue_deliveries([1])
    return {row.func() for row in OrmQ.objects.all()}


@pytest.mark.django_db
def test_every_dotted_path_stored_or_configured_resolves(
    modules: dict[str, Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_q.models import Schedule

    # Task functions: the schedules, what the code queues, what old databases hold.
    call_command("setup_schedules")
    scheduled = set(Schedule.objects.values_list("func", flat=True))
    in_code = task_names_in_code(modules)
    queued = queued_task_names(monkeypatch)
    assert scheduled and in_code and queued
    assert queued <= in_code | scheduled, "a task name the code scan missed"
    tasks = scheduled | in_code | queued | set(LEGACY_TASKS)
    unresolved = {}
    for name in sorted(tasks):
        try:
            ok = callable(import_string(name)) and callable(pydoc.locate(name))
        except ImportError as exc:
            ok, unresolved[name] = False, repr(exc)
        if not ok:
            unresolved.setdefault(name, "not callable (pydoc.locate: django-q2's worker)")
    assert not unresolved, unresolved

    # Settings: classes and functions named by dotted path.
    named = [
        *settings.MIDDLEWARE,
        settings.ROOT_URLCONF,
        settings.WSGI_APPLICATION,
        *(database["ENGINE"] for database in settings.DATABASES.values()),
        *(
            formatter["()"]
            for section in ("formatters", "filters", "handlers")
            for formatter in settings.LOGGING.get(section, {}).values()
            if "()" in formatter
        ),
        *(h["class"] for h in settings.LOGGING.get("handlers", {}).values() if "class" in h),
        *settings.SPECTACULAR_SETTINGS.get("ENUM_NAME_OVERRIDES", {}).values(),
        *settings.SPECTACULAR_SETTINGS.get("POSTPROCESSING_HOOKS", []),
        *settings.SPECTACULAR_SETTINGS.get("PREPROCESSING_HOOKS", []),
        *settings.SPECTACULAR_SETTINGS.get("SERVE_PERMISSIONS", []),
    ]
    for key, value in settings.REST_FRAMEWORK.items():
        if key.endswith(("_CLASS", "_CLASSES", "_BACKENDS")):
            named += [value] if isinstance(value, str) else list(value)
    assert len(named) > 20
    broken = {}
    for path in named:
        try:
            resolve(path)
        except (ImportError, AttributeError) as exc:
            broken[path] = repr(exc)
    assert not broken, broken


def test_every_path_a_migration_names_resolves(modules: dict[str, Module]) -> None:
    """Migrations name our code by attribute (jobcenter.models._provider_choices): it stays."""
    named = set()
    for module in modules.values():
        if "migrations" not in module.name.split("."):
            continue
        importlib.import_module(module.name)  # evaluates every reference in it
        for node in ast.walk(ast.parse(module.path.read_text())):
            if isinstance(node, ast.Attribute):
                chain = []
                current: ast.expr = node
                while isinstance(current, ast.Attribute):
                    chain.append(current.attr)
                    current = current.value
                if isinstance(current, ast.Name) and current.id in PACKAGES:
                    named.add(".".join([current.id, *reversed(chain)]))
    assert any(path.startswith("jobcenter.") for path in named), "no reference found"
    broken = {}
    for path in sorted(named):
        try:
            resolve(path)
        except (ImportError, AttributeError) as exc:
            broken[path] = repr(exc)
    assert not broken, broken
