"""insert_rows: what goes in comes back, whichever way the database is written."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from jobcenter.models import JobError
from jobcenter.sync.bulk import JSONText, insert_rows, returns_inserted_rows
from tests.api_support import api_account, make_job

pytestmark = pytest.mark.django_db

AWKWARD = [
    "tab\there",
    "line\nbreak\r\nand CR",
    "back\\slash \\N and \\.",
    "quotes ' \" and commas ,",
    "non-ASCII: é ü 漢字 \u2028",
    "",
]


def test_rows_come_back_exactly_as_given() -> None:
    job = make_job(api_account(), 1)
    fetched_at = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    rows = [
        {
            "job_id": job.pk,
            "position": position,
            "code": text[:200],
            "title": "",
            "message": text,
            "source": text,
            "external_id": str(position),
            # Both ways a JSON value arrives: already encoded, and as a Python value.
            "raw": JSONText('{"detail":"x"}') if position % 2 else {"text": text, "n": None},
            "fetched_at": fetched_at,
        }
        for position, text in enumerate(AWKWARD)
    ]
    with CaptureQueriesContext(connection) as queries:
        assert insert_rows(JobError, rows) == []
    assert len(queries) == 1  # one statement (a COPY on PostgreSQL), and it is logged
    if connection.vendor == "postgresql":
        assert queries[0]["sql"].startswith('COPY "jobcenter_joberror"')
    stored = list(JobError.objects.filter(job=job).order_by("position"))
    assert [e.message for e in stored] == AWKWARD
    assert [e.source for e in stored] == AWKWARD
    assert [e.fetched_at for e in stored] == [fetched_at] * len(AWKWARD)
    assert stored[0].raw == {"text": AWKWARD[0], "n": None}
    assert stored[1].raw == {"detail": "x"}


def test_a_refused_row_raises_djangos_error_and_writes_nothing() -> None:
    job = make_job(api_account(), 1)
    row = {"job_id": job.pk, "position": 0, "raw": {}, "fetched_at": datetime.now(UTC)}
    with pytest.raises(IntegrityError), transaction.atomic():
        insert_rows(JobError, [row, dict(row)])  # the same (job, position) twice
    assert not JobError.objects.filter(job=job).exists()


def test_ids_come_back_from_the_insert_only_where_that_is_cheapest() -> None:
    # SQLite: INSERT ... RETURNING. PostgreSQL: COPY, then the sync reads the ids back.
    assert returns_inserted_rows(connection) is (connection.vendor == "sqlite")
    if returns_inserted_rows(connection):
        job = make_job(api_account(), 1)
        returned = insert_rows(
            JobError,
            [{"job_id": job.pk, "position": 3, "raw": {}, "fetched_at": datetime.now(UTC)}],
            returning=("id", "position"),
        )
        assert returned == [(JobError.objects.get(job=job).pk, 3)]
