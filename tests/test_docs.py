"""The documentation stays true to the repository: README.md and docs/*.md.

Every path they name exists, every relative link (and its #anchor) resolves, README stays
a front door of at most 150 lines, every environment variable the settings read is in
docs/configuration.md (and every variable documented there is read), every `manage.py`
command and dotted name they mention exists, and nothing in the repository points
outside it, except the tests' optional look-up of the providers' specs in ../shared/specs.
The README tour's API step is run as written: the token the command prints opens the API.
"""

from __future__ import annotations

import importlib
import io
import re
import subprocess
from pathlib import Path

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.core.management import call_command, get_commands
from django.test import Client

from providers import get_provider, provider_choices

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
README_MAX_LINES = 150

# Top-level folders whose paths the docs name in backticks.
PATH_ROOTS = (
    "jobcenter/",
    "providers/",
    "tests/",
    "bench/",
    "docs/",
    "templates/",
    "requirements/",
)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
MANAGE_COMMAND = re.compile(r"manage\.py[ \t]+([a-z_]+)")
DOTTED = re.compile(r"^(?:jobcenter|providers)(?:\.[A-Za-z_]\w*)+$")
FILE_SUFFIXES = ("sqlite3", "py", "md", "json", "csv", "ndjson")


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def prose(text: str) -> str:
    """The text without fenced code blocks."""
    return FENCE.sub("", text)


def named_paths(text: str) -> set[str]:
    """Repository paths in inline code, e.g. `jobcenter/sync/engine.py`."""
    found = set()
    for code in INLINE_CODE.findall(prose(text)):
        if code.startswith(PATH_ROOTS) and re.fullmatch(r"[\w./-]+", code):
            found.add(code)
    return found


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def anchors(path: Path) -> set[str]:
    return {anchor(h) for h in HEADING.findall(prose(path.read_text(encoding="utf-8")))}


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_every_path_a_page_names_exists(path: Path) -> None:
    missing = sorted(
        p for p in named_paths(path.read_text(encoding="utf-8")) if not (ROOT / p).exists()
    )
    assert not missing, f"{page_id(path)} names paths that do not exist: {missing}"


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_every_relative_link_resolves_with_its_anchor(path: Path) -> None:
    broken = []
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, fragment = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if (
            not resolved.exists()
            or not resolved.is_relative_to(ROOT)
            or (fragment and resolved.suffix == ".md" and fragment not in anchors(resolved))
        ):
            broken.append(target)
    assert not broken, f"{page_id(path)} has links that lead nowhere: {broken}"


def test_readme_is_a_front_door_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    assert "make demo" in text and "make test" in text
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo:", makefile, re.MULTILINE)
    assert re.search(r"^test:", makefile, re.MULTILINE)
    unlinked = [page.name for page in DOCS if f"(docs/{page.name})" not in text]
    assert not unlinked, f"README does not link {unlinked}"


def settings_variables() -> set[str]:
    """The variables settings.py reads, and those it reads for the providers."""
    source = (ROOT / "jobcenter" / "settings.py").read_text(encoding="utf-8")
    read = re.compile(
        r"(?:os\.environ\.get|os\.getenv|env_bool|env_int|env_list)\(\s*\"([A-Z][A-Z0-9_]*)\""
        r"|os\.environ\[\s*\"([A-Z][A-Z0-9_]*)\"\s*\]"
    )
    variables = {a or b for a, b in read.findall(source)}
    for slug, _ in provider_choices():  # options_from_environment
        variables |= set(get_provider(slug).environment_options.values())
    return variables


def test_every_variable_the_settings_read_is_documented_and_only_those() -> None:
    variables = settings_variables()
    assert len(variables) > 40, "the settings' environment reads were not found"
    configuration = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    undocumented = sorted(v for v in variables if f"`{v}`" not in configuration)
    assert not undocumented, f"docs/configuration.md lacks {undocumented}"
    # The first cell of each table row names the variables it documents.
    documented = set()
    for row in re.findall(r"^\| (.+?) \|", configuration, re.MULTILINE):
        documented |= set(re.findall(r"`([A-Z][A-Z0-9_]*)`", row))
    stale = sorted(documented - variables)
    assert not stale, f"docs/configuration.md documents variables nothing reads: {stale}"


