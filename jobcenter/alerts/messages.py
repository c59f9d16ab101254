"""What an alert says: the structured event webhooks receive, and the text people read.

Texts are built from the structured event (`event_data`), never from the models, so an
email, a webhook's `text` and a digest line always say the same thing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.urls import reverse

from jobcenter.alerts.channels import one_line
from jobcenter.models import AlertEvent, AlertEventType, AlertRule, JobError
from providers import get_provider

FIRST_ERROR_CHARS = 500
DIGEST_LINE_ERROR_CHARS = 160


def first_errors(job_ids: list[int]) -> dict[int, str]:
    """The first stored error text of each job, in one query."""
    if not job_ids:
        return {}
    rows = JobError.objects.filter(job_id__in=job_ids, position=0).values_list(
        "job_id", "code", "title", "message"
    )
    texts = {}
    for job_id, code, title, message in rows:
        text = message or title or code
        if code and text != code:
            text = f"{code}: {text}"
        texts[job_id] = " ".join(text.split())[:FIRST_ERROR_CHARS]
    return texts


def site_link(path: str) -> str:
    return f"{settings.JOBCENTER_SITE_URL}{path}"


def provider_label(slug: str) -> str:
    try:
        return get_provider(slug).label
    except KeyError:
        return slug


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def event_data(
    event: AlertEvent, rule: AlertRule, first_error: str | None, now: datetime
) -> dict[str, Any]:
    """The structured alert: what webhooks receive and what the text is built from.

    `event` comes from `dispatch`'s query, which annotates `job_running_since` (the
    `queries.dashboard.running_since` of its job) for the stuck job's waiting time.
    """
    account = event.account
    label = provider_label(account.provider)
    data: dict[str, Any] = {
        "id": event.pk,
        "type": event.event,
        "title": AlertEventType(event.event).label,
        "fired_at": iso(event.fired_at),
        "rule": {"id": rule.pk, "name": rule.name},
        "provider": account.provider,
        "provider_label": label,
        "account": {
            "id": account.pk,
            "name": account.name,
            "url": site_link(reverse("admin:jobcenter_provideraccount_change", args=[account.pk])),
        },
    }
    job = event.job
    if job is not None:
        failed_percent = (
            round(100 * (job.failed_count or 0) / job.total_count, 2) if job.total_count else None
        )
        running_since = event.job_running_since
        data["kind"] = job.kind
        data["job"] = {
            "id": job.pk,
            "external_id": job.external_id,
            "kind": job.kind,
            "status": job.status,
            "provider_status": job.provider_status,
            "total_count": job.total_count,
            "completed_count": job.completed_count,
            "failed_count": job.failed_count,
            "failed_percent": failed_percent,
            "error_count": job.error_count,
            "created_at": iso(job.created_at),
            "started_at": iso(job.started_at),
            "completed_at": iso(job.completed_at),
            "url": site_link(reverse("admin:jobcenter_job_change", args=[job.pk])),
        }
        if event.event == AlertEventType.JOB_STUCK and running_since:
            data["job"]["waiting_minutes"] = int((now - running_since).total_seconds() // 60)
        data["first_error"] = first_error
        data["headline"] = one_line(
            f"{data['title']}: {label} {job.kind} {job.external_id} (account {account.name})"
        )
    else:
        data["account"] |= {
            "consecutive_failures": account.consecutive_failures,
            "last_error": account.last_error[:FIRST_ERROR_CHARS],
            "last_success_at": iso(account.last_success_at),
            "last_sync_at": iso(account.last_sync_at),
        }
        data["headline"] = one_line(f"{data['title']}: {account.name} ({label})")
    return data


def counts_text(job: dict[str, Any]) -> str:
    def number(value: int | None) -> str:
        return "?" if value is None else f"{value:,}"

    if (
        job["total_count"] is None
        and job["completed_count"] is None
        and job["failed_count"] is None
    ):
        return "no counts reported by the provider"
    text = (
        f"total {number(job['total_count'])}, completed {number(job['completed_count'])}, "
        f"failed {number(job['failed_count'])}"
    )
    if job["failed_percent"] is not None and job["failed_count"]:
        text += f" ({job['failed_percent']:g}% failed)"
    return text


def event_text(data: dict[str, Any]) -> str:
    """The message of one alert: a few lines a person can act on without opening anything."""
    lines = [data["headline"]]
    job = data.get("job")
    if job is not None:
        shown = job["provider_status"] and job["provider_status"] != job["status"]
        status = job["status"] + (f" (provider: {job['provider_status']})" if shown else "")
        lines.append(f"Status: {status}; {counts_text(job)}")
        if "waiting_minutes" in job:
            lines.append(f"Not ended after {job['waiting_minutes']} minutes")
        errors = job["error_count"]
        label = f"First error (of {errors:,})" if errors > 1 else "First error"
        lines.append(f"{label}: {data.get('first_error') or '(none reported)'}")
        lines.append(f"Link: {job['url']}")
    else:
        account = data["account"]
        lines.append(f"Failed syncs in a row: {account['consecutive_failures']}")
        lines.append(f"Last successful sync: {account['last_success_at'] or 'never'}")
        if account["last_error"]:
            lines.append(f"Last error: {account['last_error']}")
        lines.append(f"Link: {account['url']}")
    lines.append(f"Rule: {data['rule']['name']}")
    return "\n".join(lines)


def digest_line(data: dict[str, Any]) -> str:
    """One alert as one line of a digest."""
    job = data.get("job")
    if job is None:
        account = data["account"]
        return (
            f"- {data['headline']} — {account['consecutive_failures']} failed syncs in a row"
            f" — {account['url']}"
        )
    error = data.get("first_error")
    return (
        f"- {data['headline']} — {counts_text(job)}"
        + (f" — not ended after {job['waiting_minutes']} min" if "waiting_minutes" in job else "")
        + (f" — first error: {error[:DIGEST_LINE_ERROR_CHARS]}" if error else "")
        + f" — {job['url']}"
    )


def digest_text(rule: AlertRule, data: list[dict[str, Any]], count: int) -> str:
    """The digest: the listed alerts, then a link to the rest in the admin's event ledger."""
    lines = [f"{count:,} alerts from rule “{rule.name}”:", *(digest_line(d) for d in data)]
    if count > len(data):
        lines.append(
            f"…and {count - len(data):,} more: "
            + site_link(reverse("admin:jobcenter_alertevent_changelist"))
            + f"?rule__id__exact={rule.pk}"
        )
    return "\n".join(lines)
