"""FilterSets for jobs, snapshots, errors, sync runs and accounts.

They live apart from the views so the API, the exports (jobcenter/exports.py), the admin
and commands filter the same way. Each works on a plain queryset and a QueryDict::

    f = JobFilter(QueryDict("status=failed&account=Main"), queryset=Job.objects.all())
    if not f.is_valid():
        ...  # f.errors: {"status": ["Select a valid choice. ..."]}
    rows = f.qs  # filtered and ordered by a key that ends with the id

Every value is checked before any query runs: a bad value is a field error (400 in the
API), never a server error. Every result is ordered (by `ordering`, or the default),
and every ordering ends with the id, so keyset pagination and exports are stable.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import django_filters as df
from django import forms
from django.db.models import Q, QuerySet
from django_filters.fields import IsoDateTimeField

from jobcenter.models import (
    AccountStatus,
    Job,
    JobError,
    JobSnapshot,
    ProviderAccount,
    SyncOutcome,
    SyncRun,
    SyncTrigger,
)
from jobcenter.queries.scoping import scoped
from providers import PROVIDER_CLASSES, get_provider, provider_choices
from providers.base import Status

BIGINT_LIMIT = 2**63
SEARCH_MAX_LENGTH = 200


def kind_choices() -> list[tuple[str, str]]:
    """Every job kind any registered provider knows, labelled with the provider."""
    seen: dict[str, str] = {}
    for slug in PROVIDER_CLASSES:
        provider = get_provider(slug)
        for kind in provider.kinds:
            seen.setdefault(kind.name, f"{provider.label}: {kind.label}")
    return list(seen.items())


STATUS_CHOICES = [(s.value, s.value.replace("_", " ")) for s in Status]
# Lists, not callables: the registry is fixed at start-up, and drf-spectacular turns
# lists into enums in the OpenAPI document.
PROVIDER_CHOICES = provider_choices()
KIND_CHOICES = kind_choices()


# --- form fields and filters ------------------------------------------------------------


class StrictBooleanField(forms.Field):
    """`true`/`false` (or 1/0); anything else is an error, not "no filter"."""

    TRUE = frozenset({"true", "1"})
    FALSE = frozenset({"false", "0"})

    def to_python(self, value: Any) -> bool | None:
        if value in (None, ""):
            return None
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in self.TRUE:
            return True
        if text in self.FALSE:
            return False
        raise forms.ValidationError("Enter true or false.", code="invalid")


class StrictBooleanFilter(df.BooleanFilter):
    field_class = StrictBooleanField


class IsNullFilter(StrictBooleanFilter):
    """`gone=true` keeps rows whose `field_name` is set; `gone=false` those where it is not."""

    def filter(self, qs: QuerySet, value: bool | None) -> QuerySet:
        if value is None:
            return qs
        return qs.filter(**{f"{self.field_name}__isnull": not value})


class UtcDateTimeField(IsoDateTimeField):
    """An ISO 8601 time, converted to UTC here.

    PostgreSQL refuses offsets past ±15:59 that Python accepts (+21:46), and a time near
    year 1 or 9999 may not convert at all: both are field errors, not server errors.
    """

    def to_python(self, value: Any) -> datetime | None:
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except (OverflowError, ValueError):
            raise forms.ValidationError(
                "This time cannot be converted to UTC.", code="invalid"
            ) from None


class TimeFilter(df.IsoDateTimeFilter):
    field_class = UtcDateTimeField


class InFilter(df.MultipleChoiceFilter):
    """Several values at once (`?status=failed&status=running`), as one `IN`."""

    def filter(self, qs: QuerySet, value: list[str]) -> QuerySet:
        if not value:
            return qs
        return qs.filter(**{f"{self.field_name}__in": value})


def find_account_id(text: str, accounts: QuerySet[ProviderAccount] | None = None) -> int | None:
    """The id of the account numbered or named `text` (the number wins), or None.

    Among `accounts` when given (the caller's teams': another team's account is "no
    account", as a missing one is)."""
    # ASCII digits only: "²".isdigit() is true, and int("²") fails.
    number = int(text) if text.isascii() and text.isdigit() else None
    query = Q(name=text)
    if number is not None and number < BIGINT_LIMIT:
        query |= Q(pk=number)
    among = ProviderAccount.objects.all() if accounts is None else accounts
    found = list(among.filter(query).values_list("pk", flat=True)[:2])
    if number in found:
        return number
    return found[0] if found else None


class AccountField(forms.CharField):
    """An account given by id or by name, resolved to its id (one small query), among
    `accounts` (the caller's teams', set by `TeamFilterSet`) when given."""

    def __init__(
        self, *args: Any, accounts: QuerySet[ProviderAccount] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.accounts = accounts

    def clean(self, value: Any) -> int | None:
        text = super().clean(value)
        if not text:
            return None
        account_id = find_account_id(text, self.accounts)
        if account_id is None:
            # The text goes in params, never in the message: it may hold a "%".
            raise forms.ValidationError(
                "No account named or numbered %(value)r.", code="invalid", params={"value": text}
            )
        return account_id


class AccountFilter(df.CharFilter):
    """`?account=` by id or name; an unknown account is a field error."""

    field_class = AccountField

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("help_text", "Account id or name.")
        kwargs.setdefault("max_length", ProviderAccount._meta.get_field("name").max_length)
        super().__init__(*args, **kwargs)

    def filter(self, qs: QuerySet, value: int | None) -> QuerySet:
        if value is None:
            return qs
        return qs.filter(**{f"{self.field_name}_id": value})


class KeyOrderingFilter(df.ChoiceFilter):
    """`?ordering=` from a whitelist; each choice maps to a key ending with the id.

    Applied even when absent (the default), so every result has a stable order.
    """

    def __init__(self, *args: Any, orderings: dict[str, tuple[str, ...]], **kwargs: Any) -> None:
        self.orderings = orderings
        self.default = next(iter(orderings))
        kwargs["choices"] = [(name, name) for name in orderings]
        kwargs.setdefault("help_text", f"Sort order; default {self.default}.")
        kwargs.setdefault("empty_label", None)
        super().__init__(*args, **kwargs)

    def filter(self, qs: QuerySet, value: str | None) -> QuerySet:
        return qs.order_by(*self.orderings[value or self.default])


def after(field_name: str, what: str) -> TimeFilter:
    return TimeFilter(
        field_name=field_name,
        lookup_expr="gte",
        help_text=f"{what} at or after this time (ISO 8601 with a time zone).",
    )


def before(field_name: str, what: str) -> TimeFilter:
    return TimeFilter(
        field_name=field_name,
        lookup_expr="lt",
        help_text=f"{what} before this time (ISO 8601 with a time zone).",
    )


def job_orderings() -> dict[str, tuple[str, ...]]:
    """Orderings of jobs by one of their times, newest first by default."""
    fields = ["created_at", "last_changed_at", "first_seen_at", "completed_at"]
    result: dict[str, tuple[str, ...]] = {}
    for field in fields:
        result[f"-{field}"] = (f"-{field}", "-id")
    for field in fields:
        result[field] = (field, "id")
    result["-id"] = ("-id",)
    result["id"] = ("id",)
    return result


# --- the FilterSets ---------------------------------------------------------------------


class TeamFilterSet(df.FilterSet):
    """With a request, `?account=` names only the caller's teams' accounts: another
    team's is a field error like an unknown one (not an empty list that tells it exists).
    The rows themselves are narrowed by the caller's queryset (`scoping.scoped`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        account = self.filters.get("account")
        if account is not None and self.request is not None:
            user = getattr(self.request, "user", None)
            account.extra["accounts"] = scoped(ProviderAccount.objects.all(), user)


class JobScopedFilter(TeamFilterSet):
    """Filters on a job's columns, for jobs and for rows that belong to a job.

    `job` is the path from the filtered model to the job ("" for Job itself).
    """

    job: ClassVar[str] = ""

    def search_job(self, qs: QuerySet, name: str, value: str) -> QuerySet:
        return search_jobs(qs, value, self.job)


def search_jobs(qs: QuerySet, value: str, job: str = "") -> QuerySet:
    """A job's external id (exact), or text in one of its error records.

    The API's `search` and the admin's search box both. The matching job ids are one
    UNION (the id by its index, the error text on the smaller error table), so neither
    side scans the jobs: `external_id = :term OR id IN (...)` made PostgreSQL walk all
    of them. `job` is the path from the filtered model to the job ("" for Job itself).
    """
    term = value.strip()
    if not term:
        return qs
    by_id = Job.objects.filter(external_id=term).order_by().values("id")
    by_error = (
        JobError.objects.filter(
            Q(message__icontains=term) | Q(title__icontains=term) | Q(code__iexact=term)
        )
        .order_by()
        .values("job_id")
    )
    return qs.filter(**{f"{job}id__in": by_id.union(by_error)})


def _search(help_text: str, method: str = "search_job") -> df.CharFilter:
    return df.CharFilter(method=method, max_length=SEARCH_MAX_LENGTH, help_text=help_text)


class JobFilter(JobScopedFilter):
    """Jobs: GET /api/v1/jobs/ and the job exports."""

    provider = InFilter(field_name="provider", choices=PROVIDER_CHOICES)
    account = AccountFilter(field_name="account")
    kind = InFilter(field_name="kind", choices=KIND_CHOICES)
    status = InFilter(field_name="status", choices=STATUS_CHOICES)
    created_after = after("created_at", "Created by the provider")
    created_before = before("created_at", "Created by the provider")
    changed_after = after("last_changed_at", "Last changed")
    changed_before = before("last_changed_at", "Last changed")
    terminal = StrictBooleanFilter(field_name="is_terminal", help_text="Finished jobs only.")
    gone = IsNullFilter(field_name="gone_at", help_text="No longer returned by the provider.")
    tracked = StrictBooleanFilter(field_name="tracked", help_text="Registered by id.")
    search = _search("External id (exact) or text in the job's error records.")
    ordering = KeyOrderingFilter(orderings=job_orderings())

    class Meta:
        model = Job
        fields: ClassVar[list[str]] = []


class SnapshotFilter(JobScopedFilter):
    """Snapshots (a job's history): the job filters, the snapshot's status and time."""

    job = "job__"

    provider = InFilter(field_name="job__provider", choices=PROVIDER_CHOICES)
    account = AccountFilter(field_name="job__account")
    kind = InFilter(field_name="job__kind", choices=KIND_CHOICES)
    status = InFilter(
        field_name="status", choices=STATUS_CHOICES, help_text="Status at this snapshot."
    )
    created_after = after("job__created_at", "Job created by the provider")
    created_before = before("job__created_at", "Job created by the provider")
    changed_after = after("job__last_changed_at", "Job last changed")
    changed_before = before("job__last_changed_at", "Job last changed")
    observed_after = after("observed_at", "Observed")
    observed_before = before("observed_at", "Observed")
    terminal = StrictBooleanFilter(field_name="job__is_terminal")
    gone = IsNullFilter(field_name="job__gone_at")
    tracked = StrictBooleanFilter(field_name="job__tracked")
    search = _search("The job's external id (exact) or text in its error records.")
    ordering = KeyOrderingFilter(
        orderings={
            "-observed_at": ("-observed_at", "-id"),
            "observed_at": ("observed_at", "id"),
            "-id": ("-id",),
            "id": ("id",),
        }
    )

    class Meta:
        model = JobSnapshot
        fields: ClassVar[list[str]] = []


class ErrorFilter(JobScopedFilter):
    """Error records: the job filters, and search in the record's own text."""

    job = "job__"

    provider = InFilter(field_name="job__provider", choices=PROVIDER_CHOICES)
    account = AccountFilter(field_name="job__account")
    kind = InFilter(field_name="job__kind", choices=KIND_CHOICES)
    status = InFilter(field_name="job__status", choices=STATUS_CHOICES, help_text="Job status.")
    created_after = after("job__created_at", "Job created by the provider")
    created_before = before("job__created_at", "Job created by the provider")
    changed_after = after("job__last_changed_at", "Job last changed")
    changed_before = before("job__last_changed_at", "Job last changed")
    fetched_after = after("fetched_at", "Fetched")
    fetched_before = before("fetched_at", "Fetched")
    terminal = StrictBooleanFilter(field_name="job__is_terminal")
    gone = IsNullFilter(field_name="job__gone_at")
    tracked = StrictBooleanFilter(field_name="job__tracked")
    search = _search(
        "The job's external id (exact), or text in the record (message, title, code, record id).",
        method="search_error",
    )
    ordering = KeyOrderingFilter(
        orderings={
            "position": ("job_id", "position", "id"),
            "-fetched_at": ("-fetched_at", "-id"),
            "fetched_at": ("fetched_at", "id"),
            "-id": ("-id",),
            "id": ("id",),
        }
    )

    class Meta:
        model = JobError
        fields: ClassVar[list[str]] = []

    def search_error(self, qs: QuerySet, name: str, value: str) -> QuerySet:
        term = value.strip()
        if not term:
            return qs
        return qs.filter(
            Q(job__external_id=term)
            | Q(message__icontains=term)
            | Q(title__icontains=term)
            | Q(code__iexact=term)
            | Q(external_id=term)
        )


class SyncRunFilter(TeamFilterSet):
    """Sync runs: by account, outcome, trigger and start time."""

    account = AccountFilter(field_name="account")
    provider = InFilter(field_name="account__provider", choices=PROVIDER_CHOICES)
    outcome = InFilter(field_name="outcome", choices=SyncOutcome.choices)
    trigger = InFilter(field_name="trigger", choices=SyncTrigger.choices)
    started_after = after("started_at", "Started")
    started_before = before("started_at", "Started")
    finished_after = after("finished_at", "Finished")
    finished_before = before("finished_at", "Finished")
    ordering = KeyOrderingFilter(
        orderings={
            "-started_at": ("-started_at", "-id"),
            "started_at": ("started_at", "id"),
            "-id": ("-id",),
            "id": ("id",),
        }
    )

    class Meta:
        model = SyncRun
        fields: ClassVar[list[str]] = []


class AccountListFilter(df.FilterSet):
    """Accounts: by provider, enabled and sync health."""

    provider = InFilter(field_name="provider", choices=PROVIDER_CHOICES)
    enabled = StrictBooleanFilter(field_name="enabled")
    last_status = InFilter(field_name="last_status", choices=AccountStatus.choices)
    ordering = KeyOrderingFilter(orderings={"name": ("name", "id"), "id": ("id",), "-id": ("-id",)})

    class Meta:
        model = ProviderAccount
        fields: ClassVar[list[str]] = []
