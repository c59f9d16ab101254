"""Error records without the failing record's own data, when the deployment says so.

JOBCENTER_ERROR_RECORD_PERSONAL_DATA=drop stores what went wrong (message, code, where)
and drops what each provider declares as the record itself: the profile Klaviyo echoes
in an import error's `original_payload`, the event or user Fullstory sends back with a
failed one. Synced from the sandbox over real HTTP, both ways.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import override_settings

from jobcenter.models import JobError
from jobcenter.sync.engine import sync_account
from jobcenter.sync.tracking import track_job
from providers.base import JobErrorRecord, PersonalData
from tests.factories import create_fullstory_batch, events, sandbox_account, users

pytestmark = pytest.mark.django_db(transaction=True)

IMPORTS = "profile-bulk-import-job"
EVENTS = "events-batch-import"
USERS = "users-batch-import"


def stored_text(rows: Any) -> str:
    """Every column of the rows as one text: the personal data may be nowhere in it."""
    return json.dumps(
        list(rows.values("code", "title", "message", "source", "external_id", "raw")),
        default=str,
    )


def klaviyo_errors(sandbox: Any, setting: str) -> tuple[Any, Any]:
    account, _ = sandbox_account(sandbox, "klaviyo", name=f"Klaviyo {setting}", seed=11)
    with override_settings(JOBCENTER_ERROR_RECORD_PERSONAL_DATA=setting):
        run = sync_account(account.pk)
    assert run.outcome == "succeeded", run.error
    imports = JobError.objects.filter(job__account=account, job__kind=IMPORTS)
    inline = JobError.objects.filter(job__account=account, job__kind__startswith="catalog-")
    assert imports.exists(), "the seeded world has failed profile imports"
    assert inline.exists(), "the seeded world has failed catalog jobs"
    return imports, inline


def test_klaviyo_import_errors_keep_the_profile_by_default(sandbox: Any) -> None:
    imports, _ = klaviyo_errors(sandbox, "keep")
    for error in imports:
        assert error.raw["attributes"]["original_payload"]["type"] == "profile"
    assert "@example" in stored_text(imports)


def test_klaviyo_import_errors_drop_the_profile_when_told(sandbox: Any) -> None:
    imports, inline = klaviyo_errors(sandbox, "drop")
    for error in imports:
        attributes = error.raw["attributes"]
        assert "original_payload" not in attributes
        assert attributes["code"] and attributes["detail"]  # what went wrong stays
        assert error.code and error.message and error.external_id  # the error's own id
        assert error.raw["type"] == "import-error"
    assert "@example" not in stored_text(imports)
    # Catalog jobs' inline errors carry no record of their own: stored as received.
    for error in inline:
        assert set(error.raw) >= {"id", "code", "title", "detail"}


def fullstory_errors(sandbox: Any, setting: str) -> tuple[Any, Any]:
    account, described = sandbox_account(
        sandbox, "fullstory", name=f"Fullstory {setting}", processing_seconds=30
    )
    batches = [
        (EVENTS, create_fullstory_batch(sandbox, described, EVENTS, events(6, fail={1, 4}))),
        (USERS, create_fullstory_batch(sandbox, described, USERS, users(5, fail={0, 2, 3}))),
    ]
    for kind, job_id in batches:
        track_job(account, kind, job_id)
    sandbox.clock(described["id"], advance=120)
    with override_settings(JOBCENTER_ERROR_RECORD_PERSONAL_DATA=setting):
        run = sync_account(account.pk)
    assert run.outcome == "succeeded", run.error
    rows = JobError.objects.filter(job__account=account)
    event_rows, user_rows = rows.filter(job__kind=EVENTS), rows.filter(job__kind=USERS)
    assert (event_rows.count(), user_rows.count()) == (2, 3)
    return event_rows, user_rows


def test_fullstory_errors_keep_the_event_and_the_user_by_default(sandbox: Any) -> None:
    event_rows, user_rows = fullstory_errors(sandbox, "keep")
    assert all(row.raw["event"]["user"]["uid"].startswith("customer-") for row in event_rows)
    assert all(row.external_id.startswith("customer-") for row in event_rows)
    for row in user_rows:
        assert row.raw["user"]["email"].endswith("@example.com")
        assert row.title.startswith("Customer ")
        assert row.external_id.startswith("customer-")


def test_fullstory_errors_drop_the_event_and_the_user_when_told(sandbox: Any) -> None:
    event_rows, user_rows = fullstory_errors(sandbox, "drop")
    for row in [*event_rows, *user_rows]:
        assert not {"event", "shared", "user"} & set(row.raw)
        assert row.message and row.code  # Fullstory's words on what went wrong stay
        assert row.external_id == ""
    assert all(row.source == "event" and row.title for row in event_rows)  # the event's name
    assert all(row.source == "user" and row.title == "" for row in user_rows)
    text = stored_text(JobError.objects.filter(pk__in=[r.pk for r in [*event_rows, *user_rows]]))
    assert "customer-" not in text
    assert "Customer " not in text


def test_dropping_copies_the_record_and_leaves_undeclared_records_alone() -> None:
    raw = {"a": {"b": {"secret": 1, "kept": 2}, "c": 3}, "d": 4}
    record = JobErrorRecord(
        "failed",
        title="Sam",
        raw=raw,
        personal_data=PersonalData(
            raw_paths=(("a", "b", "secret"), ("d",), ("x", "y")), fields=("title",)
        ),
    )
    dropped = record.without_personal_data()
    assert dropped.raw == {"a": {"b": {"kept": 2}, "c": 3}}
    assert dropped.title == "" and dropped.message == "failed"
    assert raw == {"a": {"b": {"secret": 1, "kept": 2}, "c": 3}, "d": 4}  # untouched
    plain = JobErrorRecord("failed", raw={"id": "1"})
    assert plain.without_personal_data() is plain
