"""Alerts driven by the sandbox: failed, partly failed and stuck jobs, failing accounts.

Each rule must fire exactly once per job and event, whatever the number of syncs, with
the job's link, provider, kind, counts and first error in the message.
"""

from __future__ import annotations

import io
import logging
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from django.core import mail
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from django_q.tasks import async_task

from jobcenter.alerts import evaluation
from jobcenter.alerts.defaults import use_channel_for_default_rules
from jobcenter.alerts.rules import in_quiet_hours
from jobcenter.models import (
    AlertChannel,
    AlertDelivery,
    AlertEvent,
    AlertRule,
    Job,
    JobError,
    ProviderAccount,
    SyncRun,
)
from jobcenter.sync.engine import sync_account
from jobcenter.tasks import dispatch_due_syncs
from providers.base import Status
from tests.factories import observe_job, sandbox_account

pytestmark = pytest.mark.django_db(transaction=True)

SITE = "http://jobcenter.test"
THREE_HOURS = 3 * 3600


@pytest.fixture(autouse=True)
def alert_settings(settings):
    settings.JOBCENTER_SITE_URL = SITE
    settings.JOBCENTER_ALERT_DIGEST_THRESHOLD = 50
    return settings


@pytest.fixture
def ops_email() -> AlertChannel:
    return AlertChannel.objects.create(name="ops mail", kind="email", recipients="ops@example.com")


def job_url(job: Job) -> str:
    return SITE + reverse("admin:jobcenter_job_change", args=[job.pk])


def messages_about(job: Job) -> list[str]:
    return [m.body for m in mail.outbox if job_url(job) in m.body]


