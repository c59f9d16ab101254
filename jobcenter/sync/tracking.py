"""Registering ("tracking") job ids, for providers with no list endpoint and old jobs.

Admin, command line and API all call `track_job`, so they refuse the same input with
the same words and write nothing when they refuse.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from jobcenter.models import Job, ProviderAccount
from providers.base import Status

MAX_EXTERNAL_ID = Job._meta.get_field("external_id").max_length or 255


def find_account(reference: str | int | ProviderAccount) -> ProviderAccount:
    """An account by instance, id or name; ValidationError when there is none."""
    if isinstance(reference, ProviderAccount):
        return reference
    text = str(reference).strip()
    query = ProviderAccount.objects.filter(name=text)
    if text.isdigit():
        query = ProviderAccount.objects.filter(pk=int(text)) | query
    account = query.first()
    if account is None:
        raise ValidationError({"account": f"No account named or numbered {text!r}."})
    return account


def clean_external_id(external_id: str) -> str:
    value = (external_id or "").strip()
    if not value:
        raise ValidationError({"external_id": "Enter the job id the provider returned."})
    if len(value) > MAX_EXTERNAL_ID:
        raise ValidationError(
            {
                "external_id": f"A job id has at most {MAX_EXTERNAL_ID} characters; this one has {len(value)}."
            }
        )
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValidationError(
            {"external_id": "A job id cannot contain spaces or control characters."}
        )
    return value


def clean_kind(account: ProviderAccount, kind: str) -> str:
    provider = account.provider_class
    names = [k.name for k in provider.kinds]
    if kind not in names:
        raise ValidationError(
            {"kind": f"{provider.label} has no job kind {kind!r}; it has: {', '.join(names)}."}
        )
    return kind


def track_job(
    account_ref: str | int | ProviderAccount, kind: str, external_id: str
) -> tuple[Job, bool]:
    """Track a job id on an account; returns (job, created). Polled until it ends."""
    account = find_account(account_ref)
    kind = clean_kind(account, kind)
    external_id = clean_external_id(external_id)
    now = timezone.now()
    try:
        with transaction.atomic():
            job, created = Job.objects.get_or_create(
                account=account,
                kind=kind,
                external_id=external_id,
                defaults={
                    "provider": account.provider,
                    "status": Status.UNKNOWN.value,
                    "tracked": True,
                    "first_seen_at": now,
                    "last_changed_at": now,
                },
            )
    except IntegrityError:  # tracked by someone else at the same moment
        job, created = Job.objects.get(account=account, kind=kind, external_id=external_id), False
    if not created and not job.tracked:
        Job.objects.filter(pk=job.pk).update(tracked=True, last_changed_at=timezone.now())
        job.tracked = True
    return job, created
