"""AlertDelivery.message_id: the webhook's `webhook-id`, a UUID per delivery.

Added empty, filled for existing deliveries (one UUID each), then made unique with its
default: a callable default on AddField would give every existing row the same UUID.
"""

import uuid

from django.db import migrations, models


def fill_message_ids(apps, schema_editor):
    AlertDelivery = apps.get_model("jobcenter", "AlertDelivery")
    batch = []
    for delivery in AlertDelivery.objects.filter(message_id__isnull=True).only("pk").iterator():
        delivery.message_id = uuid.uuid4()
        batch.append(delivery)
        if len(batch) == 1000:
            AlertDelivery.objects.bulk_update(batch, ["message_id"])
            batch = []
    AlertDelivery.objects.bulk_update(batch, ["message_id"])


class Migration(migrations.Migration):
    dependencies = [
        ("jobcenter", "0010_api_tokens"),
    ]

    operations = [
        migrations.AddField(
            model_name="alertdelivery",
            name="message_id",
            field=models.UUIDField(editable=False, null=True),
        ),
        migrations.RunPython(fill_message_ids, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="alertdelivery",
            name="message_id",
            field=models.UUIDField(default=uuid.uuid4, editable=False, unique=True),
        ),
    ]
