"""Who sees what: `scoped(queryset, user)` narrows any queryset to what `user` may see.

The one place teams are enforced; the admin (every ModelAdmin's `get_queryset`, its
list filters and form choices), the API (every view's `get_queryset`), the exports, the
dashboard and the alerts all call it rather than filter on their own.

- Superusers see everything.
- Other users see the accounts of their teams and everything that hangs from them:
  jobs, snapshots, error records, sync runs, alert events (by the account), the
  teams' alert rules and channels, and the deliveries to those channels.
- A user in no team sees nothing (`NO_TEAM_MESSAGE` says why where a page can).

The narrowing is a subquery, `account_id IN (SELECT id FROM account WHERE team_id IN
(SELECT team_id FROM membership WHERE user_id = %s))`: no query of its own, so every
view keeps its query count, and the jobs' own indexes still serve their orderings (the
small account set is an IN list, not a join the planner could start from).

A model missing from the table below raises `LookupError`: a new model is shown to
nobody until someone says how it belongs to a team.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Model, QuerySet

from jobcenter.models import (
    AlertChannel,
    AlertDelivery,
    AlertEvent,
    AlertRule,
    Job,
    JobError,
    JobSnapshot,
    ProviderAccount,
    SyncRun,
    Team,
    TeamMembership,
)

NO_TEAM_MESSAGE = (
    "You are in no team, so you see no accounts and nothing synced from them. "
    "Ask a superuser to add you to a team."
)

# The path from each model to the id of the account it hangs from...
ACCOUNT_PATHS: dict[type[Model], str] = {
    Job: "account_id",
    JobSnapshot: "job__account_id",
    JobError: "job__account_id",
    SyncRun: "account_id",
    AlertEvent: "account_id",
}
# ... or to the id of its team.
TEAM_PATHS: dict[type[Model], str] = {
    Team: "pk",
    TeamMembership: "team_id",
    ProviderAccount: "team_id",
    AlertRule: "team_id",
    AlertChannel: "team_id",
    AlertDelivery: "channel__team_id",
}


def sees_everything(user: Any) -> bool:
    """Superusers (active ones) are not narrowed to any team."""
    return bool(user is not None and user.is_active and user.is_superuser)


def team_ids(user: Any) -> QuerySet[TeamMembership]:
    """The ids of `user`'s teams, as a subquery (nothing for an anonymous user)."""
    return TeamMembership.objects.filter(user_id=getattr(user, "pk", None)).values("team_id")


def scoped(queryset: QuerySet, user: Any) -> QuerySet:
    """`queryset` narrowed to the rows `user` may see (all of them for a superuser)."""
    if sees_everything(user):
        return queryset
    return _in_teams(queryset, team_ids(user))


def in_team(queryset: QuerySet, team_id: int | None) -> QuerySet:
    """`queryset` narrowed to one team's rows: what a team's alert rule may watch. A rule
    without a team (superusers') is narrowed to nothing less than everything."""
    if team_id is None:
        return queryset
    return _in_teams(queryset, [team_id])


def _in_teams(queryset: QuerySet, teams: QuerySet | list[int]) -> QuerySet:
    """The one narrowing both use: by the path from the queryset's model to its team."""
    model = queryset.model
    model = model._meta.concrete_model or model  # a proxy belongs where its model does
    if model in ACCOUNT_PATHS:
        accounts = ProviderAccount.objects.filter(team_id__in=teams).values("pk")
        return queryset.filter(**{f"{ACCOUNT_PATHS[model]}__in": accounts})
    if model in TEAM_PATHS:
        return queryset.filter(**{f"{TEAM_PATHS[model]}__in": teams})
    raise LookupError(f"{model.__name__} has no path to a team in jobcenter.queries.scoping.")


def is_scoped(model: type[Model]) -> bool:
    """Whether rows of `model` belong to teams (and so go through `scoped`)."""
    model = model._meta.concrete_model or model
    return model in ACCOUNT_PATHS or model in TEAM_PATHS


def has_team(user: Any) -> bool:
    """Whether `user` sees anything: a superuser, or a member of some team (one query,
    remembered on the user object for the rest of the request)."""
    if sees_everything(user):
        return True
    if user is None or user.pk is None:
        return False
    if not hasattr(user, "_jobcenter_has_team"):
        user._jobcenter_has_team = TeamMembership.objects.filter(user_id=user.pk).exists()
    return user._jobcenter_has_team