def code_text(text: str) -> str:
    """The fenced blocks and inline code of a page, where commands are written."""
    fenced = [match.group(0) for match in FENCE.finditer(text)]
    return "\n".join(fenced + INLINE_CODE.findall(prose(text)))


def test_every_command_the_pages_run_exists() -> None:
    commands = get_commands()
    named = set()
    for path in PAGES:
        named |= set(MANAGE_COMMAND.findall(code_text(path.read_text(encoding="utf-8"))))
    unknown = sorted(name for name in named if name not in commands)
    assert "sync_jobs" in named and not unknown, f"no such manage.py commands: {unknown}"


def permission_names() -> set[str]:
    names = set()
    for model in apps.get_app_config("jobcenter").get_models():
        meta = model._meta
        names |= {f"jobcenter.{codename}" for codename, _ in meta.permissions}
        names |= {f"jobcenter.{action}_{meta.model_name}" for action in meta.default_permissions}
    return names


def resolves(dotted: str) -> bool:
    """Whether `a.b.c` is an importable module or an attribute of one."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for name in parts[split:]:
                value = getattr(value, name)
        except AttributeError:
            return False
        return True
    return False


def test_every_dotted_name_the_pages_mention_resolves() -> None:
    permissions = permission_names()
    unknown = []
    for path in PAGES:
        for code in INLINE_CODE.findall(prose(path.read_text(encoding="utf-8"))):
            if not DOTTED.match(code) or code.endswith(FILE_SUFFIXES):
                continue  # not a dotted name, or a file name (`jobcenter.sqlite3`)
            if code not in permissions and not resolves(code):
                unknown.append(f"{page_id(path)}: {code}")
    assert not unknown, "names that do not resolve:\n" + "\n".join(unknown)


# Pointers to files beside the repository (a neighbouring checkout's notes or specs).
OUTSIDE = re.compile(r"(?<![\w/.-])(?:\.\./)*shared/[\w.-]|DESIGN\.md")
SPEC_LOOKUP = "../shared/specs"
TEXT_SUFFIXES = {".py", ".md", ".txt", ".toml", ".cfg", ".ini", ".html", ".js", ".css", ""}
SKIPPED_DIRS = {".git", ".venv", ".cache", "node_modules", "__pycache__", "staticfiles"}


def repository_files() -> list[Path]:
    """The repository's own files: git's list when there is one, else a walk."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.splitlines()
        files = [ROOT / name for name in listed]
    except (OSError, subprocess.SubprocessError):
        files = [
            p
            for p in ROOT.rglob("*")
            if not SKIPPED_DIRS & set(p.relative_to(ROOT).parts) and ".egg-info" not in str(p)
        ]
    return [p for p in files if p.is_file() and p.suffix in TEXT_SUFFIXES]


def test_nothing_in_the_repository_points_outside_it() -> None:
    this_file = Path(__file__).resolve()
    found = []
    for path in repository_files():
        if path.resolve() == this_file:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        relative = page_id(path)
        for number, line in enumerate(text.splitlines(), 1):
            for match in OUTSIDE.finditer(line):
                lookup = line[match.start() :].startswith(SPEC_LOOKUP)
                if lookup and relative.startswith("tests/"):
                    continue  # the tests' optional look-up of the providers' specs
                found.append(f"{relative}:{number}: {line.strip()}")
    assert not found, "these point outside the repository:\n" + "\n".join(found)


@pytest.mark.django_db
def test_the_tours_token_opens_the_api() -> None:
    """README tour, step 6: `create_api_token admin`, then the job list with that token."""
    User.objects.create_superuser("admin", "admin@example.invalid", "not-used-here")
    out = io.StringIO()
    call_command("create_api_token", "admin", stdout=out, stderr=io.StringIO())
    token = re.fullmatch(r"(jc_[0-9a-f]{64})\n", out.getvalue())
    assert token, out.getvalue()
    readme = README.read_text(encoding="utf-8")
    assert "manage.py create_api_token admin" in readme
    assert "/api/v1/jobs/?status=failed&page_size=5" in readme
    response = Client().get(
        "/api/v1/jobs/?status=failed&page_size=5",
        HTTP_AUTHORIZATION=f"Token {token.group(1)}",
    )
    assert response.status_code == 200, response.content
    assert set(response.json()) == {"next", "previous", "results"}
