"""The declarative provider engine (providers/declarative/): definitions checked with the
file, the line and the rule; start-up refused on an invalid one; each pagination and auth
style, JMESPath and JSON pointer mapping, the count rule, CSV and JSON error records, a 403
that means "slow down", and secrets kept out of every error and log line.

The engine talks to a small job API on 127.0.0.1 over real HTTP (tests/declarative_support.py);
the Elastic Path twin (tests/test_declarative_twin.py) runs against that provider's sandbox.
"""

from __future__ import annotations

import copy
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from providers import REGISTRY, get_provider, provider_choices, register_definitions, unregister
from providers.base import Status
from providers.declarative import DefinitionError, load_definition, provider_class
from providers.declarative.auth import forget_tokens
from providers.errors import AuthError, BadResponse, InvalidCursor, RateLimited
from providers.http import RetryPolicy
from providers.outbound import OutboundPolicy, Refused
from tests.declarative_support import API_KEY, CLIENT_ID, CLIENT_SECRET, JOBS, toy_api

ROOT = Path(__file__).resolve().parent.parent
IDS = [job["id"] for job in JOBS]
OFFSET = {"kind": "offset", "offset_param": "offset", "limit_param": "limit", "limit": 5}
BASE: dict[str, Any] = {
    "slug": "toy",
    "label": "Toy jobs",
    "sandbox": "providers.sandbox.elasticpath:ElasticPathSandbox",
    "base_urls": {"main": "https://api.toy.example"},
    "documented_hosts": ["api.toy.example"],
    "credentials": [{"name": "api_key", "label": "API key"}],
    "auth": {"kind": "header", "headers": {"Authorization": "Bearer {api_key}"}},
    "kinds": [{"name": "import", "label": "Import"}, {"name": "export", "label": "Export"}],
    "listings": {
        "all": {
            "path": "/offset",
            "records": "items",
            "pagination": {**OFFSET, "total": "total"},
        }
    },
    "fetch": {"path": "/jobs/{id}", "record": "job"},
    "errors": {
        "kind": "json_list",
        "path": "/jobs/{id}/errors",
        "records": "errors",
        "pagination": {**OFFSET, "limit": 3, "total": "/total"},
        "message": "error.text",
        "external_id": "/id",
    },
    "job": {
        "id": "id",
        "kind": "attributes.kind",
        "status": "state",
        "counts": {"total": "counts.total", "completed": "/counts/done", "failed": "counts.failed"},
        "times": {"created_at": "created"},
    },
    "status_map": {
        "Queued": "queued",
        "running": "running",
        "finished": "by_counts",
        "aborted": "cancelled",
    },
}


def definition(tmp_path: Path, changes: dict[str, Any] | None = None, **top: Any) -> Path:
    data = copy.deepcopy(BASE)
    data.update(top)
    for dotted, value in (changes or {}).items():
        *parents, last = dotted.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[last] = value
    path = tmp_path / f"{data['slug']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def provider(path: Path, base_url: str, credentials: dict[str, str] | None = None, **kw: Any):
    cls = provider_class(load_definition(path))
    return cls(
        credentials if credentials is not None else {"api_key": API_KEY},
        base_url=base_url,
        outbound=OutboundPolicy.development(),  # the API is on loopback
        retry=RetryPolicy(max_attempts=2, backoff_base=0.01, max_inline_retry_after=1),
        **kw,
    )


def listed(instance: Any, listing: str = "all", cursor: str | None = None) -> tuple[list, list]:
    pages = list(instance.iter_pages(listing, cursor))
    return [r.external_id for p in pages for r in p.records], [p.next_cursor for p in pages]


