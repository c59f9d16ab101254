"""The task queue is not a console: only superusers write schedules or resubmit tasks, and a
schedule runs only Job Center's own tasks, however it is saved."""

from __future__ import annotations

import io
import pydoc
import uuid

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.models import Failure, OrmQ, Schedule, Task
from django_q.scheduler import scheduler
from django_q.tasks import async_task
from django_q.tasks import schedule as q_schedule

import jobcenter.tasks
from jobcenter.models import AuditRecord
from jobcenter.tasks import SCHEDULE_NAME, TASKS

pytestmark = pytest.mark.django_db

ADD = "/admin/django_q/schedule/add/"
FOREIGN = "subprocess.getoutput"


def q_staff() -> User:
    """A staff member (not a superuser) holding every django-q2 permission there is."""
    user = User.objects.create_user("q-staff", password="pw-not-used", is_staff=True)
    permissions = Permission.objects.filter(content_type__app_label="django_q")
    assert permissions.filter(codename="add_schedule").exists()
    user.user_permissions.set(permissions)
    return user


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def schedule_form(func: str, **fields: str) -> dict[str, str]:
    now = timezone.localtime()
    return {
        "name": "every minute",
        "func": func,
        "hook": "",
        "args": "",
        "kwargs": "",
        "schedule_type": Schedule.MINUTES,
        "minutes": "1",
        "repeats": "-1",
        "next_run_0": now.strftime("%Y-%m-%d"),
        "next_run_1": now.strftime("%H:%M:%S"),
        "cron": "",
        "cluster": "",
        "intended_date_kwarg": "",
        **fields,
    }


def failed_task() -> Failure:
    now = timezone.now()
    Task.objects.create(
        id=uuid.uuid4().hex,
        name="a failed dispatch",
        func="jobcenter.tasks.dispatch_due_syncs",
        started=now,
        stopped=now,
        success=False,
        result="boom",
    )
    return Failure.objects.get()


@pytest.fixture
def queued_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resubmitted tasks go to the ORM broker's queue, as in production, not run inline."""
    if "redis" in settings.Q_CLUSTER:
        pytest.skip("the queue is on Redis here; the ORM broker's rows are read")
    monkeypatch.setattr(Conf, "SYNC", False)


# --- the admin -----------------------------------------------------------------------


def test_staff_with_every_task_queue_permission_cannot_add_a_schedule() -> None:
    client = client_for(q_staff())
    assert client.get(ADD).status_code == 403
    response = client.post(ADD, schedule_form("jobcenter.tasks.dispatch_due_syncs"))
    assert response.status_code == 403
    response = client.post(ADD, schedule_form(FOREIGN))
    assert response.status_code == 403
    assert not Schedule.objects.exists()


