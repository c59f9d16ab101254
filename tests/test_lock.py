"""pyproject.toml, the lock (requirements/lock.txt) and the running venv agree.

A release installs exactly what was tested: `make install` installs the lock's pins, each
file checked against its sha256, and nothing else. So the lock must pin, with hashes,
every package pyproject.toml asks for (runtime, every extra, the build backend) at a
version its specifier allows, and everything those need in turn, and nothing stale; the
venv the tests run in must hold those very versions; and the Makefile must install from
the lock with hashes required, again whenever the lock changes. A drift between any two
fails here, and `make lock` (docs/operations.md) is the way back.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
PYPROJECT = ROOT / "pyproject.toml"
ENTRY = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)(?P<hashes>(?:\s+\S+)*)")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def lock_lines() -> list[str]:
    """The lock's requirement lines, continuation lines joined and comments dropped."""
    text = LOCK.read_text(encoding="utf-8").replace("\\\n", " ")
    return [s for line in text.splitlines() if (s := line.split(" #")[0].strip()) and s[0] != "#"]


def locked() -> dict[NormalizedName, Version]:
    """Each locked distribution's pinned version."""
    pins = {}
    for line in lock_lines():
        match = ENTRY.fullmatch(line)
        assert match, f"not a pin in {LOCK.name}: {line[:80]}"
        pins[canonicalize_name(match["name"])] = Version(match["version"])
    return pins


def declared() -> list[Requirement]:
    """Everything pyproject.toml asks for: dependencies, every extra, the build backend."""
    data = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    project = data["project"]
    strings = [*project["dependencies"], *data["build-system"]["requires"]]
    for extra in project.get("optional-dependencies", {}).values():
        strings += extra
    return [Requirement(s) for s in strings]


def requirements_of(name: str, extras: set[str]) -> Iterator[Requirement]:
    """An installed distribution's own requirements that apply here with these extras."""
    for text in metadata.requires(name) or []:
        req = Requirement(text)
        if req.marker is None or any(
            req.marker.evaluate({"extra": extra}) for extra in {"", *extras}
        ):
            yield req


def test_every_lock_entry_is_an_exact_pin_with_hashes() -> None:
    names = []
    for line in lock_lines():
        match = ENTRY.fullmatch(line)
        assert match, f"{LOCK.name} holds more than pins (an option or a range?): {line[:80]}"
        hashes = match["hashes"].split()
        assert hashes, f"{match['name']} is pinned without a hash"
        assert all(HASH.fullmatch(h) for h in hashes), f"{match['name']}: {hashes}"
        names.append(canonicalize_name(match["name"]))
    assert len(names) == len(set(names)), "a distribution is pinned twice"
    assert len(names) > 50


def test_everything_pyproject_asks_for_is_pinned_within_its_specifier() -> None:
    pins = locked()
    for req in declared():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is in pyproject.toml but not in the lock: make lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"the lock pins {req.name}=={pins[name]}, outside pyproject.toml's {req}: make lock"
        )


def test_the_lock_holds_what_its_pins_need_and_nothing_stale() -> None:
    """From pyproject.toml down through each installed package's own requirements (extras
    and markers as pip evaluates them here), every package reached is pinned at a version
    its dependants allow, and every pin is reached."""
    pins = locked()
    todo = [(req, "pyproject.toml") for req in declared()]
    seen: set[tuple[NormalizedName, frozenset[str]]] = set()
    while todo:
        req, wanted_by = todo.pop()
        name = canonicalize_name(req.name)
        assert name in pins, f"{wanted_by} needs {req}, which the lock does not pin: make lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{wanted_by} needs {req}, the lock pins {pins[name]}: make lock"
        )
        key = (name, frozenset(req.extras))
        if key not in seen:
            seen.add(key)
            todo += [(sub, req.name) for sub in requirements_of(req.name, req.extras)]
    stale = sorted(set(pins) - {name for name, _ in seen})
    assert not stale, f"the lock pins what nothing needs any more: {stale}: make lock"


def test_the_running_venv_holds_the_locked_versions() -> None:
    """The suite runs against exactly the lock: `make install` reinstalls when it changes."""
    wrong = {}
    for name, version in locked().items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            wrong[name] = "not installed"
            continue
        if installed != version:
            wrong[name] = f"{installed} installed, {version} locked"
    assert not wrong, f"the venv is not the lock's (run make install): {wrong}"


@pytest.fixture
def make_copy(tmp_path: Path) -> Path:
    """A copy of what the install rule reads, with a stamp as if it had run."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    for name in ("Makefile", "pyproject.toml", "requirements/lock.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def make(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=cwd, capture_output=True, text=True
    )


def test_make_install_installs_the_lock_with_hashes_then_the_project(make_copy: Path) -> None:
    commands = make(make_copy, "-n", "install").stdout
    assert "from requirements/lock.txt (hashes checked)" in commands
    lock_install = re.search(
        r"pip .*install .*--require-hashes --no-deps -r requirements/lock\.txt", commands
    )
    project_install = re.search(r"pip .*install .*--no-deps --no-build-isolation -e \.", commands)
    assert lock_install, commands
    assert project_install, commands
    assert lock_install.start() < project_install.start(), "setuptools comes from the lock"
    assert "pip --disable-pip-version-check check" in commands


@pytest.mark.parametrize("changed", ["requirements/lock.txt", "pyproject.toml"])
def test_make_install_runs_again_when_the_lock_or_pyproject_changes(
    make_copy: Path, changed: str
) -> None:
    stamp = make_copy / ".venv" / ".installed"
    stamp.parent.mkdir()
    stamp.touch()
    then = stamp.stat().st_mtime
    for name in ("Makefile", "pyproject.toml", "requirements/lock.txt"):
        os.utime(make_copy / name, (then - 60, then - 60))
    assert make(make_copy, "-q", "install").returncode == 0, "up to date after an install"
    os.utime(make_copy / changed, (then + 60, then + 60))
    assert make(make_copy, "-q", "install").returncode == 1, f"{changed} changed: reinstall"