def test_each_rule_fires_once_per_job_and_event_across_syncs(sandbox, ops_email) -> None:
    AlertRule.objects.create(
        name="failures", channel=ops_email, on_job_failed=True, on_job_partially_failed=True
    )
    AlertRule.objects.create(
        name="over 3%", channel=ops_email, on_job_partially_failed=True, partial_min_percent=3
    )
    stuck = AlertRule.objects.create(name="stuck", channel=ops_email, stuck_after_minutes=120)
    AlertRule.objects.create(name="failing", channel=ops_email, account_failures=3)

    # Klaviyo: two catalog jobs that fail, a profile import that drops 5% of its rows and
    # one that drops 1%, and one that succeeds.
    klaviyo, k_desc = sandbox_account(sandbox, "klaviyo", jobs_per_kind=0)
    kid = k_desc["id"]
    sandbox.control(
        kid, "create_jobs", kind="catalog-item-bulk-create-job", count=2, outcome="fail"
    )
    sandbox.control(
        kid,
        "create_jobs",
        kind="profile-bulk-import-job",
        outcome="partial",
        total_count=100,
        failed_count=5,
    )
    sandbox.control(
        kid,
        "create_jobs",
        kind="profile-bulk-import-job",
        outcome="partial",
        total_count=100,
        failed_count=1,
    )
    sandbox.control(kid, "create_jobs", kind="catalog-item-bulk-update-job", outcome="succeed")
    # Elastic Path: a product import that fails with the store's own error text.
    ep_failed, ep_desc = sandbox_account(sandbox, "elasticpath", jobs_per_kind=0)
    sandbox.control(
        ep_desc["id"],
        "create_jobs",
        type="product-import",
        outcome="failed",
        duration=30,
        errors=["row 7: price must be a number", "row 9: sku is missing"],
    )
    # Elastic Path, a store whose clock started three hours ago: an export still running
    # and an import pending behind it since then.
    ep_stuck, stuck_desc = sandbox_account(
        sandbox, "elasticpath", jobs_per_kind=0, start=time.time() - THREE_HOURS
    )
    sandbox.control(stuck_desc["id"], "create_jobs", type="product-export", duration=4 * 3600)
    sandbox.control(stuck_desc["id"], "create_jobs", type="product-import", duration=60)
    sandbox.clock(stuck_desc["id"], advance=5)  # the queue picks the export up
    # Klaviyo, an account whose key gets revoked.
    revoked, r_desc = sandbox_account(sandbox, "klaviyo", jobs_per_kind=0)
    sandbox.control(r_desc["id"], "revoke")
    accounts = [klaviyo, ep_failed, ep_stuck, revoked]

    for account in accounts:
        sync_account(account.pk)  # the Klaviyo and EP jobs are still queued or running
    assert not AlertEvent.objects.exclude(rule=stuck).exists()
    sandbox.clock(kid, advance=600)
    sandbox.clock(ep_desc["id"], advance=600)
    for _ in range(3):  # the revoked account fails its 2nd, 3rd and 4th run
        for account in accounts:
            run = sync_account(account.pk)
            assert run.outcome == ("failed" if account == revoked else "succeeded"), run.error

    k_jobs = Job.objects.filter(account=klaviyo)
    failed_k = list(k_jobs.filter(status="failed"))
    partial5 = k_jobs.get(status="partially_failed", failed_count=5)
    partial1 = k_jobs.get(status="partially_failed", failed_count=1)
    ep_fail = Job.objects.get(account=ep_failed)
    stuck_jobs = list(Job.objects.filter(account=ep_stuck))
    assert len(failed_k) == 2 and ep_fail.status == "failed"
    assert {j.status for j in stuck_jobs} == {"running", "queued"}
    assert Job.objects.count() == 8

    fired = Counter(AlertEvent.objects.values_list("rule__name", "event", "job_id", "account_id"))
    expected = Counter(
        [("failures", "job_failed", j.pk, j.account_id) for j in [*failed_k, ep_fail]]
        + [("failures", "job_partially_failed", j.pk, j.account_id) for j in (partial5, partial1)]
        + [("over 3%", "job_partially_failed", partial5.pk, klaviyo.pk)]
        + [("stuck", "job_stuck", j.pk, ep_stuck.pk) for j in stuck_jobs]
        + [("failing", "account_failing", None, revoked.pk)]
    )
    assert fired == expected  # each exactly once, nothing else
    assert len(mail.outbox) == sum(expected.values())
    assert AlertDelivery.objects.filter(status="sent").count() == len(mail.outbox)
    assert {tuple(m.to) for m in mail.outbox} == {("ops@example.com",)}

    # The messages: link, provider, kind, counts and the first error text.
    (ep_message,) = messages_about(ep_fail)
    assert "Elastic Path" in ep_message and "product-import" in ep_message
    assert "Status: failed; no counts reported by the provider" in ep_message
    assert "First error (of 2): row 7: price must be a number" in ep_message
    for job in failed_k:
        (message,) = messages_about(job)
        first = JobError.objects.get(job=job, position=0)
        assert first.message and first.message in message
        assert f"Klaviyo {job.kind} {job.external_id}" in message
        assert f"total {job.total_count}, completed 0, failed {job.total_count}" in message
    partial_messages = messages_about(partial5)
    assert len(partial_messages) == 2  # "failures" and "over 3%"
    for message in partial_messages:
        assert "profile-bulk-import-job" in message
        assert "total 100, completed 95, failed 5 (5% failed)" in message
        assert JobError.objects.get(job=partial5, position=0).message in message
    assert len(messages_about(partial1)) == 1  # 1% is under the 3% rule
    for job in stuck_jobs:
        (message,) = messages_about(job)
        assert "queued or running too long" in message and "product-" in message
        assert "Not ended after 1" in message  # 180 minutes and a bit
    (account_message,) = [m for m in mail.outbox if "Account failing" in m.subject]
    assert revoked.name in account_message.body
    assert "Failed syncs in a row: 3" in account_message.body
    assert "authentication failed" in account_message.body.lower()


def test_a_job_that_recovers_and_fails_again_alerts_again(sandbox, ops_email) -> None:
    AlertRule.objects.create(name="failures", channel=ops_email, on_job_failed=True)
    account, _ = sandbox_account(sandbox, "klaviyo", jobs_per_kind=0)
    ProviderAccount.objects.filter(pk=account.pk).update(lease_owner="test")
    observe = partial(observe_job, account, created_at=datetime(2026, 1, 1, tzinfo=UTC))

    observe(Status.FAILED, 10)
    observe(Status.FAILED, 10)  # unchanged
    assert len(mail.outbox) == 1
    observe(Status.FAILED, 9)  # still failed, counts moved: same episode
    assert len(mail.outbox) == 1
    observe(Status.RUNNING, 0)  # retried at the provider
    observe(Status.FAILED, 10)  # and failed again: a new episode
    assert len(mail.outbox) == 2
    assert AlertEvent.objects.count() == 2
    assert len(set(AlertEvent.objects.values_list("episode", flat=True))) == 2
    observe(Status.FAILED, 10)
    assert len(mail.outbox) == 2


