"""`auth.change_user` is not superuser in disguise: staff holding every auth permission
change neither superusers nor anyone's power (flags, groups, permissions, groups' rights)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture
def auth_staff() -> Client:
    """A staff member (not a superuser) holding every permission of django.contrib.auth."""
    user = User.objects.create_user("auth-staff", password="pw-not-used", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="auth"))
    client = Client()
    client.force_login(user)
    return client


def user_form(user: User, **changes: str) -> dict[str, str]:
    form = {
        "username": user.username,
        "email": user.email,
        "is_active": "on",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
        "initial-date_joined_0": "2026-01-01",
        "initial-date_joined_1": "00:00:00",
    }
    form.update(changes)
    return form


def test_staff_change_no_superuser_nor_their_password(auth_staff: Client) -> None:
    root = User.objects.create_superuser("root", password="root-password")
    change = f"/admin/auth/user/{root.pk}/change/"
    assert auth_staff.get(change).status_code == 200  # viewing is what they hold
    posted = auth_staff.post(change, user_form(root, username="taken-over"))
    assert posted.status_code == 403
    password = f"/admin/auth/user/{root.pk}/password/"
    reset = {
        "password1": "Takeover-1234!",
        "password2": "Takeover-1234!",
        "usable_password": "true",
    }
    assert auth_staff.post(password, reset).status_code == 403
    root.refresh_from_db()
    assert root.username == "root" and root.check_password("root-password")
    assert (
        auth_staff.post(f"/admin/auth/user/{root.pk}/delete/", {"post": "yes"}).status_code == 403
    )
    assert User.objects.filter(pk=root.pk).exists()


def test_staff_grant_no_power_to_anyone_themselves_included(auth_staff: Client) -> None:
    target = User.objects.get(username="auth-staff")
    admins = Group.objects.create(name="admins")
    admins.permissions.set(Permission.objects.all())
    every = [str(p.pk) for p in Permission.objects.all()]
    posted = auth_staff.post(
        f"/admin/auth/user/{target.pk}/change/",
        user_form(
            target,
            first_name="Changed",
            is_staff="on",
            is_superuser="on",
            groups=str(admins.pk),
            user_permissions=every,
        ),
    )
    assert posted.status_code == 302, posted.content[:500]  # the rest of the form is saved
    target.refresh_from_db()
    assert target.first_name == "Changed"
    assert not target.is_superuser
    assert not target.groups.exists()
    assert (
        target.user_permissions.count()
        == Permission.objects.filter(content_type__app_label="auth").count()
    )


def test_only_superusers_change_groups(auth_staff: Client) -> None:
    group = Group.objects.create(name="ops")
    form = {"name": "ops", "permissions": [str(p.pk) for p in Permission.objects.all()]}
    assert auth_staff.post(f"/admin/auth/group/{group.pk}/change/", form).status_code == 403
    assert auth_staff.post("/admin/auth/group/add/", {"name": "new"}).status_code == 403
    assert not group.permissions.exists() and not Group.objects.filter(name="new").exists()

    root = Client()
    root.force_login(User.objects.create_superuser("root", password="pw-not-used"))
    assert root.post(f"/admin/auth/group/{group.pk}/change/", form).status_code == 302
    assert group.permissions.count() == Permission.objects.count()
