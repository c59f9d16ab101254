"""Users and groups: what a staff member may change of them stops short of superuser.

Django's own user admin lets anyone holding `auth.change_user` give themselves every
permission, reset a superuser's password, or edit a group they belong to: `change_user`
would be superuser in disguise. Here only superusers change superusers, users'
permissions, groups and flags, and groups' permissions; other staff holding the
permissions keep the rest (names, email, active, passwords of non-superusers).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.http import HttpRequest

# What makes a user more powerful: only a superuser changes these.
POWER_FIELDS = ("is_staff", "is_superuser", "groups", "user_permissions")


class GuardedUserAdmin(UserAdmin):
    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields = tuple(super().get_readonly_fields(request, obj))
        return fields if request.user.is_superuser else fields + POWER_FIELDS

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False  # the change page and the password form alike
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False
        return super().has_delete_permission(request, obj)


class GuardedGroupAdmin(GroupAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser


for model, model_admin in ((User, GuardedUserAdmin), (Group, GuardedGroupAdmin)):
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)