def test_quiet_hours_hold_alerts_until_they_end_then_send_them_once(sandbox, ops_email) -> None:
    now = timezone.now().astimezone(UTC)
    rule = AlertRule.objects.create(
        name="failures at night",
        channel=ops_email,
        on_job_failed=True,
        quiet_start=(now - timedelta(hours=1)).time(),
        quiet_end=(now + timedelta(hours=1)).time(),
        quiet_timezone="UTC",
    )
    account, described = sandbox_account(sandbox, "klaviyo", jobs_per_kind=0)
    sandbox.control(
        described["id"], "create_jobs", kind="catalog-item-bulk-create-job", count=2, outcome="fail"
    )
    sandbox.clock(described["id"], advance=600)
    sync_account(account.pk)
    sync_account(account.pk)
    assert mail.outbox == []
    assert AlertEvent.objects.filter(rule=rule, state="held").count() == 2

    evaluation.evaluate_periodic()  # still quiet
    assert mail.outbox == []
    rule.quiet_start = (now - timedelta(hours=3)).time()
    rule.quiet_end = (now - timedelta(hours=2)).time()
    rule.save()
    evaluation.evaluate_periodic()
    assert len(mail.outbox) == 2
    evaluation.evaluate_periodic()
    sync_account(account.pk)
    assert len(mail.outbox) == 2
    assert not AlertEvent.objects.filter(state="held").exists()


def test_quiet_hours_may_span_midnight() -> None:
    rule = AlertRule(
        name="n",
        quiet_start=datetime(2026, 1, 1, 22).time(),
        quiet_end=datetime(2026, 1, 1, 6).time(),
        quiet_timezone="Europe/Berlin",
    )
    berlin_23h = datetime(2026, 1, 1, 22, 0, tzinfo=UTC)  # 23:00 in Berlin (CET)
    assert in_quiet_hours(rule, berlin_23h)
    assert in_quiet_hours(rule, berlin_23h + timedelta(hours=6))  # 05:00
    assert not in_quiet_hours(rule, berlin_23h + timedelta(hours=8))  # 07:00
    assert not in_quiet_hours(rule, berlin_23h - timedelta(hours=2))  # 21:00


def test_more_alerts_than_the_threshold_arrive_as_one_digest(sandbox, ops_email, settings) -> None:
    settings.JOBCENTER_ALERT_DIGEST_THRESHOLD = 3
    AlertRule.objects.create(name="failures", channel=ops_email, on_job_failed=True)
    account, described = sandbox_account(sandbox, "klaviyo", jobs_per_kind=0)
    sandbox.control(
        described["id"],
        "create_jobs",
        kind="catalog-variant-bulk-create-job",
        count=5,
        outcome="fail",
    )
    sandbox.clock(described["id"], advance=600)
    sync_account(account.pk)
    (digest,) = mail.outbox
    assert digest.subject == "[Job Center] 5 alerts: failures"
    for job in Job.objects.filter(account=account):
        assert job_url(job) in digest.body
        assert job.external_id in digest.body
    delivery = AlertDelivery.objects.get()
    assert delivery.is_digest and delivery.event_count == 5
    assert AlertEvent.objects.filter(delivery=delivery).count() == 5

    # Under the threshold: one message each.
    sandbox.control(
        described["id"],
        "create_jobs",
        kind="catalog-variant-bulk-create-job",
        count=2,
        outcome="fail",
    )
    sandbox.clock(described["id"], advance=600)
    sync_account(account.pk)
    assert len(mail.outbox) == 3


