"""Admin exports (issue 20, part 5): the error record list exports like the job list
(filters, search, team scoping, no secret), and every admin export comes in the order
its list shows, column sort (`o=`) included, at a query count that does not grow with
the rows.

Each order is checked against the list page itself: the ChangeList's result list, with
every row on one page, read over several small export chunks so keyset seams fall on
ties, NULLs and related columns.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.db.models import F
from django.db.models.functions import Lower
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.throttling import ScopedRateThrottle

from jobcenter.exports import stream
from jobcenter.exports.columns import ERROR_COLUMNS
from jobcenter.exports.throttle import EXPORT_SCOPE
from jobcenter.models import AuditRecord, Job, JobError, JobSnapshot, SyncRun
from jobcenter.queries.keyset import keyed_ordering
from jobcenter.sync.engine import sync_account
from tests.api_support import BASE_TIME, api_account, make_job, make_user
from tests.factories import sandbox_account
from tests.team_support import TeamWorld, team_world

pytestmark = pytest.mark.django_db

SMALL_CHUNK = 3
ACCOUNT_NAMES = ["Zeta shop", "EP main", "Alpha store"]  # ids and names sort apart
EXPORTING = ("job", "jobsnapshot", "joberror", "auditrecord")  # every list with exports


@pytest.fixture(autouse=True)
def roomy_throttle(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests export hundreds of times; the throttle has tests of its own."""
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, EXPORT_SCOPE, "10000/hour")
    cache.clear()


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "CHUNK_SIZE", SMALL_CHUNK)


@pytest.fixture
def world() -> dict[str, Any]:
    """Jobs over three accounts with tied and missing times and statuses; snapshots;
    error records with tied codes, titles, messages and fetch times."""
    accounts = [api_account(name) for name in ACCOUNT_NAMES]
    jobs = []
    for n in range(24):
        created = None if n % 5 == 0 else BASE_TIME + timedelta(minutes=n // 3)
        jobs.append(
            make_job(
                accounts[n % 3],
                n,
                created_at=created,
                last_changed_at=BASE_TIME + timedelta(minutes=n % 4),
                status=("failed", "succeeded", "running")[n % 3 if n % 7 else 0],
                kind=("product-import", "product-export")[n % 2],
            )
        )
        JobSnapshot.objects.create(
            job=jobs[-1],
            observed_at=BASE_TIME + timedelta(minutes=n % 6),
            status="running",
            digest=f"d{n}",
        )
    errors = [
        JobError.objects.create(
            job=job,
            position=position,
            code=f"E{(n + position) % 4}",
            title=f"T{n % 3}",
            message=f"Row {position}: bad price {n % 5}",
            source=f"row/{position}",
            raw={"n": n, "position": position},
            fetched_at=BASE_TIME + timedelta(minutes=n % 4),
        )
        for n, job in enumerate(jobs)
        if n % 2 == 0
        for position in range(n % 3 + 1)
    ]
    return {"accounts": accounts, "jobs": jobs, "errors": errors}


def admin_client(user: Any = None) -> Client:
    client = Client()
    client.force_login(user or make_user("superuser"))
    return client


def changelist(name: str) -> str:
    return reverse(f"admin:jobcenter_{name}_changelist")


def export_url(name: str, fmt: str = "csv") -> str:
    return reverse(f"admin:jobcenter_{name}_export", args=[fmt])


def listed(client: Client, name: str, query: str = "") -> list[int]:
    """The ids the list page shows, in its order; every row must fit on the page."""
    response = client.get(f"{changelist(name)}?{query}")
    assert response.status_code == 200, response.content[:300]
    cl = response.context["cl"]
    assert not cl.multi_page, "every row on one page, so the page is the whole order"
    return [obj.pk for obj in cl.result_list]


def file_text(response: Any) -> str:
    assert response.status_code == 200, response.content[:300]
    assert response.streaming
    return b"".join(response.streaming_content).decode("utf-8")


def csv_rows(response: Any) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(file_text(response).removeprefix("\ufeff"))))


def exported(client: Client, name: str, query: str = "", fmt: str = "csv") -> list[int]:
    """The ids of the admin export's rows, in the file's order."""
    response = client.get(f"{export_url(name, fmt)}?{query}")
    if fmt == "csv":
        return [int(row["id"]) for row in csv_rows(response)]
    return [json.loads(line)["id"] for line in file_text(response).splitlines()]


# --- the error record export ----------------------------------------------------------