# --- checked with file, line and rule -------------------------------------------------------
HEAD = (  # 13 lines, then the listing's pagination on line 14
    "slug: broken\nlabel: Broken\nsandbox: providers.sandbox.elasticpath:ElasticPathSandbox\n"
    "base_urls: {main: 'https://api.toy.example'}\n"
    "credentials: [{name: api_key, label: Key}]\n"
    "auth: {kind: header, headers: {Authorization: 'Bearer {api_key}'}}\n"
    "kinds: [{name: import, label: Import}]\n"
    "job: {id: id, status: state}\nstatus_map: {done: succeeded}\n"
    "listings:\n  jobs:\n    path: /jobs\n    records: data\n    "
)
BROKEN = [
    (
        "pagination:\n      offset_param: o\n",
        14,
        "listings.jobs.pagination: 'kind' is a required property",
    ),
    ("pagination: {kind: pages}\n", 14, "listings.jobs.pagination: kind 'pages' is not one of"),
    ("pagination: {kind: none, size: 3}\n", 14, "('size' was unexpected)"),
    (
        "pagination: {kind: none}\n    fetch_each: maybe\n",
        15,
        "listings.jobs.fetch_each: 'maybe' is not of type 'boolean'",
    ),
    ("pagination: {kind: none}\n    records: data\n", 15, "listings.jobs.records: duplicate key"),
    (
        "pagination: {kind: none}\n    kind: report\n",
        15,
        "listings.jobs.kind: 'report' is not a declared kind",
    ),
    (
        "pagination: {kind: cursor_field, next: 'paging.[', cursor_param: after}\n",
        14,
        "is not a valid field-reference: not a JMESPath",
    ),
    ("pagination: [unclosed\n", 15, "YAML:"),
]


@pytest.mark.parametrize(("pagination", "line", "rule"), BROKEN)
def test_a_broken_definition_is_refused_naming_file_line_and_rule(
    tmp_path: Path, pagination: str, line: int, rule: str
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(HEAD + pagination)
    with pytest.raises(DefinitionError) as refused:
        load_definition(path)
    message = str(refused.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert rule in message


def test_every_problem_is_listed_at_its_own_line(tmp_path: Path) -> None:
    path = definition(
        tmp_path,
        {"base_urls.main": "https://{region}.toy.example", "status_map.finished": "by_count"},
        auth={"kind": "basic", "username": "x"},
    )
    with pytest.raises(DefinitionError) as refused:
        load_definition(path)
    lines = str(refused.value).splitlines()
    assert len(lines) == 2, lines
    assert all(line.startswith(f"{path}:") for line in lines)
    assert any("auth: 'password' is a required property" in line for line in lines)
    assert any("status_map.finished: 'by_count' is not one of" in line for line in lines)
    fixed = definition(tmp_path, {"base_urls.main": "https://{region}.toy.example"})
    with pytest.raises(DefinitionError, match=r"\{region\} names no credential field"):
        load_definition(fixed)


def test_the_schema_describes_every_property() -> None:
    import json

    schema = json.loads((ROOT / "providers/definitions/schema.json").read_text())
    undescribed = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for name, sub in (node.get("properties") or {}).items():
                if isinstance(sub, dict) and "description" not in sub:
                    undescribed.append(f"{where}.{name}")
            for key, sub in node.items():
                if key not in ("if", "then"):  # conditions restate described properties
                    walk(sub, f"{where}.{key}")
        elif isinstance(node, list):
            for index, sub in enumerate(node):
                walk(sub, f"{where}[{index}]")

    walk(schema, "schema")
    assert undescribed == []


# --- registry and start-up ------------------------------------------------------------------
def test_a_folder_registers_all_its_definitions_or_none(tmp_path: Path) -> None:
    definition(tmp_path)
    slugs = register_definitions(tmp_path)
    try:
        assert slugs == ["toy"]
        assert REGISTRY["toy"].definition.endswith("toy.yaml")
        assert get_provider("toy").label == "Toy jobs"
        assert ("toy", "Toy jobs") in provider_choices()
        with pytest.raises(DefinitionError, match="'toy' is already a provider"):
            register_definitions(tmp_path)
    finally:
        unregister(slugs)
    definition(tmp_path, slug="toy_two", label=7)
    with pytest.raises(DefinitionError, match=r"toy_two\.yaml:2: label: 7 is not of type"):
        register_definitions(tmp_path)
    assert "toy" not in REGISTRY and "toy_two" not in REGISTRY


def start_django(folder: Path) -> subprocess.CompletedProcess[str]:
    code = "import django; django.setup(); from providers import REGISTRY; print(sorted(REGISTRY))"
    environ = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "jobcenter.settings",
        "DEBUG": "1",
        "JOBCENTER_PROVIDER_DEFINITIONS_DIR": str(folder),
    }
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True
    )


