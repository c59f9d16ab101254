"""Who may call what: staff only, and the model's own permissions, reads included.

DRF's `DjangoModelPermissions` lets any authenticated user read (GET needs no
permission). Job Center's data is internal, so reads need `view_<model>` here, writes
`add_`/`change_`, and actions name the permissions they need (sync and test need
`change_provideraccount`; tracking needs `change_job`, as in the admin). Exports also
need `export_job`.

A user's permissions are read in one query, not Django's two: with the token itself
(`authentication.py`), else here before the first check. They fill ModelBackend's own
cache, so `has_perm` answers as Django would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import Permission
from django.db import connections
from django.db.models import Aggregate, Q, QuerySet, Subquery, TextField, Value
from django.db.models.functions import Concat
from rest_framework.permissions import BasePermission, DjangoModelPermissions

from jobcenter.exports.specs import EXPORT_PERMISSION

if TYPE_CHECKING:  # rest_framework.views imports the permission classes from settings
    from rest_framework.request import Request
    from rest_framework.views import APIView

VIEW = ["%(app_label)s.view_%(model_name)s"]
SEPARATOR = "\n"  # between the names of a joined list: no permission name holds one


def granted(user_id: Any) -> QuerySet[Permission]:
    """The permissions Django's ModelBackend gives an active user: theirs and their groups'."""
    return Permission.objects.filter(Q(user=user_id) | Q(group__user=user_id)).order_by()


def full_name() -> Concat:
    return Concat("content_type__app_label", Value("."), "codename", output_field=TextField())


class JoinedText(Aggregate):
    """`GROUP_CONCAT(text, separator)` (SQLite), `STRING_AGG(text, separator)` (PostgreSQL)."""

    function = "GROUP_CONCAT"
    output_field = TextField()

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, function="STRING_AGG", **extra)


def permission_names(user_id: Any, using: str) -> Subquery | None:
    """A subquery of the user's permission names, joined: the token lookup reads them in
    its own query (`authentication.py`), so a request checks its permissions without
    one more (None on a database without the aggregate: they are loaded apart)."""
    if connections[using].vendor not in ("sqlite", "postgresql"):
        return None
    names = (
        granted(user_id)
        .annotate(one=Value(1))
        .values("one")  # no GROUP BY column: one row, every name
        .annotate(names=JoinedText(full_name(), Value(SEPARATOR)))
        .values("names")
    )
    return Subquery(names, output_field=TextField())


def remember_permissions(user: Any, names: set[str]) -> None:
    """Fill ModelBackend's per-user cache (`_perm_cache`, what `has_perm` reads), as it
    would: an inactive user has none."""
    if not hasattr(user, "_perm_cache"):
        user._perm_cache = names if user.is_active else set()


def load_permissions(user: Any) -> None:
    """The user's permissions in one query (ModelBackend takes two), unless known."""
    if hasattr(user, "_perm_cache") or not user.is_active or user.is_superuser:
        return
    rows = granted(user.pk).values_list("content_type__app_label", "codename").distinct()
    remember_permissions(user, {f"{app_label}.{codename}" for app_label, codename in rows})


class ModelPermissions(DjangoModelPermissions):
    """`DjangoModelPermissions` that also checks GET, HEAD and OPTIONS.

    A view may set `permission_model` (the model whose permissions apply) and
    `action_permissions = {"action": ["app.codename", ...]}` for actions
    whose permission is not the one their HTTP method implies.
    """

    perms_map = {
        **DjangoModelPermissions.perms_map,
        "GET": VIEW,
        "HEAD": VIEW,
        "OPTIONS": VIEW,
    }

    def has_permission(self, request: Request, view: APIView) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        load_permissions(request.user)
        action = getattr(view, "action", None)
        explicit: dict[str, list[str]] = getattr(view, "action_permissions", {})
        if action in explicit:
            return request.user.has_perms(explicit[action])
        return super().has_permission(request, view)

    def _queryset(self, view: APIView) -> Any:
        # Views whose get_queryset looks a parent up (jobs/{id}/snapshots/) name their
        # model, so a caller without permission gets 403 before any lookup (not a 404).
        model = getattr(view, "permission_model", None)
        if model is not None:
            return model._default_manager.none()
        return super()._queryset(view)

    def has_object_permission(self, request: Request, view: APIView, obj: Any) -> bool:
        return True  # no per-row permissions: model permissions decide


class CanExport(BasePermission):
    """The export permission (`jobcenter.export_job`), beside the exported model's view."""

    message = "Exports need the permission jobcenter.export_job."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return bool(request.user and request.user.has_perm(EXPORT_PERMISSION))
