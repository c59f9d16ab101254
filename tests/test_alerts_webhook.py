"""Webhook delivery against real local receivers: signatures, retries, a dead receiver.

Receivers here verify as a real one would, with the `standardwebhooks` library.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.urls import reverse
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from jobcenter.alerts.evaluation import evaluate_periodic
from jobcenter.alerts.rules import validate_channel
from jobcenter.models import AlertChannel, AlertDelivery, AlertEvent, AlertRule, Job
from jobcenter.sync.engine import sync_account
from tests.factories import failing_account

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "whsec-test-" + "k" * 24
# What the receiver is configured with: a secret typed as plain text is used as its own
# bytes, so receivers use whsec_ + base64 of it (docs/alerts.md).
RECEIVER_SECRET = "whsec_" + base64.b64encode(SECRET.encode()).decode()
HOOK_PATH = "/hooks/T0001/B0002/path-secret-abc123"


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that answers the scripted status codes in turn."""

    codes: list[int]
    received: list[dict] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(codes=[])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            code = state.codes.pop(0) if state.codes else 200
            state.received.append(
                {"path": self.path, "headers": dict(self.headers), "body": body, "code": code}
            )
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if code == 200 else b"receiver unavailable")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}{HOOK_PATH}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Silent:
    """A port that accepts connections (the kernel does) and never answers."""

    sock: socket.socket
    url: str

    def attempts(self) -> int:
        """Connections made since the last call: one per delivery attempt.

        The kernel queues them whether or not the sender has given up since, so they
        count attempts exactly, however long each one took.
        """
        self.sock.setblocking(False)
        count = 0
        while True:
            try:
                connection, _ = self.sock.accept()
            except BlockingIOError:
                return count
            connection.close()
            count += 1


@pytest.fixture
def silent() -> Iterator[Silent]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield Silent(sock, f"http://127.0.0.1:{sock.getsockname()[1]}{HOOK_PATH}")
    finally:
        sock.close()


@pytest.fixture(autouse=True)
def fast_retries(settings):
    settings.JOBCENTER_SITE_URL = "http://jobcenter.test"
    settings.JOBCENTER_ALERT_RETRY_BACKOFF = 0
    settings.JOBCENTER_ALERT_DELIVERY_ATTEMPTS = 3
    settings.JOBCENTER_ALERT_WEBHOOK_TIMEOUT = 1.0
    return settings


def webhook_rule(url: str) -> AlertRule:
    channel = AlertChannel(name="hook", kind="webhook", url=url)
    channel.set_secret(SECRET)
    channel.save()
    return AlertRule.objects.create(name="failures", channel=channel, on_job_failed=True)


def tampered(headers: dict[str, str], **changes: str) -> dict[str, str]:
    return {**headers, **{name.replace("_", "-"): value for name, value in changes.items()}}


def test_a_receiver_failing_twice_gets_the_alert_once_with_a_valid_signature(
    sandbox, receiver
) -> None:
    started = int(time.time())  # each attempt is signed with the time it was sent
    receiver.codes = [500, 500, 200]
    rule = webhook_rule(receiver.url)
    account = failing_account(sandbox)

    sync_account(account.pk)  # first attempt, inside the sync in tests (sync=True): 500
    delivery = AlertDelivery.objects.get()
    assert delivery.status == "retrying" and delivery.attempts == 1
    # The status and its standard phrase only: the receiver's body is never stored.
    assert delivery.response_code == 500
    assert delivery.last_error == "HTTP 500 Internal Server Error"
    evaluate_periodic()  # the minute schedule retries it: 500
    evaluate_periodic()  # 200
    for _ in range(3):  # nothing more to send, from the schedule or from later syncs
        evaluate_periodic()
        sync_account(account.pk)

    assert [r["code"] for r in receiver.received] == [500, 500, 200]
    delivery.refresh_from_db()
    assert delivery.status == "sent" and delivery.attempts == 3 and delivery.response_code == 200
    assert [a["response_code"] for a in delivery.attempt_log] == [500, 500, 200]
    assert AlertEvent.objects.filter(rule=rule).count() == 1

    job = Job.objects.get(account=account)
    bodies = {r["body"] for r in receiver.received}
    assert len(bodies) == 1, "every attempt sends the same alert"
    message_id = f"msg_{delivery.message_id.hex}"
    receiver_hook = Webhook(RECEIVER_SECRET)
    for request in receiver.received:
        headers, body = request["headers"], request["body"]
        assert request["path"] == HOOK_PATH
        assert headers["Content-Type"] == "application/json"
        # The same id on every retry: the receiver's dedupe key.
        assert headers["webhook-id"] == message_id
        assert started <= int(headers["webhook-timestamp"]) <= time.time()
        assert headers["webhook-signature"].startswith("v1,")
        assert not any(name.lower().startswith("x-jobcenter") for name in headers)
        assert receiver_hook.verify(body, headers) == json.loads(body)
        # Another id (a replay past the receiver's dedupe), another time, another body,
        # or another secret: none verifies.
        for forged, forged_body in [
            (tampered(headers, webhook_id="msg_" + "0" * 32), body),
            (tampered(headers, webhook_timestamp=str(int(headers["webhook-timestamp"]) - 1)), body),
            (headers, body + b" "),
        ]:
            with pytest.raises(WebhookVerificationError):
                receiver_hook.verify(forged_body, forged)
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + base64.b64encode(b"another secret here").decode()).verify(
                body, headers
            )

    payload = json.loads(receiver.received[-1]["body"])
    assert payload["text"].startswith(
        f"Job failed: Klaviyo catalog-item-bulk-delete-job {job.external_id}"
    )
    event = payload["event"]
    assert event["type"] == "job_failed"
    assert event["provider"] == "klaviyo" and event["kind"] == job.kind
    assert event["job"]["external_id"] == job.external_id
    assert event["job"]["url"] == f"http://jobcenter.test/admin/jobcenter/job/{job.pk}/change/"
    assert event["job"]["failed_count"] == job.failed_count == job.total_count
    assert event["first_error"] and event["first_error"] in payload["text"]
    assert event["rule"] == {"id": rule.pk, "name": "failures"}


