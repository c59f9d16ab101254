"""Who may call what: staff only, and the model's own permissions, reads included.

DRF's `DjangoModelPermissions` lets any authenticated user read (GET needs no
permission). Job Center's data is internal, so reads need `view_<model>` here, writes
`add_`/`change_`, and actions name the permissions they need (sync and test need
`change_provideraccount`; tracking needs `change_job`, as in the admin). Exports also
need `export_job`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rest_framework.permissions import BasePermission, DjangoModelPermissions

from jobcenter.exports.specs import EXPORT_PERMISSION

if TYPE_CHECKING:  # rest_framework.views imports the permission classes from settings
    from rest_framework.request import Request
    from rest_framework.views import APIView

VIEW = ["%(app_label)s.view_%(model_name)s"]


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