def test_the_error_record_list_exports_exactly_its_filtered_and_searched_rows(
    world: dict[str, Any],
) -> None:
    client = admin_client()
    account = world["accounts"][1]
    query = f"job__account__id__exact={account.pk}&q=%22price+1%22"
    html = client.get(f"{changelist('joberror')}?{query}").content.decode()
    for fmt in ("csv", "ndjson"):
        link = f'href="{export_url("joberror", fmt)}?{query.replace("&", "&amp;")}"'
        assert link in html, f"the {fmt} link carries the list's filters and search"
    assert "Export selected job errors (CSV)" in html
    expected = set(
        JobError.objects.filter(job__account=account, message__icontains="price 1").values_list(
            "id", flat=True
        )
    )
    assert expected, "the filters select some rows"
    assert expected != set(JobError.objects.values_list("id", flat=True))
    page = listed(client, "joberror", query)
    assert set(page) == expected
    assert exported(client, "joberror", query) == page
    assert exported(client, "joberror", query, "ndjson") == page

    response = client.get(f"{export_url('joberror')}?{query}")
    assert 'filename="jobcenter-errors-' in response["Content-Disposition"]
    rows = csv_rows(response)
    assert list(rows[0]) == [column.name for column in ERROR_COLUMNS]  # the API's file
    assert {row["account_name"] for row in rows} == {account.name}
    records = [
        json.loads(line)
        for line in file_text(
            client.get(f"{export_url('joberror', 'ndjson')}?{query}")
        ).splitlines()
    ]
    assert all(r["raw"] == {"n": r["raw"]["n"], "position": r["position"]} for r in records)
    # A date filter of the sidebar, and no filter at all: every record, every page.
    since = "fetched_at__gte=2026-03-01+12:02:00%2B00:00"
    dated = exported(client, "joberror", since)
    assert set(dated) == set(
        JobError.objects.filter(fetched_at__gte=BASE_TIME + timedelta(minutes=2)).values_list(
            "id", flat=True
        )
    )
    assert len(exported(client, "joberror", "p=2")) == JobError.objects.count()


def test_a_team_member_exports_only_their_teams_error_records() -> None:
    teams: TeamWorld = team_world()
    a, b = teams.teams["A"], teams.teams["B"]
    member = teams.client("A")
    codes = [row["code"] for row in csv_rows(member.get(export_url("joberror")))]
    assert codes == [a.error.code]
    # Naming the other team's account or its record's id selects nothing of it.
    other = csv_rows(member.get(f"{export_url('joberror')}?job__account__id__exact={b.account.pk}"))
    assert other == []
    selected = member.post(
        changelist("joberror"),
        {"action": "export_selected", "_selected_action": [a.error.pk, b.error.pk], "index": 0},
    )
    assert [row["code"] for row in csv_rows(selected)] == [a.error.code]
    assert teams.client("B").get(export_url("joberror", "ndjson")).status_code == 200
    assert [r["code"] for r in csv_rows(teams.client("superuser").get(export_url("joberror")))] == [
        a.error.code,
        b.error.code,
    ]
    assert csv_rows(teams.client("noteam").get(export_url("joberror"))) == []


def test_error_exports_need_the_export_permission(world: dict[str, Any]) -> None:
    viewer = make_user("viewer")  # staff with every view permission, no export
    client = admin_client(viewer)
    html = client.get(changelist("joberror")).content.decode()
    assert "Export" not in html and 'class="action-select"' not in html
    assert client.get(export_url("joberror")).status_code == 403
    assert admin_client().get(export_url("joberror", "xlsx")).status_code == 404


@pytest.mark.django_db(transaction=True)
def test_error_exports_carry_no_secret_nor_the_personal_data_a_deployment_drops(
    sandbox: Any,
) -> None:
    """Synced from the sandbox over HTTP: Klaviyo's import errors echo the profile.
    The file holds what is stored (without the profile when told to drop it) and none
    of the account's credentials, in clear or encrypted."""
    client = admin_client()
    files = {}
    for setting in ("keep", "drop"):
        account, described = sandbox_account(sandbox, "klaviyo", name=f"Klaviyo {setting}", seed=11)
        with override_settings(JOBCENTER_ERROR_RECORD_PERSONAL_DATA=setting):
            assert sync_account(account.pk).outcome == "succeeded"
        secrets = [*sandbox.credentials(described).values(), account.credentials_encrypted]
        query = f"job__account__id__exact={account.pk}"
        ndjson = file_text(client.get(f"{export_url('joberror', 'ndjson')}?{query}"))
        rows = csv_rows(client.get(f"{export_url('joberror')}?{query}"))
        stored = JobError.objects.filter(job__account=account).count()
        assert stored == len(rows) == len(ndjson.splitlines()) > 0
        text = ndjson + json.dumps(rows)
        for secret in secrets:
            assert secret and secret not in text
        files[setting] = text
    assert "@example" in files["keep"], "kept, the profile is in the file: the check bites"
    assert "@example" not in files["drop"]


# --- the list's order ------------------------------------------------------------------


def sortable_columns(name: str, client: Client) -> list[int]:
    """The indexes `o=` takes on this list: its sortable columns as the admin numbers them."""
    cl = client.get(changelist(name)).context["cl"]
    return [
        i for i, field in enumerate(cl.list_display) if cl.get_ordering_field(field) is not None
    ]