def test_staff_with_every_task_queue_permission_cannot_change_or_delete_a_schedule() -> None:
    jobcenter.tasks.ensure_schedule()
    schedule = Schedule.objects.get(name=SCHEDULE_NAME)
    client = client_for(q_staff())
    page = client.get(f"/admin/django_q/schedule/{schedule.pk}/change/")
    assert page.status_code == 200  # they may look: read-only
    assert b'name="func"' not in page.content
    assert b'name="_save"' not in page.content
    changed = client.post(f"/admin/django_q/schedule/{schedule.pk}/change/", schedule_form(FOREIGN))
    assert changed.status_code == 403
    deleted = client.post(f"/admin/django_q/schedule/{schedule.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 403
    schedule.refresh_from_db()
    assert schedule.func == "jobcenter.tasks.dispatch_due_syncs"


def test_staff_cannot_resubmit_a_failed_task(queued_not_run: None) -> None:
    failure = failed_task()
    client = client_for(q_staff())
    listing = client.get("/admin/django_q/failure/")
    assert listing.status_code == 200
    assert b"Resubmit" not in listing.content
    for action in ("resubmit", "resubmit_task"):  # ours, and django-q2's own name
        client.post(
            "/admin/django_q/failure/",
            {"action": action, "_selected_action": [failure.pk]},
        )
    assert Failure.objects.filter(pk=failure.pk).exists()
    assert not OrmQ.objects.exists()
    assert client.get("/admin/django_q/success/").status_code == 200


def test_superuser_adds_a_job_center_schedule_and_resubmits(queued_not_run: None) -> None:
    client = client_for(User.objects.create_superuser("root", password="pw-not-used"))
    assert client.get(ADD).status_code == 200
    response = client.post(ADD, schedule_form("jobcenter.tasks.dispatch_due_syncs"))
    assert response.status_code == 302, response.content[:2000]
    assert Schedule.objects.get().func == "jobcenter.tasks.dispatch_due_syncs"

    failure = failed_task()
    listing = client.get("/admin/django_q/failure/")
    assert b'value="resubmit"' in listing.content
    assert b"Resubmit" in listing.content
    client.post(
        "/admin/django_q/failure/",
        {"action": "resubmit", "_selected_action": [failure.pk]},
    )
    assert not Failure.objects.filter(pk=failure.pk).exists()
    assert [row.func() for row in OrmQ.objects.all()] == ["jobcenter.tasks.dispatch_due_syncs"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"func": FOREIGN}, "func"),
        ({"func": "os.system"}, "func"),
        ({"func": "jobcenter.tasks.ensure_schedule"}, "func"),  # in tasks.py, not a task
        ({"hook": "subprocess.getoutput"}, "hook"),
        ({"kwargs": "q_options={'hook': 'subprocess.getoutput'}"}, "kwargs"),
    ],
)
def test_superuser_is_told_which_field_is_refused(fields: dict[str, str], field: str) -> None:
    client = client_for(User.objects.create_superuser("root", password="pw-not-used"))
    response = client.post(ADD, {**schedule_form("jobcenter.tasks.dispatch_due_syncs"), **fields})
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) == {field}, errors
    assert "Job Center" in errors[field][0]
    assert not Schedule.objects.exists()


# --- every save ----------------------------------------------------------------------


def test_the_orm_refuses_a_schedule_of_anything_else() -> None:
    with pytest.raises(ValidationError) as refused:
        Schedule.objects.create(func=FOREIGN, args="'cat /proc/self/environ'")
    assert set(refused.value.message_dict) == {"func"}
    with pytest.raises(ValidationError):
        q_schedule(FOREIGN, "id")  # django-q2's own helper saves through the same check
    schedule = Schedule.objects.create(func="jobcenter.tasks.dispatch_due_syncs")
    schedule.func = FOREIGN
    with pytest.raises(ValidationError):
        schedule.save()
    schedule.refresh_from_db()
    assert schedule.func == "jobcenter.tasks.dispatch_due_syncs"
    assert set(Schedule.objects.values_list("func", flat=True)) == {schedule.func}


