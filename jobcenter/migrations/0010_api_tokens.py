# API tokens (issue 17): django-rest-knox's hashed tokens replace DRF's authtoken, whose
# keys were stored in clear. Those keys cannot become digests (the clear text is their
# only form), so they go: DRF's table is dropped, the admin history entries that named a
# key (DRF's Token used its key as primary key and as its text) are blanked, and its
# content types and permissions (`view_tokenproxy`, ...) are removed. Make new tokens
# with `manage.py create_api_token` (docs/api.md).

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

OLD_APP = "authtoken"


def forget_clear_tokens(apps, schema_editor):
    """Drop DRF's token table and every copy of its keys; a fresh database has none."""
    connection = schema_editor.connection
    if "authtoken_token" in connection.introspection.table_names():
        schema_editor.execute(
            "DROP TABLE %s" % schema_editor.quote_name("authtoken_token")  # noqa: UP031
        )
    ContentType = apps.get_model("contenttypes", "ContentType")
    LogEntry = apps.get_model("admin", "LogEntry")
    Permission = apps.get_model("auth", "Permission")
    old_types = ContentType.objects.filter(app_label=OLD_APP)
    LogEntry.objects.filter(content_type__in=old_types).update(
        object_id=None, object_repr="an API token of the old kind (removed)"
    )
    Permission.objects.filter(content_type__in=old_types).delete()
    old_types.delete()
    schema_editor.execute("DELETE FROM django_migrations WHERE app = %s", [OLD_APP])


class Migration(migrations.Migration):
    dependencies = [
        ("jobcenter", "0009_teams"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("admin", "0003_logentry_add_action_flag_choices"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.CreateModel(
            name="ApiToken",
            fields=[
                ("created", models.DateTimeField(auto_now_add=True)),
                ("expiry", models.DateTimeField(blank=True, null=True)),
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("digest", models.CharField(editable=False, max_length=128, unique=True)),
                ("token_key", models.CharField(db_index=True, editable=False, max_length=25)),
                (
                    "name",
                    models.CharField(
                        help_text="What the token is for, e.g. 'CI exports'.", max_length=100
                    ),
                ),
                (
                    "last_used_at",
                    models.DateTimeField(
                        blank=True, editable=False, null=True, verbose_name="last used"
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="auth_token_set",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={"verbose_name": "API token", "ordering": ["-created", "-id"]},
        ),
        migrations.RunPython(forget_clear_tokens, migrations.RunPython.noop, elidable=False),
    ]
