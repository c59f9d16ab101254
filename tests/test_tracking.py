"""Tracked jobs: Fullstory batches registered by id, polled to the end, errors fetched once."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from jobcenter.models import Job, JobError
from jobcenter.sync.engine import sync_account
from jobcenter.sync.tracking import track_job
from tests.factories import create_fullstory_batch, events, sandbox_account, users

pytestmark = pytest.mark.django_db(transaction=True)

EVENTS = "events-batch-import"
USERS = "users-batch-import"


def test_tracked_batches_are_polled_to_the_end_with_every_error(sandbox) -> None:
    account, described = sandbox_account(sandbox, "fullstory", processing_seconds=30, page_size=50)
    clean = create_fullstory_batch(sandbox, described, EVENTS, events(40))
    partial = create_fullstory_batch(sandbox, described, EVENTS, events(300, fail=range(0, 300, 2)))
    total = create_fullstory_batch(sandbox, described, USERS, users(20, fail=range(20)))
    for kind, job_id in ((EVENTS, clean), (EVENTS, partial), (USERS, total)):
        track_job(account, kind, job_id)

    first = sync_account(account.pk)
    assert first.outcome == "succeeded", first.error
    assert set(Job.objects.filter(account=account).values_list("status", flat=True)) == {"running"}

    sandbox.clock(described["id"], advance=120)
    second = sync_account(account.pk)
    assert second.outcome == "succeeded", second.error

    state = {j["id"]: j for j in sandbox.state(described["id"])["jobs"]}
    expected = {clean: "succeeded", partial: "partially_failed", total: "failed"}
    for job_id, status in expected.items():
        job = Job.objects.get(account=account, external_id=job_id)
        truth = state[job_id]
        assert job.status == status
        assert job.is_terminal
        assert job.completed_count == truth["imports"]
        assert job.failed_count == truth["errors"]
        assert job.error_count == truth["error_count"]
        assert JobError.objects.filter(job=job).count() == truth["error_count"]
    # 150 errors at 50 a page: the partial batch's errors took several pages.
    assert JobError.objects.filter(job__external_id=partial).count() == 150
    codes = set(JobError.objects.filter(job__external_id=partial).values_list("code", flat=True))
    assert all(codes)

    since = sandbox.requests(described["id"])[-1]["seq"]
    third = sync_account(account.pk)
    assert third.outcome == "succeeded"
    assert sandbox.requests(described["id"], since=since) == [], "ended jobs are left alone"


def test_an_unknown_id_ends_as_not_found_after_one_sync_and_costs_nothing_after(
    sandbox, admin_client
) -> None:
    account, described = sandbox_account(sandbox, "fullstory")
    job, created = track_job(account, EVENTS, "no-such-batch-123")
    assert created

    run = sync_account(account.pk)
    assert run.outcome == "succeeded", run.error
    job.refresh_from_db()
    assert job.is_terminal
    assert job.gone_at is not None
    assert job.gone_reason.startswith("not found: ")
    assert "resource_not_found" in job.gone_reason  # the provider's own words
    page = admin_client.get(reverse("admin:jobcenter_job_change", args=[job.pk]))
    assert "resource_not_found" in page.content.decode()

    since = sandbox.requests(described["id"])[-1]["seq"]
    sync_account(account.pk)
    sync_account(account.pk)
    assert sandbox.requests(described["id"], since=since) == []


def test_tracking_an_existing_job_again_does_not_duplicate_it(sandbox) -> None:
    account, described = sandbox_account(sandbox, "fullstory")
    job_id = create_fullstory_batch(sandbox, described, USERS, users(3))
    first, created = track_job(account.name, USERS, job_id)
    again, created_again = track_job(str(account.pk), USERS, f"  {job_id} ")
    assert created and not created_again
    assert first.pk == again.pk
    assert Job.objects.filter(account=account).count() == 1


BAD_INPUT = [
    ("nobody", EVENTS, "abc", "account", "No account named"),
    (None, "catalog-item-bulk-create-job", "abc", "kind", "has no job kind"),
    (None, EVENTS, "", "external_id", "Enter the job id"),
    (None, EVENTS, "x" * 500, "external_id", "at most 255 characters"),
    (None, EVENTS, "two words", "external_id", "cannot contain spaces"),
]


@pytest.mark.parametrize(("account_name", "kind", "job_id", "field", "message"), BAD_INPUT)
def test_bad_tracking_input_is_refused_on_the_command_line_and_writes_nothing(
    sandbox, account_name, kind, job_id, field, message
) -> None:
    account, _ = sandbox_account(sandbox, "fullstory")
    with pytest.raises(CommandError, match=message):
        call_command(
            "track_job",
            "--account",
            account_name or account.name,
            "--kind",
            kind,
            "--id",
            job_id,
            stdout=io.StringIO(),
        )
    assert not Job.objects.exists()


@pytest.mark.parametrize(("account_name", "kind", "job_id", "field", "message"), BAD_INPUT)
def test_bad_tracking_input_is_refused_in_admin_and_writes_nothing(
    sandbox, admin_client, account_name, kind, job_id, field, message
) -> None:
    account, _ = sandbox_account(sandbox, "fullstory")
    data = {
        "account": "999999" if account_name else str(account.pk),
        "kind": kind,
        "external_id": job_id,
    }
    response = admin_client.post(reverse("admin:jobcenter_job_track"), data)
    assert response.status_code == 200
    form = response.context["form"]
    assert field in form.errors
    if field != "account":  # an unknown account is refused by the choice field itself
        assert message in " ".join(form.errors[field])
    assert not Job.objects.exists()


def test_tracking_from_admin_redirects_to_the_job(sandbox, admin_client) -> None:
    account, described = sandbox_account(sandbox, "fullstory")
    job_id = create_fullstory_batch(sandbox, described, EVENTS, events(2))
    response = admin_client.post(
        reverse("admin:jobcenter_job_track"),
        {"account": account.pk, "kind": EVENTS, "external_id": job_id},
    )
    job = Job.objects.get(external_id=job_id)
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:jobcenter_job_change", args=[job.pk])
    assert job.tracked
