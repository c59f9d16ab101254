"""The audit log: one append-only row per change to what staff configure.

Rows are written by `jobcenter.audit.recorder` from model signals, whichever way the
change came (admin, API, command, shell). The ORM refuses to change or delete a row:
`save()` on a stored row, `delete()`, and `update()`/`delete()` on any queryset raise
`AppendOnlyError`. The actor is stored as text and an id, not as a foreign key, so a
deleted user (or a renamed one) leaves the rows as they were written.
"""

from __future__ import annotations

from typing import Any, NoReturn

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone


class AppendOnlyError(Exception):
    """An audit record was about to be changed or deleted."""


def _refuse(what: str) -> NoReturn:
    raise AppendOnlyError(f"audit records are append-only: {what} is refused")


class AuditAction(models.TextChoices):
    CREATE = "create", "Created"
    CHANGE = "change", "Changed"
    DELETE = "delete", "Deleted"


class AuditRecordQuerySet(models.QuerySet):
    """Reads and inserts only: bulk changes and deletes raise."""

    def update(self, **kwargs: Any) -> NoReturn:
        _refuse("update()")

    def delete(self) -> NoReturn:
        _refuse("delete()")

    def bulk_update(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse("bulk_update()")

    def update_or_create(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse("update_or_create()")

    def _raw_delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse("a raw delete")


class AuditRecord(models.Model):
    """Who changed what, when, from where: written once, never changed."""

    at = models.DateTimeField(default=timezone.now, editable=False)
    # The user's id and username at the time; for commands "command:<name>", with no id.
    actor_id = models.BigIntegerField("actor's user id", null=True, blank=True, editable=False)
    actor = models.CharField(max_length=200, editable=False)
    # The client's address (behind the proxy, the forwarded one); a command's host name.
    address = models.CharField(max_length=255, blank=True, editable=False)
    action = models.CharField(max_length=10, choices=AuditAction.choices, editable=False)
    model = models.CharField(max_length=100, editable=False, help_text="app_label.modelname")
    object_id = models.CharField(max_length=64, editable=False)
    object_repr = models.CharField("object", max_length=200, editable=False)
    # {field: {"old": ..., "new": ...}} for plain fields, {field: "changed"} for secrets
    # (credentials name each changed key: "credentials.api_key"), {field: {"added": [...],
    # "removed": [...]}} for many-to-many fields.
    changes = models.JSONField(default=dict, encoder=DjangoJSONEncoder, editable=False)

    objects = AuditRecordQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["at", "id"], name="auditrecord_at"),
            models.Index(fields=["model", "object_id"], name="auditrecord_object"),
        ]

    def __str__(self) -> str:
        return f"{self.actor} {self.action} {self.model} {self.object_repr}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding or kwargs.get("force_update") or kwargs.get("update_fields"):
            _refuse("saving a stored record")
        # An INSERT, always: a new instance given a stored row's id fails, never overwrites.
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse("delete()")