def test_an_account_not_synced_for_long_alerts_from_the_minute_schedule(sandbox, ops_email) -> None:
    rule = AlertRule.objects.create(name="silent", channel=ops_email, account_silent_minutes=60)
    account, _ = sandbox_account(sandbox, "elasticpath", jobs_per_kind=0)
    sync_account(account.pk)
    # The last success was two hours ago and no sync is due: only the schedule notices.
    ProviderAccount.objects.filter(pk=account.pk).update(
        last_success_at=timezone.now() - timedelta(hours=2),
        next_sync_at=timezone.now() + timedelta(hours=1),
    )
    assert dispatch_due_syncs() == 0
    assert dispatch_due_syncs() == 0
    (message,) = mail.outbox
    assert "Account not synced" in message.subject and account.name in message.body
    event = AlertEvent.objects.get(rule=rule)
    assert event.episode == SyncRun.objects.get(account=account).pk  # its last success

    # It recovers, then goes silent again: a new episode, a new alert.
    sync_account(account.pk)
    ProviderAccount.objects.filter(pk=account.pk).update(
        last_success_at=timezone.now() - timedelta(hours=2)
    )
    dispatch_due_syncs()
    assert len(mail.outbox) == 2


def test_an_error_in_alert_evaluation_never_fails_the_sync_nor_silences_other_rules(
    sandbox, ops_email, monkeypatch, caplog
) -> None:
    broken_rule = AlertRule.objects.create(name="broken", channel=ops_email, on_job_failed=True)
    AlertRule.objects.create(name="working", channel=ops_email, on_job_failed=True)
    account, described = sandbox_account(sandbox, "klaviyo", jobs_per_kind=0)
    sandbox.control(
        described["id"], "create_jobs", kind="catalog-item-bulk-create-job", outcome="fail"
    )
    sandbox.clock(described["id"], advance=600)
    real_dispatch = evaluation.dispatch

    def dispatch(rule: AlertRule, *args: object) -> None:
        if rule.pk == broken_rule.pk:
            raise RuntimeError("alert engine broken")
        real_dispatch(rule, *args)

    monkeypatch.setattr(evaluation, "dispatch", dispatch)
    caplog.set_level(logging.ERROR)
    run = sync_account(account.pk)
    assert run.outcome == "succeeded"
    assert f"alert rule {broken_rule.pk} could not be evaluated" in caplog.text
    assert [m.body.splitlines()[-1] for m in mail.outbox] == ["Rule: working"]
    assert not AlertEvent.objects.filter(rule=broken_rule).exists()  # rolled back: retried

    def nothing_works(*args: object) -> None:
        raise RuntimeError("database gone")

    monkeypatch.setattr(evaluation, "active_rules", nothing_works)
    run = sync_account(account.pk)
    assert run.outcome == "succeeded"
    assert "alert evaluation after sync run" in caplog.text
    account.refresh_from_db()
    assert account.last_status == "ok"


def test_default_rules_exist_after_setup_schedules_and_stay_silent_without_a_channel(
    sandbox,
) -> None:
    call_command("setup_schedules", stdout=io.StringIO())
    call_command("setup_schedules", stdout=io.StringIO())  # idempotent
    rules = {r.default_key: r for r in AlertRule.objects.all()}
    assert set(rules) == {"all-failures", "account-failing"}
    assert rules["all-failures"].on_job_failed and rules["all-failures"].on_job_partially_failed
    assert rules["account-failing"].account_failures == 3
    assert not any(r.is_active for r in rules.values())

    account, described = sandbox_account(sandbox, "klaviyo", jobs_per_kind=0)
    sandbox.control(
        described["id"], "create_jobs", kind="catalog-item-bulk-create-job", outcome="fail"
    )
    sandbox.clock(described["id"], advance=600)
    sync_account(account.pk)
    assert not AlertEvent.objects.exists() and mail.outbox == []

    channel = AlertChannel.objects.create(name="mail", kind="email", recipients="ops@example.com")
    assert use_channel_for_default_rules(channel) == 2
    sync_account(account.pk)  # within the look-back: the failure is still reported, once
    sync_account(account.pk)
    assert len(mail.outbox) == 1


