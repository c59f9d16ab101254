"""Admin for teams: their members (one membership row each) and how many accounts they hold.

Only superusers add, change or delete teams and memberships, whatever permissions a
staff member holds: a member who could edit teams could join any team and see its
accounts. Staff with `view_team` see their own teams (scoped like everything else).
Memberships are edited as an inline, so every change is a save or delete of a
`TeamMembership` row (its signals are where an audit log listens).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from jobcenter.admin.common import TeamScopedAdmin
from jobcenter.models import Team, TeamMembership


class SuperuserEdits:
    """Adding, changing and deleting is for superusers; viewing follows the team's view."""

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and request.user.is_superuser


class TeamMembershipInline(SuperuserEdits, admin.TabularInline):
    model = TeamMembership
    extra = 1
    fields = ["user", "added_at"]
    readonly_fields = ["added_at"]
    verbose_name = "member"
    verbose_name_plural = "members"

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("jobcenter.view_team")


@admin.register(Team)
class TeamAdmin(SuperuserEdits, TeamScopedAdmin):
    list_display = ["name", "member_count", "account_count", "created_at"]
    search_fields = ["name"]
    fields = ["name"]
    inlines = [TeamMembershipInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Team]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                members_n=Count("memberships", distinct=True),
                accounts_n=Count("accounts", distinct=True),
            )
        )

    @admin.display(description="members", ordering="members_n")
    def member_count(self, obj: Team) -> int:
        return obj.members_n

    @admin.display(description="accounts", ordering="accounts_n")
    def account_count(self, obj: Team) -> int:
        return obj.accounts_n