def test_start_up_loads_the_folder_and_refuses_an_invalid_definition(tmp_path: Path) -> None:
    started = start_django(ROOT / "tests" / "definitions")
    assert started.returncode == 0, started.stderr
    assert "'elasticpath_twin'" in started.stdout
    definition(tmp_path, {"listings.all.pagination": {"offset_param": "o"}})
    refused = start_django(tmp_path)
    assert refused.returncode != 0
    assert f"{tmp_path / 'toy.yaml'}:" in refused.stderr
    assert "listings.all.pagination: 'kind' is a required property" in refused.stderr


# --- pagination -----------------------------------------------------------------------------
STYLES = {
    "offset": {"path": "/offset", "records": "items", "pagination": OFFSET},
    "offset_total": {
        "path": "/offset",
        "records": "items",
        "pagination": {**OFFSET, "total": "total"},
    },
    "next_link": {
        "path": "/linked",
        "records": "data",
        "pagination": {
            "kind": "next_link",
            "next": "links.next",
            "limit_param": "limit",
            "limit": 4,
        },
    },
    "cursor_field": {
        "path": "/cursor",
        "records": "/results",
        "pagination": {
            "kind": "cursor_field",
            "next": "paging.next.after",
            "cursor_param": "after",
        },
    },
    "next_records_url": {
        "path": "/locator",
        "records": "records",
        "pagination": {"kind": "next_records_url", "next": "nextRecordsUrl", "done": "done"},
    },
}


@pytest.mark.parametrize("style", sorted(STYLES))
def test_each_pagination_style_lists_every_job_and_resumes_from_its_cursor(
    tmp_path: Path, style: str
) -> None:
    with toy_api() as (base_url, _):
        instance = provider(definition(tmp_path, listings={"all": STYLES[style]}), base_url)
        ids, cursors = listed(instance)
        assert ids == IDS
        assert cursors[-1] is None and all(cursors[:-1]) and len(cursors) > 3
        resumed, _ = listed(instance, cursor=cursors[1])
        assert resumed == ids[-len(resumed) :] and 0 < len(resumed) < len(ids)


@pytest.mark.parametrize(("total", "requests"), [(None, 2), ("total", 1)])
def test_a_stated_total_saves_the_empty_last_page(tmp_path: Path, total, requests) -> None:
    pagination = {**OFFSET, "limit": len(JOBS)} | ({"total": total} if total else {})
    listing = {"path": "/offset", "records": "items", "pagination": pagination}
    with toy_api() as (base_url, state):
        ids, _ = listed(provider(definition(tmp_path, listings={"all": listing}), base_url))
    assert ids == IDS
    assert len(state.seen) == requests


def test_a_saved_cursor_that_does_not_read_is_an_invalid_cursor(tmp_path: Path) -> None:
    with toy_api() as (base_url, _):
        offsets = provider(definition(tmp_path), base_url)
        with pytest.raises(InvalidCursor):
            listed(offsets, cursor="page-2")
        links = provider(definition(tmp_path, listings={"all": STYLES["next_link"]}), base_url)
        with pytest.raises(InvalidCursor):
            listed(links, cursor="javascript:alert(1)")


def test_a_next_link_to_another_host_is_refused_with_the_key_kept_home(tmp_path: Path) -> None:
    elsewhere = {**STYLES["next_link"], "path": "/elsewhere"}
    with toy_api() as (base_url, state):
        instance = provider(definition(tmp_path, listings={"all": elsewhere}), base_url)
        with pytest.raises(Refused, match="another host"):
            listed(instance)
    assert [path for _, path, _ in state.seen] == ["/elsewhere?limit=4"]


