"""The audit log: one append-only row per change to what staff configure (jobcenter.audit)."""

import django.core.serializers.json
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobcenter", "0011_alertdelivery_message_id"),
    ]

    operations = [
        migrations.CreateModel(
            name="AuditRecord",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                (
                    "actor_id",
                    models.BigIntegerField(
                        blank=True, editable=False, null=True, verbose_name="actor's user id"
                    ),
                ),
                ("actor", models.CharField(editable=False, max_length=200)),
                ("address", models.CharField(blank=True, editable=False, max_length=255)),
                (
                    "action",
                    models.CharField(
                        choices=[
                            ("create", "Created"),
                            ("change", "Changed"),
                            ("delete", "Deleted"),
                        ],
                        editable=False,
                        max_length=10,
                    ),
                ),
                (
                    "model",
                    models.CharField(
                        editable=False, help_text="app_label.modelname", max_length=100
                    ),
                ),
                ("object_id", models.CharField(editable=False, max_length=64)),
                (
                    "object_repr",
                    models.CharField(editable=False, max_length=200, verbose_name="object"),
                ),
                (
                    "changes",
                    models.JSONField(
                        default=dict,
                        editable=False,
                        encoder=django.core.serializers.json.DjangoJSONEncoder,
                    ),
                ),
            ],
            options={
                "ordering": ["-at", "-id"],
                "indexes": [
                    models.Index(fields=["at", "id"], name="auditrecord_at"),
                    models.Index(fields=["model", "object_id"], name="auditrecord_object"),
                ],
            },
        ),
    ]
