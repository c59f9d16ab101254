"""django-q2's admin, with what runs code kept for superusers.

A worker imports and calls whatever a Schedule or a queued task names, with the worker's
secrets (the Fernet keys among them). So adding, changing or deleting a Schedule, editing
a queued task, and resubmitting a finished one are for superusers only, whatever
django-q2 permissions a staff member holds; they keep read-only pages. The Schedule form
also refuses any function but Job Center's own tasks with a field error
(`jobcenter.tasks.check_schedule`, which also runs on every save).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django_q import admin as q_admin
from django_q.models import Failure, OrmQ, Schedule, Success

from jobcenter.tasks import TASKS, check_schedule


def superuser_only(request: HttpRequest, obj: Model | None = None) -> bool:
    """A permission method's answer: only a superuser may."""
    return bool(request.user.is_active and request.user.is_superuser)


@admin.action(permissions=["resubmit"], description=q_admin.resubmit_task.short_description)
def resubmit(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    """django-q2's resubmit, offered and run only where `has_resubmit_permission` says."""
    q_admin.resubmit_task(modeladmin, request, queryset)


class ScheduleForm(forms.ModelForm):
    class Meta:
        model = Schedule
        fields = (
            *("name", "func", "hook", "args", "kwargs", "schedule_type", "minutes"),
            *("repeats", "next_run", "cron", "cluster", "intended_date_kwarg"),
        )
        help_texts = {"func": "One of Job Center's tasks: " + ", ".join(TASKS)}

    def clean(self) -> dict[str, Any]:
        """The save-time check as field errors, before the save would refuse."""
        cleaned = super().clean()
        check_schedule(cleaned.get("func") or "", cleaned.get("hook"), cleaned.get("kwargs"))
        return cleaned


class ScheduleAdmin(q_admin.ScheduleAdmin):
    form = ScheduleForm

    def has_add_permission(self, request: HttpRequest) -> bool:
        return superuser_only(request)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return superuser_only(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return superuser_only(request, obj)


class SuccessAdmin(q_admin.TaskAdmin):
    actions = [resubmit]

    def has_resubmit_permission(self, request: HttpRequest) -> bool:
        return superuser_only(request)


class FailureAdmin(q_admin.FailAdmin):
    actions = [resubmit]

    def has_resubmit_permission(self, request: HttpRequest) -> bool:
        return superuser_only(request)


class QueueAdmin(q_admin.QueueAdmin):
    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return superuser_only(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return superuser_only(request, obj)


for model, model_admin in (
    (Schedule, ScheduleAdmin),
    (Success, SuccessAdmin),
    (Failure, FailureAdmin),
    (OrmQ, QueueAdmin),
):
    if admin.site.is_registered(model):  # OrmQ only with the ORM broker (django_q.admin)
        admin.site.unregister(model)
        admin.site.register(model, model_admin)