# --- mapping --------------------------------------------------------------------------------
def test_jmespath_and_json_pointer_read_the_same_job_and_the_count_rule_applies(
    tmp_path: Path,
) -> None:
    pointers = {
        "id": "/id",
        "kind": "/attributes/kind",
        "status": "/state",
        "counts": {
            "total": "/counts/total",
            "completed": "/counts/done",
            "failed": "/counts/failed",
        },
        "times": {"created_at": "/created"},
    }
    with toy_api() as (base_url, _):
        by_jmespath = provider(definition(tmp_path), base_url)
        by_pointer = provider(definition(tmp_path, job=pointers, slug="toy_pointer"), base_url)
        records = [r for p in by_jmespath.iter_pages("all") for r in p.records]
        assert records == [r for p in by_pointer.iter_pages("all") for r in p.records]
        fetched = by_pointer.fetch_job("import", "j8")
    statuses = {r.external_id: r.status for r in records}
    assert statuses["j5"] == Status.QUEUED  # "queued" matched "Queued" ignoring case
    assert statuses["j6"] == Status.RUNNING
    assert statuses["j7"] == Status.SUCCEEDED  # finished, nothing failed
    assert statuses["j8"] == Status.PARTIALLY_FAILED  # finished, 4 of 10 failed
    assert statuses["j9"] == Status.CANCELLED
    j8 = next(r for r in records if r.external_id == "j8")
    assert fetched == j8
    assert (j8.kind, j8.total_count, j8.completed_count, j8.failed_count) == ("export", 10, 10, 4)
    assert j8.created_at is not None and j8.created_at.isoformat() == "2026-01-01T00:08:00+00:00"
    assert j8.raw == JOBS[7]


def test_a_malformed_answer_is_a_bad_response_with_a_redacted_excerpt(tmp_path: Path) -> None:
    garbled = {**STYLES["offset"], "path": "/garbled"}
    with toy_api() as (base_url, _):
        instance = provider(definition(tmp_path, listings={"all": garbled}), base_url)
        with pytest.raises(BadResponse) as bad:
            listed(instance)
    assert "no list of records" in bad.value.message
    assert "not a list Bearer [redacted]" in bad.value.excerpt
    assert API_KEY not in bad.value.excerpt


# --- error records --------------------------------------------------------------------------
def test_paged_json_error_records(tmp_path: Path) -> None:
    with toy_api() as (base_url, _):
        errors = list(provider(definition(tmp_path), base_url).iter_errors("import", "j8"))
    assert [(e.external_id, e.message) for e in errors] == [
        (f"e{n}", f"row {n}: bad") for n in range(7)
    ]


def test_a_csv_document_of_failed_records(tmp_path: Path) -> None:
    csv_errors = {
        "kind": "csv",
        "path": "/jobs/{id}/failedResults/",
        "message": "sf__Error",
        "code": {"from": "sf__Error", "match": "^([A-Z_]+):"},
        "external_id": "sf__Id",
        "personal_data": {"all_but": ["sf__Id", "sf__Error"]},
    }
    kinds = [{"name": "import", "label": "Import", "errors": csv_errors}, BASE["kinds"][1]]
    with toy_api() as (base_url, state):
        instance = provider(definition(tmp_path, kinds=kinds), base_url)
        errors = list(instance.iter_errors("import", "j8"))
        assert len(list(instance.iter_errors("export", "j8"))) == 7  # the definition's own
    assert [(e.code, e.external_id) for e in errors] == [
        ("REQUIRED_FIELD_MISSING", "a1"),
        ("DUPLICATE_VALUE", "a2"),
    ]
    assert errors[1].raw["Name"] == "Ann, B"
    assert errors[1].without_personal_data().raw == {
        "sf__Id": "a2",
        "sf__Error": "DUPLICATE_VALUE:duplicate value found: Email",
    }
    assert ("GET", "/jobs/j8/failedResults/", f"Bearer {API_KEY}") in state.seen


# --- auth -----------------------------------------------------------------------------------
def test_basic_auth_and_a_data_centre_from_the_key(tmp_path: Path) -> None:
    basic = {"kind": "basic", "username": "anystring", "password": "{api_key}"}
    path = definition(
        tmp_path,
        auth=basic,
        base_urls={"main": "https://{dc}.api.toy.example"},
        host_patterns=["*.api.toy.example"],
        derived={"dc": {"from": "api_key", "pattern": "-([a-z]+[0-9]+)$"}},
    )
    cls = provider_class(load_definition(path))
    assert cls.rendered_base_url(cls.template_values({"api_key": API_KEY})) == (
        "https://us6.api.toy.example"
    )
    with pytest.raises(AuthError, match="does not say its dc"):
        cls.template_values({"api_key": "no-suffix-here"})
    with toy_api("basic") as (base_url, _):
        ids, _ = listed(provider(path, base_url))
    assert ids == IDS


