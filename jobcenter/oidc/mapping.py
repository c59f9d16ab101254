"""The identity provider's groups, as Job Center's flags, teams and permission groups.

`JOBCENTER_OIDC_GROUP_MAP` maps each group name the provider sends (in the claim
`JOBCENTER_OIDC_GROUPS_CLAIM`) to roles: `staff`, `superuser`, `team:<name>` (a
membership of that Job Center team) and `group:<name>` (a Django permission group). Every
role lets its holder into the admin, so a mapped group makes staff.

The mapping is applied on every sign-in, so the identity provider rules: a group removed
there removes the flag, team or permission group at the next sign-in. Only teams and
permission groups the mapping names are managed; memberships a superuser adds by hand in
the others stay. Each change is a save or delete of its own, recorded by the audit log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group

from jobcenter.models import Team, TeamMembership

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Access:
    """What one sign-in's groups give."""

    staff: bool = False
    superuser: bool = False
    teams: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()


def group_names(claims: dict[str, Any]) -> list[str]:
    """The groups claim as a list of names (a single string counts as one group)."""
    value = claims.get(settings.JOBCENTER_OIDC_GROUPS_CLAIM) or []
    if isinstance(value, str):
        value = [value]
    return sorted({str(item) for item in value})


def managed() -> tuple[set[str], set[str]]:
    """The team names and permission group names the mapping names."""
    roles = [role for mapped in settings.JOBCENTER_OIDC_GROUP_MAP.values() for role in mapped]
    return (
        {role.split(":", 1)[1].strip() for role in roles if role.startswith("team:")},
        {role.split(":", 1)[1].strip() for role in roles if role.startswith("group:")},
    )


def access_for(groups: Iterable[str]) -> Access:
    """The union of the roles of every mapped group in `groups`."""
    roles = {role for group in groups for role in settings.JOBCENTER_OIDC_GROUP_MAP.get(group, ())}
    teams = {role.split(":", 1)[1].strip() for role in roles if role.startswith("team:")}
    perm_groups = {role.split(":", 1)[1].strip() for role in roles if role.startswith("group:")}
    return Access(
        staff=bool(roles),
        superuser="superuser" in roles,
        teams=frozenset(teams),
        groups=frozenset(perm_groups),
    )


def apply(user: Any, access: Access) -> None:
    """Make `user`'s flags, managed teams and managed permission groups those of `access`."""
    changed = [
        name
        for name, value in (("is_staff", access.staff), ("is_superuser", access.superuser))
        if getattr(user, name) != value
    ]
    for name in changed:
        setattr(user, name, getattr(access, name.removeprefix("is_")))
    if changed:
        user.save(update_fields=changed)
    managed_teams, managed_groups = managed()
    _apply_teams(user, managed_teams, access.teams)
    _apply_groups(user, managed_groups, access.groups)


def _apply_teams(user: Any, managed_teams: set[str], wanted: frozenset[str]) -> None:
    # One by one: each membership added or removed is an audit record of its own.
    for membership in TeamMembership.objects.filter(
        user=user, team__name__in=managed_teams - wanted
    ):
        membership.delete()
    teams = {team.name: team for team in Team.objects.filter(name__in=wanted)}
    for name in sorted(wanted - teams.keys()):
        logger.warning("OIDC group map names team %r, which does not exist", name)
    have = set(TeamMembership.objects.filter(user=user).values_list("team_id", flat=True))
    for team in teams.values():
        if team.pk not in have:
            TeamMembership.objects.create(team=team, user=user)


def _apply_groups(user: Any, managed_groups: set[str], wanted: frozenset[str]) -> None:
    stale = list(user.groups.filter(name__in=managed_groups - wanted))
    if stale:
        user.groups.remove(*stale)
    groups = {group.name: group for group in Group.objects.filter(name__in=wanted)}
    for name in sorted(wanted - groups.keys()):
        logger.warning("OIDC group map names permission group %r, which does not exist", name)
    have = set(user.groups.values_list("pk", flat=True))
    new = [group for group in groups.values() if group.pk not in have]
    if new:
        user.groups.add(*new)
