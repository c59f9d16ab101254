"""What is audited, and the model signals that write the records.

Signals, not the views: an account edited in the admin, through the API, by a command
or in a shell is recorded alike. Only the fields staff configure are watched
(`AUDITED`): the sync's own writes (`next_sync_at`, the lease, `last_status`,
`sync_state`...) go through `QuerySet.update()`, which sends no signal, and a `save()`
whose `update_fields` names no watched field costs nothing. A watched save costs one
SELECT of the row's watched columns before it (the old values) and one INSERT after.

Secrets are never written: a password or a webhook's signing secret is recorded as
"changed"; encrypted credentials are compared decrypted, and only the names of the keys
whose values differ are recorded ("credentials.api_key": "changed"), so re-encrypting
under a new key (`rotate_credential_keys`) records nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save

from jobcenter import crypto
from jobcenter.audit.context import current_actor
from jobcenter.models.audit import AuditAction, AuditRecord

CHANGED = "changed"
MAX_VALUE_CHARS = 1000  # a longer text value is cut, with "…", in the record
OLD = "_audit_old"  # where pre_save leaves the row's stored values on the instance
_UNREAD = object()  # pre_save did not read the row
CLEARED = "_audit_cleared"  # where pre_clear leaves what a clear() is about to remove


@dataclass(frozen=True)
class Encrypted:
    """An encrypted JSON field, compared decrypted."""

    field: str
    label: str  # the name in the record: "credentials", "secret"
    by_key: bool  # name each changed key ("credentials.api_key") or only `label`


@dataclass(frozen=True)
class Audited:
    """One audited model and the fields of it that are recorded."""

    label: str  # "app_label.ModelName"
    fields: str  # space-separated names, recorded with old and new values
    secrets: str = ""  # recorded as "changed"
    encrypted: tuple[Encrypted, ...] = ()
    m2m: str = ""  # many-to-many fields, recorded as the names added and removed


# Only what staff configure: an account's sync state (next_sync_at, the lease, status,
# cursors), a user's last_login and a schedule's next_run and task are written by the
# system on every run and are not watched.
AUDITED: tuple[Audited, ...] = (
    Audited(
        "jobcenter.ProviderAccount",
        "name provider base_url team enabled sync_interval_minutes rate_limits",
        encrypted=(Encrypted("credentials_encrypted", "credentials", by_key=True),),
    ),
    Audited(
        "jobcenter.AlertChannel",
        "name team kind recipients url",
        encrypted=(Encrypted("secret_encrypted", "secret", by_key=False),),
    ),
    Audited(
        "jobcenter.AlertRule",
        "name team enabled channel providers kinds on_job_failed on_job_partially_failed "
        "partial_min_percent stuck_after_minutes account_failures account_silent_minutes "
        "quiet_start quiet_end quiet_timezone",
        m2m="accounts",
    ),
    Audited("jobcenter.Team", "name"),
    Audited("jobcenter.TeamMembership", "team user"),
    # Made and revoked; the digest and the key's first characters are never recorded.
    Audited("jobcenter.ApiToken", "name user expiry"),
    Audited(
        settings.AUTH_USER_MODEL,
        "username email first_name last_name is_active is_staff is_superuser",
        secrets="password",
        m2m="groups user_permissions",
    ),
    Audited("auth.Group", "name", m2m="permissions"),
    Audited(
        "django_q.Schedule",
        "name func hook args kwargs schedule_type minutes repeats cron cluster intended_date_kwarg",
    ),
)


@dataclass(frozen=True)
class Watched:
    """An audited model's spec, resolved to its fields."""

    spec: Audited
    fields: tuple[models.Field, ...]
    secrets: tuple[models.Field, ...]
    encrypted: tuple[tuple[Encrypted, models.Field], ...]

    @property
    def every(self) -> list[models.Field]:
        return [*self.fields, *self.secrets, *(field for _, field in self.encrypted)]

    def touches(self, update_fields: Iterable[str]) -> bool:
        names = set(update_fields)
        return any(field.name in names or field.attname in names for field in self.every)


