"""A definition read from YAML, its line numbers kept, and checked before anything runs.

Errors read `file:line: where: rule`, e.g. `providers/definitions/x.yaml:12:
listings.jobs.pagination: 'kind' is a required property`, one line per problem, so the
author fixes them all in one go. Three passes: YAML (syntax, duplicate keys), the JSON
Schema in `providers/definitions/schema.json` (the reference documentation), then what a
schema cannot say (a kind a listing names exists, a template names a credential, a
JMESPath expression compiles, a hook imports).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError, best_match

from providers.declarative.fields import compile_ref, resolve_hook, template_names

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "definitions" / "schema.json"
Location = tuple[str | int, ...]


class DefinitionError(ValueError):
    """A definition that cannot be used; the message names the file, the line and the rule."""


@dataclass
class Definition:
    """A checked definition: its data as YAML gave it, and where each value was written."""

    path: Path
    data: dict[str, Any]
    lines: dict[Location, int] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return str(self.data["slug"])

    def line(self, location: Location) -> int:
        """The line a value was written on (its nearest written parent's, if none)."""
        probe = tuple(location)
        if probe and isinstance(probe[-1], str) and (*probe[:-1], "#key", probe[-1]) in self.lines:
            return self.lines[(*probe[:-1], "#key", probe[-1])]  # the key's line, not its value's
        while probe and probe not in self.lines:
            probe = probe[:-1]
        return self.lines.get(probe, 1)

    def problem(self, location: Location, text: str, line: int | None = None) -> tuple[int, str]:
        """(line, `file:line: a.b[2]: text`) for a problem at a location in the data."""
        line = line or self.line(location)
        return line, f"{display_path(self.path)}:{line}: {dotted(location)}: {text}"


def display_path(path: Path) -> str:
    """The path relative to the working directory when it is below it, else as given."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def dotted(location: Location) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top)"


# --- YAML with lines ---------------------------------------------------------------------
def read_yaml(path: Path) -> tuple[Any, dict[Location, int]]:
    """The document and the line each value starts on; a duplicate key is an error."""
    text = path.read_text(encoding="utf-8")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[Location, int] = {}
        if node is not None:
            _walk(node, (), lines, path)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise DefinitionError(f"{display_path(path)}:{line}: YAML: {exc.problem}") from None
    finally:
        loader.dispose()
    return data, lines


def _walk(node: yaml.Node, location: Location, lines: dict[Location, int], path: Path) -> None:
    lines[location] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise DefinitionError(
                    f"{display_path(path)}:{line}: {dotted((*location, key))}: duplicate key"
                )
            seen.add(key)
            lines[(*location, "#key", key)] = key_node.start_mark.line + 1
            _walk(value_node, (*location, key), lines, path)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*location, index), lines, path)


# --- the schema --------------------------------------------------------------------------
@cache
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


FORMATS = jsonschema.FormatChecker(("regex",))


@FORMATS.checks("field-reference", raises=(ValueError,))
def _is_reference(value: object) -> bool:
    return not isinstance(value, str) or compile_ref(value) is not None


@FORMATS.checks("hook", raises=(ValueError,))
def _is_hook(value: object) -> bool:
    return not isinstance(value, str) or resolve_hook(value) is not None


@cache
def validator() -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(schema())
    return jsonschema.Draft202012Validator(schema(), format_checker=FORMATS)


def schema_problems(definition: Definition) -> list[tuple[int, str]]:
    """(line, text) for each way the data breaks the schema, at its most telling cause."""
    found = []
    for error in validator().iter_errors(definition.data):
        for cause in _causes(error):
            location: Location = tuple(cause.absolute_path)
            message = cause.message
            if cause.validator == "format" and cause.cause is not None:
                message = (
                    f"{cause.instance!r} is not a valid {cause.validator_value}: {cause.cause}"
                )
            # An unexpected key: point at the key itself, not at the mapping holding it.
            unexpected = re.search(r"\('([^']+)' was unexpected\)", message)
            key = (*location, "#key", unexpected[1]) if unexpected else None
            found.append(definition.problem(location, message, definition.lines.get(key)))
    return found


def _causes(error: ValidationError) -> list[ValidationError]:
    """The errors worth reading under a oneOf: those of the branch whose `kind` the value
    names (a pagination, an auth), else the best match jsonschema finds."""
    if not error.context:
        return [error]
    if error.validator == "oneOf" and isinstance(error.instance, dict):
        branches: dict[int, list[ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(int(sub.relative_schema_path[0]), []).append(sub)
        chosen = [
            errors
            for errors in branches.values()
            if not any(tuple(e.relative_path) == ("kind",) for e in errors)
        ]
        if "kind" in error.instance and len(chosen) == 1:
            return [cause for sub in chosen[0] for cause in _causes(sub)]
        if "kind" not in error.instance and any(
            e.validator == "required" and "kind" in e.validator_value for e in error.context
        ):
            return [ValidationError("'kind' is a required property", path=error.absolute_path)]
        kinds = [e.validator_value for e in error.context if tuple(e.relative_path) == ("kind",)]
        if kinds and not chosen:  # no branch has this kind
            text = f"kind {error.instance['kind']!r} is not one of {kinds}"
            return [ValidationError(text, path=error.absolute_path)]
    return [best_match([error])]


# --- what the schema cannot say ----------------------------------------------------------
def semantic_problems(definition: Definition) -> Iterator[tuple[Location, str]]:
    data = definition.data
    kinds = [kind["name"] for kind in data["kinds"]]
    for index, name in enumerate(kinds):
        if name in kinds[:index]:
            yield ("kinds", index, "name"), f"kind {name!r} is declared twice"
    credentials = [c["name"] for c in data["credentials"]]
    derived = data.get("derived") or {}
    for name, rule in derived.items():
        if rule["from"] not in credentials:
            yield ("derived", name, "from"), f"{rule['from']!r} is not a credential field"
        elif re.compile(rule["pattern"]).groups < 1:
            yield ("derived", name, "pattern"), "the pattern needs a group: (...)"
    known = {*credentials, *derived}
    for location, text, extra in _templates(data):
        for name in sorted(template_names(text) - known - extra):
            yield location, f"{{{name}}} names no credential field or derived value"
    for name, listing in (data.get("listings") or {}).items():
        kind = listing.get("kind") or (name if name in kinds else None)
        if kind is not None and kind not in kinds:
            yield ("listings", name, "kind"), f"{kind!r} is not a declared kind"
        if kind is None and "kind" not in data["job"]:
            yield (
                ("listings", name),
                "a listing not named after a kind needs a kind, or job.kind on its records",
            )
    for status, value in data["status_map"].items():
        if value == "by_counts" and "failed" not in (data["job"].get("counts") or {}):
            yield ("status_map", status), "by_counts needs job.counts.failed"
    for index, rule in enumerate(data.get("slow_down") or []):
        if rule["status"] == 401:
            yield ("slow_down", index, "status"), "401 always means the credentials were refused"
    for location, pattern in _patterns(data):
        if re.compile(pattern).groups < 1:
            yield location, "the pattern needs a group: (...)"
    options = set(data.get("environment_options") or {}) - {"page_limit"}
    for name in sorted(options):
        yield ("environment_options", name), f"{name!r} is not an option providers read"


def _templates(data: Mapping[str, Any]) -> Iterator[tuple[Location, str, set[str]]]:
    """(where, template, placeholders allowed there beside credentials and derived values)."""
    none: set[str] = set()
    for name, url in data["base_urls"].items():
        yield ("base_urls", name), url, none
    for name, value in (data.get("headers") or {}).items():
        yield ("headers", name), value, none
    auth = data["auth"]
    for key in ("username", "password", "client_id", "client_secret", "token_path"):
        if key in auth:
            yield ("auth", key), auth[key], none
    if auth["kind"] == "oauth2_client_credentials":
        yield ("auth", "header"), auth.get("header", "Bearer {token}"), {"token"}
    for name, value in (auth.get("headers") or {}).items():
        yield ("auth", "headers", name), value, none
    if "check" in data:
        yield ("check", "path"), data["check"]["path"], none
    for name, listing in (data.get("listings") or {}).items():
        yield ("listings", name, "path"), listing["path"], none
    for prefix, section in _job_sections(data):
        for key in ("fetch", "errors"):
            if section.get(key) and "path" in section[key]:
                yield (*prefix, key, "path"), section[key]["path"], {"id"}


def _job_sections(data: Mapping[str, Any]) -> Iterator[tuple[Location, Mapping[str, Any]]]:
    yield (), data
    for index, kind in enumerate(data["kinds"]):
        yield ("kinds", index), kind


def _patterns(data: Mapping[str, Any]) -> Iterator[tuple[Location, str]]:
    for prefix, section in _job_sections(data):
        errors = section.get("errors") or {}
        for key, value in errors.items():
            if isinstance(value, dict) and "match" in value:
                yield (*prefix, "errors", key, "match"), value["match"]


# --- the whole load ----------------------------------------------------------------------
def load_definition(path: str | os.PathLike[str]) -> Definition:
    """Read and check one definition; DefinitionError listing every problem found."""
    path = Path(path)
    data, lines = read_yaml(path)
    definition = Definition(path, data if isinstance(data, dict) else {}, lines)
    if not isinstance(data, dict):
        raise DefinitionError(f"{display_path(path)}:1: (top): a definition is a YAML mapping")
    problems = schema_problems(definition)
    if not problems:
        problems = [
            definition.problem(location, text) for location, text in semantic_problems(definition)
        ]
    if problems:
        raise DefinitionError("\n".join(text for _, text in sorted(problems)))
    return definition


def load_folder(folder: str | os.PathLike[str]) -> list[Definition]:
    """Every `*.yaml` definition of a folder, all checked before any is used: one bad file
    refuses them all, with every file's problems in the message."""
    definitions, problems = [], []
    for path in sorted(Path(folder).glob("*.yaml")):
        try:
            definitions.append(load_definition(path))
        except DefinitionError as exc:
            problems.append(str(exc))
    slugs: dict[str, Definition] = {}
    for definition in definitions:
        other = slugs.setdefault(definition.slug, definition)
        if other is not definition:
            problems.append(
                definition.problem(
                    ("slug",), f"{definition.slug!r} is also declared in {display_path(other.path)}"
                )[1]
            )
    if problems:
        raise DefinitionError("\n".join(problems))
    return definitions