def test_a_rendered_host_outside_the_patterns_is_refused(tmp_path: Path) -> None:
    path = definition(
        tmp_path,
        credentials=[{"name": "instance_url", "label": "Instance URL", "secret": False}],
        base_urls={"org": "{instance_url}"},
        host_patterns=["*.my.toy.example"],
        auth={"kind": "none"},
    )
    cls = provider_class(load_definition(path))
    ok = cls.rendered_base_url({"instance_url": "https://acme.my.toy.example"})
    assert ok == "https://acme.my.toy.example"
    for url in ("https://evil.example", "http://acme.my.toy.example", "https://a.b.my.toy.example"):
        with pytest.raises(AuthError, match="not a Toy jobs host"):
            cls.rendered_base_url({"instance_url": url})


OAUTH = {
    "kind": "oauth2_client_credentials",
    "token_path": "/token",
    "client_id": "{client_id}",
    "client_secret": "{client_secret}",
}
OAUTH_CREDENTIALS = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
OAUTH_FIELDS = [
    {"name": "client_id", "label": "Client ID"},
    {"name": "client_secret", "label": "Secret"},
]


def test_an_oauth_token_is_shared_by_instances_and_renewed_once_on_401(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    forget_tokens()
    path = definition(tmp_path, auth=OAUTH, credentials=OAUTH_FIELDS)
    with toy_api("oauth") as (base_url, state):
        first = provider(path, base_url, OAUTH_CREDENTIALS)
        assert listed(first)[0] == IDS
        second = provider(path, base_url, OAUTH_CREDENTIALS)
        assert listed(second)[0] == IDS
        assert state.token_requests == 1  # one token for both instances

        state.tokens.clear()  # the provider forgets every token it issued
        assert second.fetch_job("import", "j1").external_id == "j1"
        assert state.token_requests == 2  # renewed once...
        assert listed(first)[0] == IDS
        assert state.token_requests == 2  # ...and the other instance takes the new one

        state.tokens.clear()
        state.secret_revoked = True
        with pytest.raises(AuthError) as refused:
            first.fetch_job("import", "j1")
        assert state.token_requests == 3
    text = f"{refused.value} {caplog.text}"
    assert "authentication failed" in str(refused.value)
    for secret in (CLIENT_SECRET, "tok-0001-0123456789", "tok-0002-0123456789"):
        assert secret not in text
    forget_tokens()


def test_a_403_with_a_rate_limit_code_means_slow_down(tmp_path: Path) -> None:
    slow = [
        {
            "status": 403,
            "code_at": "[0].errorCode",
            "codes": ["REQUEST_LIMIT_EXCEEDED"],
            "retry_after": 3600,
        }
    ]
    limited = {**STYLES["offset"], "path": "/limited"}
    with toy_api() as (base_url, state):
        instance = provider(
            definition(tmp_path, listings={"all": limited}, slow_down=slow), base_url
        )
        with pytest.raises(RateLimited) as told:
            listed(instance)
        assert told.value.retry_after == 3600  # too long to wait in place: the account defers
        assert len(state.seen) == 1
        plain = provider(
            definition(tmp_path, listings={"all": limited}, slug="toy_plain"), base_url
        )
        with pytest.raises(AuthError, match="access denied"):
            listed(plain)


def test_a_named_hook_runs_on_each_job_and_a_missing_one_is_refused(tmp_path: Path) -> None:
    hooked = definition(tmp_path, hooks={"job": "tests.declarative_support:shout_status"})
    with toy_api() as (base_url, _):
        records = [r for p in provider(hooked, base_url).iter_pages("all") for r in p.records]
    assert {r.provider_status for r in records} == {"QUEUED", "RUNNING", "FINISHED", "ABORTED"}
    missing = definition(tmp_path, hooks={"job": "tests.declarative_support:nope"})
    with pytest.raises(DefinitionError, match=r"hooks\.job: .* has no function nope"):
        load_definition(missing)