WATCHED: dict[type[models.Model], Watched] = {}
# An auto-created many-to-many table: the field it belongs to.
M2M: dict[type[models.Model], models.ManyToManyField] = {}


# --- values -----------------------------------------------------------------------------


def _value(field: models.Field, raw: Any) -> Any:
    """A field's value as recorded: normalized, long text cut."""
    try:
        value = field.to_python(raw)
    except ValidationError:
        value = raw
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        return value[:MAX_VALUE_CHARS] + "…"
    return value


def _decrypted(token: str) -> dict[str, Any] | None:
    try:
        return crypto.decrypt_json(token)
    except crypto.CredentialsUnreadable:
        return None


def _encrypted_changes(item: Encrypted, old: str, new: str) -> dict[str, str]:
    """Names of what differs between two encrypted JSON values, never the values."""
    if old == new:
        return {}
    before, after = _decrypted(old), _decrypted(new)
    if before is None or after is None:  # written under a key no longer held
        return {item.label: CHANGED}
    keys = sorted(k for k in {*before, *after} if before.get(k) != after.get(k))
    if not keys:
        return {}
    if not item.by_key:
        return {item.label: CHANGED}
    return {f"{item.label}.{key}": CHANGED for key in keys}


def _changes(watched: Watched, old: dict[str, Any] | None, instance: models.Model) -> dict:
    """What differs between the stored values `old` (None: a new row) and `instance`."""
    changes: dict[str, Any] = {}
    for field in watched.fields:
        new = _value(field, getattr(instance, field.attname))
        if old is None:
            changes[field.name] = {"new": new}
            continue
        before = _value(field, old[field.attname])
        if before != new:
            changes[field.name] = {"old": before, "new": new}
    for field in watched.secrets:
        new = getattr(instance, field.attname)
        changed = bool(new) if old is None else old[field.attname] != new
        if changed:
            changes[field.name] = CHANGED
    for item, field in watched.encrypted:
        before = "" if old is None else old[field.attname]
        changes.update(_encrypted_changes(item, before or "", getattr(instance, field.attname)))
    return changes


def record(instance: models.Model, action: str, changes: dict, using: str = "default") -> None:
    """One audit record of `instance` by the current actor. Signals call it; so does code
    that must write with `QuerySet.update()` (which sends none)."""
    actor = current_actor()
    AuditRecord.objects.using(using).create(
        actor_id=actor.user_id,
        actor=actor.name[:200],
        address=(actor.address or "")[:255],
        action=action,
        model=instance._meta.label_lower,
        object_id=str(instance.pk),
        object_repr=str(instance)[:200],
        changes=changes,
    )


# --- saves and deletes --------------------------------------------------------------------


def before_save(
    sender: type[models.Model],
    instance: models.Model,
    raw: bool = False,
    using: str = "default",
    update_fields: Iterable[str] | None = None,
    **kwargs: Any,
) -> None:
    """Read the row's stored values, unless the save is new or touches no watched field."""
    instance.__dict__.pop(OLD, None)
    watched = WATCHED[sender]
    if raw or instance.pk is None:  # a new row (a given pk may still name a stored one)
        return
    if update_fields is not None and not watched.touches(update_fields):
        return
    stored = sender._base_manager.using(using).filter(pk=instance.pk)
    instance.__dict__[OLD] = stored.values(*(f.attname for f in watched.every)).first()


def after_save(
    sender: type[models.Model],
    instance: models.Model,
    created: bool,
    raw: bool = False,
    using: str = "default",
    **kwargs: Any,
) -> None:
    watched = WATCHED[sender]
    old = instance.__dict__.pop(OLD, _UNREAD)
    if raw or (old is _UNREAD and not created):
        return  # a fixture, or a save whose update_fields names no watched field
    if created or old is None:
        record(instance, AuditAction.CREATE, _changes(watched, None, instance), using)
        return
    changes = _changes(watched, old, instance)
    if changes:
        record(instance, AuditAction.CHANGE, changes, using)


def after_delete(
    sender: type[models.Model], instance: models.Model, using: str = "default", **kwargs: Any
) -> None:
    watched = WATCHED[sender]
    changes = {
        field.name: {"old": _value(field, getattr(instance, field.attname))}
        for field in watched.fields
    }
    record(instance, AuditAction.DELETE, changes, using)