def test_alert_admin_pages_and_a_write_only_webhook_secret(admin_client, ops_email) -> None:
    secret = "whsec-" + "s3cr3t" * 4
    response = admin_client.post(
        reverse("admin:jobcenter_alertchannel_add"),
        {
            "name": "hook",
            "kind": "webhook",
            "recipients": "",
            "url": "https://hooks.example.com/x/y",
            "secret": secret,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    channel = AlertChannel.objects.get(name="hook")
    assert channel.get_secret() == secret
    assert secret not in channel.secret_encrypted
    page = admin_client.get(reverse("admin:jobcenter_alertchannel_change", args=[channel.pk]))
    assert page.status_code == 200
    assert secret not in page.content.decode()
    assert "••••••••" in page.content.decode()

    # Blank keeps the stored secret; a webhook without any is refused.
    response = admin_client.post(
        reverse("admin:jobcenter_alertchannel_change", args=[channel.pk]),
        {
            "name": "hook",
            "kind": "webhook",
            "recipients": "",
            "url": "https://hooks.example.com/z",
            "secret": "",
        },
    )
    assert response.status_code == 302
    channel.refresh_from_db()
    assert channel.get_secret() == secret and channel.url.endswith("/z")
    response = admin_client.post(
        reverse("admin:jobcenter_alertchannel_add"),
        {
            "name": "bare",
            "kind": "webhook",
            "recipients": "",
            "url": "ftp://example.com/",
            "secret": "",
        },
    )
    assert response.status_code == 200
    assert "http(s) URL" in response.content.decode()
    assert "needs a signing secret" in response.content.decode()

    for name in ("alertrule", "alertevent", "alertdelivery"):
        assert admin_client.get(reverse(f"admin:jobcenter_{name}_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:jobcenter_alertrule_add")).status_code == 200


def test_rules_fire_only_within_their_accounts_providers_and_kinds(sandbox, ops_email) -> None:
    account, described = sandbox_account(sandbox, "klaviyo", jobs_per_kind=0)
    other, _ = sandbox_account(sandbox, "klaviyo", jobs_per_kind=0)
    for kind in ("catalog-item-bulk-create-job", "catalog-variant-bulk-create-job"):
        sandbox.control(described["id"], "create_jobs", kind=kind, outcome="fail")
    sandbox.clock(described["id"], advance=600)
    AlertRule.objects.create(
        name="items", channel=ops_email, on_job_failed=True, kinds="catalog-item-bulk-create-job"
    )
    AlertRule.objects.create(
        name="elastic path", channel=ops_email, on_job_failed=True, providers="elasticpath"
    )
    AlertRule.objects.create(
        name="klaviyo", channel=ops_email, on_job_failed=True, providers="klaviyo"
    )
    AlertRule.objects.create(name="other account", channel=ops_email, on_job_failed=True)
    AlertRule.objects.create(name="this account", channel=ops_email, on_job_failed=True)
    AlertRule.objects.get(name="other account").accounts.add(other)
    AlertRule.objects.get(name="this account").accounts.add(account)
    AlertRule.objects.create(name="disabled", channel=ops_email, on_job_failed=True, enabled=False)
    sync_account(account.pk)
    fired = Counter(AlertEvent.objects.values_list("rule__name", flat=True))
    assert fired == {"items": 1, "klaviyo": 2, "this account": 2}


def test_a_rule_without_any_event_or_with_half_quiet_hours_is_refused_in_admin(
    admin_client,
) -> None:
    form = {
        "name": "nothing",
        "enabled": "on",
        "partial_min_percent": "0",
        "quiet_timezone": "Mars/Olympus",
        "quiet_start": "22:00",
    }
    response = admin_client.post(reverse("admin:jobcenter_alertrule_add"), form)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Choose at least one event." in html
    assert "Give both ends of the quiet hours" in html
    assert "not a known time zone" in html
    form |= {"on_job_failed": "on", "quiet_end": "06:00", "quiet_timezone": "Europe/Berlin"}
    response = admin_client.post(reverse("admin:jobcenter_alertrule_add"), form)
    assert response.status_code == 302
    assert not AlertRule.objects.get(name="nothing").is_active  # no channel yet


def test_a_delivery_task_stored_under_the_old_dotted_name_still_runs(ops_email) -> None:
    """Task rows queued before delivery moved to `jobcenter.tasks` name the old path."""
    rule = AlertRule.objects.create(name="failures", channel=ops_email, on_job_failed=True)
    delivery = evaluation.new_delivery(
        rule, ops_email, subject="[Job Center] old task", text="body", payload={}, event_count=1
    )
    delivery.save()
    async_task("jobcenter.alerts.deliver", delivery.pk)  # the test cluster runs it inline
    delivery.refresh_from_db()
    assert delivery.status == "sent"
    assert [m.subject for m in mail.outbox] == ["[Job Center] old task"]