def test_a_receiver_that_never_answers_costs_the_sync_one_timeout_and_ends_failed(
    sandbox, silent, admin_client
) -> None:
    webhook_rule(silent.url)
    account = failing_account(sandbox)

    run = sync_account(account.pk)
    assert run.outcome == "succeeded"
    # In production the attempt runs in its own task and costs the sync nothing; here
    # (tasks inline) it costs one timeout, never the retries: one connection was made.
    assert silent.attempts() == 1

    delivery = AlertDelivery.objects.get()
    assert delivery.status == "retrying" and delivery.attempts == 1
    evaluate_periodic()
    evaluate_periodic()
    evaluate_periodic()  # the attempts are used up: nothing more is tried
    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.attempts == 3
    assert silent.attempts() == 2  # the two retries, one connection each
    assert delivery.response_code is None
    assert delivery.last_error == "timed out after 1s"
    assert [a["error"] for a in delivery.attempt_log] == ["timed out after 1s"] * 3
    assert delivery.next_attempt_at is None
    # The URL's path can be a credential (Slack's is): never in records staff read.
    assert HOOK_PATH not in json.dumps(delivery.attempt_log) + delivery.destination
    page = admin_client.get(reverse("admin:jobcenter_alertdelivery_change", args=[delivery.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "timed out after 1s" in html and "Failed" in html
    assert SECRET not in html and HOOK_PATH not in html


def test_a_refused_webhook_is_not_retried_and_a_failed_delivery_can_be_sent_again(
    sandbox, receiver, admin_client
) -> None:
    receiver.codes = [401]
    webhook_rule(receiver.url)
    sync_account(failing_account(sandbox).pk)
    delivery = AlertDelivery.objects.get()
    assert delivery.status == "failed" and delivery.attempts == 1 and delivery.response_code == 401
    evaluate_periodic()
    assert len(receiver.received) == 1

    admin_client.post(
        reverse("admin:jobcenter_alertdelivery_changelist"),
        {"action": "send_again", "_selected_action": [delivery.pk]},
    )
    delivery.refresh_from_db()
    assert delivery.status == "sent" and delivery.attempts == 2
    assert len(receiver.received) == 2


def test_webhook_urls_must_be_http_and_loopback_only_in_development(settings) -> None:
    channel = AlertChannel(name="x", kind="webhook", url="file:///etc/passwd")
    assert "url" in validate_channel(channel, SECRET)
    channel.url = "https://user:pw@hooks.example.com/x"
    assert "url" in validate_channel(channel, SECRET)
    channel.url = "http://127.0.0.1:9/x"
    assert validate_channel(channel, SECRET) == {}
    settings.JOBCENTER_ALERT_ALLOW_LOOPBACK_WEBHOOKS = False
    assert "url" in validate_channel(channel, SECRET)
    channel.url = "https://hooks.example.com/x"
    assert validate_channel(channel, "short") == {"secret": ["Use at least 16 characters."]}


def test_a_whsec_secret_is_used_as_receivers_know_it_and_each_delivery_has_its_own_id(
    sandbox, receiver
) -> None:
    standard = "whsec_" + base64.b64encode(b"thirty-two random bytes, really!").decode()
    channel = AlertChannel(name="hook", kind="webhook", url=receiver.url)
    channel.set_secret(standard)
    channel.save()
    AlertRule.objects.create(name="failures", channel=channel, on_job_failed=True)

    sync_account(failing_account(sandbox, count=2).pk)

    deliveries = AlertDelivery.objects.order_by("id")
    assert [d.status for d in deliveries] == ["sent", "sent"]
    ids = [r["headers"]["webhook-id"] for r in receiver.received]
    assert ids == [f"msg_{d.message_id.hex}" for d in deliveries] and len(set(ids)) == 2
    for request in receiver.received:  # the receiver is configured with the same string
        Webhook(standard).verify(request["body"], request["headers"])


def test_a_whsec_secret_must_be_base64_of_at_least_16_bytes() -> None:
    channel = AlertChannel(name="x", kind="webhook", url="https://hooks.example.com/x")
    short = "whsec_" + base64.b64encode(b"8 bytes!").decode()  # 18 characters, 8 bytes
    for secret in ["whsec_not base64 at all!!", short]:
        assert "whsec_" in validate_channel(channel, secret)["secret"][0]
    unpadded = "whsec_" + base64.b64encode(b"k" * 20).decode().rstrip("=")
    assert validate_channel(channel, unpadded) == {}
    assert validate_channel(channel, "any text of 16 chars or more") == {}