# --- many-to-many -----------------------------------------------------------------------


def _names(model: type[models.Model], pks: Iterable[Any], using: str) -> list[str]:
    rows = model._base_manager.using(using).filter(pk__in=list(pks))
    if any(f.name == "content_type" for f in model._meta.concrete_fields):
        rows = rows.select_related("content_type")  # Permission's str() names it
    return sorted(str(row) for row in rows)


def m2m_change(
    sender: type[models.Model],
    instance: models.Model,
    action: str,
    reverse: bool,
    model: type[models.Model],
    pk_set: set[Any] | None,
    using: str = "default",
    **kwargs: Any,
) -> None:
    """One record per object on the field's own side: "groups": added/removed names."""
    field = M2M[sender]
    if field.remote_field.through in WATCHED:  # memberships: recorded as rows of their own
        # Removing deletes the rows one by one (post_delete); adding inserts them in bulk.
        if action == "post_add" and pk_set:
            _record_through_rows(field, instance, reverse, pk_set, using)
        return
    if action == "pre_clear":
        instance.__dict__[CLEARED] = _related_pks(field, instance, reverse, using)
        return
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    if action == "post_clear":
        pk_set = set(instance.__dict__.pop(CLEARED, set()))
    if not pk_set:
        return
    key = "removed" if action != "post_add" else "added"
    if not reverse:
        changes = {field.name: {key: _names(model, pk_set, using)}}
        record(instance, AuditAction.CHANGE, changes, using)
        return
    for owner in field.model._base_manager.using(using).filter(pk__in=list(pk_set)):
        record(owner, AuditAction.CHANGE, {field.name: {key: [str(instance)]}}, using)


def _related_pks(
    field: models.ManyToManyField, instance: models.Model, reverse: bool, using: str
) -> list[Any]:
    """The pks on the other side of `instance`'s rows in the field's table."""
    through = field.remote_field.through
    mine, other = field.m2m_field_name(), field.m2m_reverse_field_name()
    if reverse:
        mine, other = other, mine
    rows = through._base_manager.using(using).filter(**{mine: instance.pk})
    return list(rows.values_list(f"{other}_id", flat=True))


def _record_through_rows(
    field: models.ManyToManyField, instance: models.Model, reverse: bool, pks: set, using: str
) -> None:
    """`team.members.add(user)`: each new membership row, as if saved on its own."""
    through = field.remote_field.through
    mine, other = field.m2m_field_name(), field.m2m_reverse_field_name()
    if reverse:
        mine, other = other, mine
    rows = through._base_manager.using(using).filter(
        **{mine: instance.pk, f"{other}__in": list(pks)}
    )
    for row in rows:
        record(row, AuditAction.CREATE, _changes(WATCHED[through], None, row), using)


# --- wiring -----------------------------------------------------------------------------


def _watched(spec: Audited, model: type[models.Model]) -> Watched:
    get = model._meta.get_field
    return Watched(
        spec,
        tuple(get(name) for name in spec.fields.split()),
        tuple(get(name) for name in spec.secrets.split()),
        tuple((item, get(item.field)) for item in spec.encrypted),
    )


def connect() -> None:
    """Connect the signals of every audited model (AppConfig.ready)."""
    for spec in AUDITED:
        model = apps.get_model(spec.label)
        WATCHED[model] = _watched(spec, model)
        uid = f"jobcenter.audit:{spec.label}"
        pre_save.connect(before_save, sender=model, dispatch_uid=uid)
        post_save.connect(after_save, sender=model, dispatch_uid=uid)
        post_delete.connect(after_delete, sender=model, dispatch_uid=uid)
    for model, watched in WATCHED.items():
        for field in model._meta.many_to_many:
            through = field.remote_field.through
            if field.name in watched.spec.m2m.split() or through in WATCHED:
                M2M[through] = field
                m2m_changed.connect(
                    m2m_change, sender=through, dispatch_uid=f"jobcenter.audit:{through}"
                )
