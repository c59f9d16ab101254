"""Alert mail whose subject is built from names and text Job Center does not control.

An account's name is typed by staff and a job's kind and id come from the provider: a
line break in any of them once made Django refuse the header (BadHeaderError) and the
alert was dropped. Subjects are now one line without control characters.
"""

from __future__ import annotations

import unicodedata

import pytest
from django.core import mail

from jobcenter.alerts.channels import one_line
from jobcenter.models import AlertChannel, AlertDelivery, AlertRule, ProviderAccount
from jobcenter.sync.engine import sync_account
from tests.factories import failing_account

pytestmark = pytest.mark.django_db(transaction=True)

INJECTED = "Shop\r\nBcc: x@evil.example"


def test_a_line_break_in_an_account_name_neither_drops_the_alert_nor_adds_a_header(
    sandbox, settings
) -> None:
    settings.JOBCENTER_SITE_URL = "http://jobcenter.test"
    channel = AlertChannel.objects.create(
        name="ops mail", kind="email", recipients="ops@example.com"
    )
    AlertRule.objects.create(name="failures", channel=channel, on_job_failed=True)

    account = failing_account(sandbox)
    # Straight to the row: whatever the forms accept today, stored names may hold anything.
    ProviderAccount.objects.filter(pk=account.pk).update(name=INJECTED)
    sync_account(account.pk)

    delivery = AlertDelivery.objects.get()
    assert delivery.status == "sent", delivery.last_error
    (message,) = mail.outbox
    assert message.subject.startswith("[Job Center] Job failed: Klaviyo")
    assert "(account Shop Bcc: x@evil.example)" in message.subject
    assert not any(unicodedata.category(c) == "Cc" for c in message.subject)
    assert message.bcc == [] and message.recipients() == ["ops@example.com"]
    sent = message.message()
    assert sent["Bcc"] is None
    assert sent["Subject"].replace("\n", "") == message.subject  # unfolded: one header
    assert "\nBcc:" not in sent.as_string()
    assert delivery.subject == message.subject  # stored clean, as staff read it in admin


def test_one_line_drops_every_control_character_and_line_separator() -> None:
    text = "a\r\nb\tc\x00d\x1b[31me\x7ff\x85g\u2028h\u2029i\vj  k"
    cleaned = one_line(text)
    assert cleaned == "a b c d [31me f g h i j k"
    assert one_line("  plain text  ") == "plain text"
