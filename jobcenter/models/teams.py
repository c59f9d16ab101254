"""Teams: which staff see which accounts (and everything synced from them).

A membership is a row of its own (`TeamMembership`, the `through` model of
`Team.members`), so adding or removing a member is a save or a delete of one row: an
audit log hooks `post_save`/`post_delete` on it (and `m2m_changed` on `Team.members`
for `team.members.add()`), and the admin edits memberships as an inline.

Who sees what is decided in one place, `jobcenter.queries.scoping`.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Team(models.Model):
    """A group of staff; its members see and act on the team's accounts only."""

    name = models.CharField(max_length=100, unique=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        through="TeamMembership",
        related_name="jobcenter_teams",
        blank=True,
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class TeamMembership(models.Model):
    """One staff member in one team."""

    # The unique (team, user) constraint leads with the team: no index of its own.
    team = models.ForeignKey(
        Team, on_delete=models.CASCADE, related_name="memberships", db_index=False
    )
    # Indexed: every scoped query starts from "the teams of this user".
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="team_memberships"
    )
    added_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["team", "user"]
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="team_membership_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.team}"


def team_field(related_name: str, help_text: str) -> models.ForeignKey:
    """The team of an account, an alert rule or a channel: blank means superusers only;
    PROTECT, so a team is deleted only once what it holds has moved."""
    return models.ForeignKey(
        Team,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name=related_name,
        help_text=help_text,
    )