@pytest.mark.parametrize(
    "kwargs",
    [
        "{'q_options': {'hook': 'subprocess.getoutput'}}",
        "{'q\\x5foptions': {'hook': 'subprocess.getoutput'}}",  # an escape spells the key
        "q_options={'hook': 'subprocess.getoutput'}",
        # exec-mode parse: the scheduler reads the first statement's keywords
        "q_options={'hook': 'subprocess.getoutput'})\n(1",
        "x=1) + f(y=2",  # no call django-q2 can read keywords from: refused, not guessed
    ],
)
def test_the_orm_refuses_a_hook_however_the_keyword_arguments_spell_it(kwargs: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Schedule.objects.create(func="jobcenter.tasks.dispatch_due_syncs", kwargs=kwargs)
    assert set(refused.value.message_dict) == {"kwargs"}
    with pytest.raises(ValidationError) as refused:
        Schedule.objects.create(func="jobcenter.tasks.dispatch_due_syncs", hook="os.system")
    assert set(refused.value.message_dict) == {"hook"}


@pytest.mark.parametrize("func", TASKS)
def test_job_center_tasks_are_accepted(func: str) -> None:
    schedule = Schedule.objects.create(func=func, args="1", kwargs="q_options={'timeout': 60}")
    assert schedule.pk
    assert callable(pydoc.locate(func))  # how django-q2's worker finds it
    assert func.rsplit(".", 1)[0] == "jobcenter.tasks"


def test_setup_schedules_still_works_and_stops_schedules_stored_before_the_check() -> None:
    bad = Schedule.objects.create(func="jobcenter.tasks.dispatch_due_syncs", name="old")
    Schedule.objects.filter(pk=bad.pk).update(func=FOREIGN)  # an UPDATE bypasses save
    errors = io.StringIO()
    call_command("setup_schedules", stdout=io.StringIO(), stderr=errors)
    call_command("setup_schedules", stdout=io.StringIO(), stderr=io.StringIO())  # idempotent
    assert FOREIGN in errors.getvalue()
    bad.refresh_from_db()
    assert bad.repeats == 0  # the scheduler skips it; kept for someone to look at
    stopped = AuditRecord.objects.filter(model="django_q.schedule", object_id=str(bad.pk))
    assert [(r.action, r.actor, r.changes) for r in stopped.filter(action="change")] == [
        ("change", "command:setup_schedules", {"repeats": {"old": -1, "new": 0}})
    ]  # stopped once (the second run finds nothing to stop), and the audit says who did it
    ours = Schedule.objects.get(name=SCHEDULE_NAME)
    assert (ours.func, ours.repeats) == ("jobcenter.tasks.dispatch_due_syncs", -1)


def queued(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks go to the ORM broker's table, as in production, instead of running inline."""
    if "redis" in settings.Q_CLUSTER:
        pytest.skip("the queue is on Redis here; the ORM broker's rows are read")
    monkeypatch.setattr(Conf, "SYNC", False)


def queued_tasks() -> list[tuple[object, tuple, str | None]]:
    return [
        (t["func"], tuple(t["args"]), t.get("hook")) for t in (r.task for r in OrmQ.objects.all())
    ]


def test_the_queue_takes_no_foreign_function_nor_hook_whoever_queues_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queued(monkeypatch)
    async_task(FOREIGN, "id")
    async_task("jobcenter.tasks.run_sync", 1, hook=FOREIGN)
    async_task(jobcenter.tasks.run_sync, 2)  # a callable of ours is fine
    refused = "jobcenter.tasks.refuse_foreign_task"
    assert queued_tasks() == [
        (refused, (FOREIGN,), None),
        (refused, ("jobcenter.tasks.run_sync",), None),
        (jobcenter.tasks.run_sync, (2,), None),
    ]
    with pytest.raises(PermissionError, match=FOREIGN):
        jobcenter.tasks.refuse_foreign_task(FOREIGN)


def test_a_foreign_row_neither_runs_nor_holds_up_the_scheduler_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refusing the scheduler's save would roll its round back, Job Center's dispatch too."""
    queued(monkeypatch)
    # The scheduler closes stale connections first: not the test's own.
    monkeypatch.setattr("django_q.scheduler.close_old_django_connections", lambda: None)
    past = timezone.now() - timezone.timedelta(minutes=1)
    ours = jobcenter.tasks.ensure_schedule()
    Schedule.objects.filter(pk=ours.pk).update(next_run=past)
    bad = Schedule.objects.create(
        func="jobcenter.tasks.run_sync", name="old", args="1", schedule_type=Schedule.MINUTES
    )
    Schedule.objects.filter(pk=bad.pk).update(func=FOREIGN, args="'id'", next_run=past)

    scheduler(broker=get_broker())

    funcs = [func for func, _, _ in queued_tasks()]
    assert sorted(funcs) == [
        "jobcenter.tasks.dispatch_due_syncs",
        "jobcenter.tasks.refuse_foreign_task",
    ]
    bad.refresh_from_db()
    assert bad.repeats == 0  # stopped on the scheduler's own save
    assert Schedule.objects.get(pk=ours.pk).next_run > past  # the round was kept
    with pytest.raises(ValidationError):  # an edit that keeps it foreign is still refused
        bad.name = "renamed"
        bad.func = "os.system"
        bad.save()
