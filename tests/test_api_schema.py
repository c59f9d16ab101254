"""The OpenAPI document: valid, served with Swagger UI from local files, and true.

"True" is checked by schemathesis against a live server, with the project's own schema
from /api/schema/: generated valid and invalid requests for every operation must get an
answer the schema documents (400/404 with field errors for bad input), never a 5xx.
Sync and connection test are left out of the fuzzing (they call providers); their
answers are tested against the sandbox in test_api_accounts.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from django.conf import settings as django_settings
from django.core.cache import cache
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api_support import api_account, api_key, make_user, seed_history, token_client

ROOT = Path(__file__).resolve().parent.parent
# Hypothesis keeps caches in ./.hypothesis by default: keep the checkout clean.
set_hypothesis_home_dir(str(Path(tempfile.gettempdir()) / "jobcenter-hypothesis"))
# Examples per operation: valid requests, invalid ones, valid ones on existing rows.
POSITIVE, NEGATIVE, ON_ROWS = 25, 20, 10
NOT_FUZZED = r"/accounts/\{id\}/(sync|test)/$"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_spectacular_validates_without_warnings(tmp_path: Path) -> None:
    """The command CI runs, as a deployment would: production settings, DEBUG off."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "jobcenter.settings",
        "DEBUG": "",
        "SECRET_KEY": "schema-check-only",
        "JOBCENTER_FERNET_KEYS": django_settings.JOBCENTER_FERNET_KEYS[0],
    }
    out = tmp_path / "schema.yaml"
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "spectacular",
            "--validate",
            "--fail-on-warn",
            "--file",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Warning" not in result.stderr
    assert "/api/v1/jobs/" in out.read_text()


@pytest.mark.django_db
def test_swagger_ui_is_served_without_a_cdn() -> None:
    client = token_client(make_user("superuser"))
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn." not in html
    assert "unpkg" not in html
    # No inline script (the Content-Security-Policy refuses them): Swagger UI's start-up
    # script, which names the schema, is a file of its own.
    assert "<script>" not in html and '<script src="/api/docs/?script="></script>' in html
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200 and script["Content-Type"] == "application/javascript"
    assert "/api/schema/" in script.content.decode()


@pytest.mark.django_db
def test_schema_documents_every_endpoint_and_no_format_parameter() -> None:
    client = token_client(make_user("superuser"))
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths = set(schema["paths"])
    assert {
        "/api/v1/jobs/",
        "/api/v1/jobs/{id}/",
        "/api/v1/jobs/track/",
        "/api/v1/jobs/{job_id}/snapshots/",
        "/api/v1/jobs/{job_id}/errors/",
        "/api/v1/snapshots/",
        "/api/v1/errors/",
        "/api/v1/accounts/",
        "/api/v1/accounts/{id}/",
        "/api/v1/accounts/{id}/sync/",
        "/api/v1/accounts/{id}/test/",
        "/api/v1/sync-runs/",
    } <= paths
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            names = {p["name"] for p in operation.get("parameters", [])}
            assert "format" not in names, path
    account = schema["components"]["schemas"]["Account"]["properties"]
    assert "credentials" not in account
    assert "credentials_hint" in account
    assert schema["components"]["schemas"]["AccountRequest"]["properties"]["credentials"][
        "writeOnly"
    ]


@pytest.fixture
def fuzz_target(live_server: Any) -> dict[str, Any]:
    """A live server with rows to find, and a superuser's token."""
    cache.clear()
    user = make_user("superuser")
    key = api_key(user)
    # Loopback base URL: nothing fuzzed syncs, and nothing could reach a real host.
    account = api_account(base_url="http://127.0.0.1:9/elasticpath")
    seeded = seed_history(account)
    return {
        "url": live_server.url,
        "headers": {"Authorization": f"Token {key}"},
        "ids": {
            "/api/v1/jobs/{id}/": seeded["jobs"][1].pk,
            "/api/v1/snapshots/{id}/": seeded["snapshots"][0].pk,
            "/api/v1/errors/{id}/": seeded["errors"][0].pk,
            "/api/v1/accounts/{id}/": account.pk,
            "/api/v1/sync-runs/{id}/": seeded["run"].pk,
        },
        "job_id": seeded["jobs"][1].pk,
    }


def fuzz(strategy: Any, examples: int, target: dict[str, Any], checks: list) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        case.call_and_validate(headers=target["headers"], checks=checks)

    run()


@pytest.mark.django_db(transaction=True)
def test_schemathesis_finds_no_server_error_and_no_answer_off_the_schema(
    fuzz_target: dict[str, Any],
) -> None:
    schema = schemathesis.openapi.from_url(
        f"{fuzz_target['url']}/api/schema/?format=json", headers=fuzz_target["headers"]
    )
    schema = schema.exclude(path_regex=NOT_FUZZED)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        runs = [
            (operation.as_strategy(), POSITIVE, CHECKS),
            (
                operation.as_strategy(schemathesis.GenerationMode.NEGATIVE),
                NEGATIVE,
                [*CHECKS, negative_data_rejection],
            ),
        ]
        fixed = {}
        if "{job_id}" in operation.path:
            fixed = {"job_id": fuzz_target["job_id"]}
        elif operation.path in fuzz_target["ids"]:
            fixed = {"id": fuzz_target["ids"][operation.path]}
        if fixed:  # also requests that find their row
            runs.append((operation.as_strategy(path_parameters=fixed), ON_ROWS, CHECKS))
        for strategy, examples, checks in runs:
            try:
                fuzz(strategy, examples, fuzz_target, checks)
            except Unsatisfiable:
                # No invalid value survives serialization (an integer path parameter
                # sent as text is covered by the positive runs' 404s).
                assert negative_data_rejection in checks, operation.label
            except (Exception, BaseExceptionGroup) as exc:  # report every operation's failures
                failures.append(f"{operation.label}: {exc}"[:3000])
    assert operations >= 15
    assert not failures, "\n\n".join(failures)