@pytest.mark.usefixtures("small_chunks")
def test_every_sortable_column_exports_in_the_order_the_list_shows(
    world: dict[str, Any],
) -> None:
    client = admin_client()
    assert AuditRecord.objects.count() > 1, "making the world's accounts was audited"
    for name in EXPORTING:
        columns = sortable_columns(name, client)
        assert columns, name
        for index in columns:
            for sort in (f"{index}", f"-{index}"):
                page = listed(client, name, f"o={sort}")
                assert exported(client, name, f"o={sort}") == page, (name, sort)
        # No sort: the list's default order.
        assert exported(client, name) == listed(client, name), name


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize(
    ("name", "sort"),
    [
        # jobs: 1 id, 2 kind, 3 provider / account (account__name), 4 status, 7 created
        ("job", "3.-7"),
        ("job", "-4.3.1"),
        ("job", "7.-2"),
        ("job", "-3.-4.-7"),
        # error records: 1 job, 2 position, 3 code, 4 title, 5 message
        ("joberror", "3.-1"),
        ("joberror", "-4.5.-2"),
        ("joberror", "-5"),
        ("jobsnapshot", "-3.1"),
        # Not a sort the admin knows: the list's default order, as the page shows it.
        ("job", "abc"),
        ("job", "99"),
        ("job", "5"),  # progress: computed, not sortable
        ("job", "0"),  # the action checkbox
        ("job", "-"),
        ("job", "2.x.-99.--4"),
        ("joberror", "1e3"),
        ("joberror", "3.3.-3"),
    ],
)
def test_column_sorts_and_bad_sorts_export_in_the_order_the_list_shows(
    world: dict[str, Any], name: str, sort: str
) -> None:
    client = admin_client()
    page = listed(client, name, f"o={sort}")
    assert sorted(page) == sorted(exported(client, name)), "every row, whatever the sort"
    assert exported(client, name, f"o={sort}") == page
    assert exported(client, name, f"o={sort}", "ndjson") == page


def test_a_sort_with_filters_and_the_selected_rows_follow_the_list(world: dict[str, Any]) -> None:
    client = admin_client()
    query = "o=-3.4&status=failed"
    page = listed(client, "job", query)
    assert 1 < len(page) < Job.objects.count()
    assert exported(client, "job", query) == page
    chosen = page[::2]
    response = client.post(
        f"{changelist('job')}?{query}",
        {"action": "export_selected", "_selected_action": chosen[::-1], "index": 0},
    )
    assert [int(row["id"]) for row in csv_rows(response)] == chosen
    errors = listed(client, "joberror", "o=-3.1")
    response = client.post(
        f"{changelist('joberror')}?o=-3.1",
        {"action": "export_selected", "_selected_action": errors[:5], "index": 0},
    )
    assert [int(row["id"]) for row in csv_rows(response)] == [e for e in errors if e in errors[:5]]


def test_keyed_ordering_follows_djangos_own_order_and_ends_with_the_key() -> None:
    # A relation orders by its model's ordering (an account by its name), else its id.
    assert keyed_ordering(SyncRun, ["-account"]) == ("-account__name", "-pk")
    assert keyed_ordering(JobError, ["job", "position", "-pk"]) == ("job_id", "position", "-pk")
    assert keyed_ordering(JobError, ["-job__account"]) == ("-job__account__name", "-pk")
    # What follows the id cannot change the order; expressions of columns are columns.
    assert keyed_ordering(Job, [F("status").desc(), "id", "created_at"]) == ("-status", "id")
    assert keyed_ordering(Job, [F("kind"), F("pk").asc()]) == ("kind", "pk")
    for refused in (Lower("kind").asc(), F("created_at").desc(nulls_last=True), "?"):
        with pytest.raises(ImproperlyConfigured):
            keyed_ordering(Job, [refused])


# --- query counts ----------------------------------------------------------------------


def more_rows(world: dict[str, Any], count: int) -> None:
    """`count` more jobs with two error records each, over the same accounts."""
    for n in range(100, 100 + count):
        job = make_job(world["accounts"][n % 3], n, status="failed")
        JobError.objects.bulk_create(
            [JobError(job=job, position=p, code=f"E{p}", message=f"m{n}") for p in range(2)]
        )


@pytest.mark.parametrize(
    ("name", "sort"), [("job", "3.-7"), ("job", ""), ("joberror", "-1.3"), ("joberror", "")]
)
def test_an_exports_query_count_does_not_grow_with_its_rows(
    world: dict[str, Any], name: str, sort: str, django_assert_max_num_queries: Any
) -> None:
    client = admin_client()
    url = f"{export_url(name)}?o={sort}&q="
    with CaptureQueriesContext(connection) as few:
        small = len(csv_rows(client.get(url)))
    more_rows(world, 40)
    with django_assert_max_num_queries(len(few.captured_queries)):
        large = len(csv_rows(client.get(url)))
    assert large > small + 39
