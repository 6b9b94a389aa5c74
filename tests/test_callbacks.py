"""Callbacks to other city systems, against a real HTTP receiver on a real socket: what it
gets, how it verifies it, and what the hub does when it fails, refuses, throttles or hangs."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from rq.registry import ScheduledJobRegistry
from sqlalchemy import func, select

from hub import clock, conversations, providers, queues
from hub.broadcasts import cancel_broadcast
from hub.callbacks import QUEUE, add_endpoint, job_id, remove_endpoint
from hub.models import (
    AuditEntry,
    CallbackAttempt,
    CallbackEndpoint,
    CallbackOutbox,
    ContactPoint,
    Conversation,
    Role,
)
from hub.planning import plan_broadcast
from hub.staff import create_staff_user
from hub.sweeper import sweep
from tests.helpers import work
from tests.processes import worker_env
from tests.test_sms import _callback, _deliveries, _resident, _send
from tests.test_web import _login


class Receiver:
    """A city system's endpoint: records every request and answers from a script
    (a status code, optionally headers and a body, or "hang" for longer than any timeout)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: list[tuple] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                code, headers, text = receiver.script.pop(0) if receiver.script else (200, {}, "")
                self._answer(code, headers, text)

            def _answer(self, code, headers, text):
                if code == "hang":
                    time.sleep(headers)
                    code, headers, text = 200, {}, ""
                payload = text.encode()
                self.send_response(code)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.handler = Handler
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/mestni-glas"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, *answers: tuple) -> None:
        """The next answers in order: (code,), (code, headers), (code, headers, body) or
        ("hang", seconds); after them, 200."""
        self.script.extend(answer + (200, {}, "")[len(answer) :] for answer in answers)


@pytest.fixture
def receiver():
    server = Receiver()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


# -- what a receiver does (the example in docs/callbacks.md) ---------------------------------


def verify(secret: str, headers: dict, body: bytes, now: float | None = None) -> dict:
    """Check X-Hub-Signature in constant time and refuse events older than 5 minutes."""
    timestamp = headers["X-Hub-Timestamp"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    given = headers["X-Hub-Signature"].removeprefix("sha256=")
    if not hmac.compare_digest(expected.hexdigest(), given):
        raise ValueError("bad signature")
    if abs((now or time.time()) - int(timestamp)) > 300:
        raise ValueError("too old")
    return json.loads(body)


# -- helpers -----------------------------------------------------------------------------------


def _endpoint(rt, receiver, events=("delivery-status", "inbound-message"), name="odpadki"):
    with rt.session() as session:
        endpoint, secret = add_endpoint(
            session,
            name=name,
            url=receiver.url,
            events=list(events),
            actor="test",
            secret_key=rt.settings.secret_key,
        )
    return endpoint.id, secret


def _resident_writes(rt, text="Kdaj odpeljete kosovne odpadke?", phone="+38640111222") -> int:
    """A resident's SMS, as hub.inbound hands it over; returns its conversation."""
    with rt.session() as session:
        received = conversations.receive(session, "sms", phone, text, default_locale="sl")
    return received.conversation_id


def _outbox(rt) -> list[CallbackOutbox]:
    with rt.session() as session:
        return list(session.scalars(select(CallbackOutbox).order_by(CallbackOutbox.id)))


def _attempts(rt) -> list[CallbackAttempt]:
    with rt.session() as session:
        return list(session.scalars(select(CallbackAttempt).order_by(CallbackAttempt.id)))


def _scheduled(rt) -> list[str]:
    return ScheduledJobRegistry(queue=queues.queue(rt.redis, QUEUE)).get_job_ids()


def _run_retry(rt) -> None:
    """The retry's time has come: move the clock there and run its scheduled job."""
    [row] = _outbox(rt)
    clock.advance_to(row.next_attempt_at)
    q = queues.queue(rt.redis, QUEUE)
    [scheduled] = _scheduled(rt)
    assert scheduled == job_id(row.public_id, row.attempts)
    ScheduledJobRegistry(queue=q).remove(scheduled)  # what the RQ scheduler does
    q.enqueue_job(q.fetch_job(scheduled))
    work(rt)


# -- events ------------------------------------------------------------------------------------


def test_a_delivered_sms_sends_one_signed_callback(seeded, standin, client, receiver):
    rt = seeded
    _resident(rt, "+38640111222")
    broadcast_id = _send(rt)
    work(rt)
    [sms] = _deliveries(rt, broadcast_id)
    _, secret = _endpoint(rt, receiver)  # after the send: only the status report follows
    params = {"MessageSid": sms.provider_id, "MessageStatus": "delivered"}
    assert _callback(client, rt, params).status_code == 204
    assert _callback(client, rt, params).status_code == 204  # Twilio repeats itself
    work(rt)
    [request] = receiver.requests
    headers = request["headers"]
    event = verify(secret, headers, request["body"])
    assert headers["X-Hub-Event"] == event["event"] == "delivery-status"
    assert headers["X-Hub-Delivery"] == event["id"]
    assert headers["Content-Type"] == "application/json"
    data = event["data"]
    assert data["delivery_id"] == sms.id and data["notice_id"] == broadcast_id
    assert (data["channel"], data["status"], data["error"]) == ("sms", "delivered", None)
    assert data["provider_id"] == sms.provider_id
    assert data["sent_at"].endswith("Z") and data["status_at"].endswith("Z")
    with pytest.raises(ValueError, match="bad signature"):
        verify("another-secret", headers, request["body"])
    with pytest.raises(ValueError, match="too old"):
        verify(secret, headers, request["body"], now=time.time() + 301)
    [row] = _outbox(rt)
    assert (row.status, row.attempts, row.last_status_code) == ("delivered", 1, 200)
    assert row.delivered_at is not None


def test_a_notice_sent_by_email_reports_sent(seeded, smtp, receiver):
    rt = seeded
    _endpoint(rt, receiver, events=["delivery-status"])
    _resident(rt, "+38640111222", email="ana@example.org")
    with rt.session() as session:  # e-mail first: the resident's preferred channel
        for point in session.scalars(select(ContactPoint)):
            point.rank = 1 if point.channel == "email" else 2
    broadcast_id = _send(rt)
    work(rt)
    [request] = receiver.requests
    data = json.loads(request["body"])["data"]
    [email] = _deliveries(rt, broadcast_id)
    assert (data["delivery_id"], data["channel"], data["status"]) == (email.id, "email", "sent")


def test_an_inbound_telegram_message_is_passed_on(seeded, client, receiver):
    rt = seeded
    _, secret = _endpoint(rt, receiver, events=["inbound-message"])
    update = {
        "update_id": 901,
        "message": {
            "message_id": 17,
            "date": int(time.time()),
            "chat": {"id": 4242, "type": "private"},
            "text": "Kontejner na Koroški cesti je poln <3",
        },
    }
    response = client.post(
        "/webhooks/telegram",
        json=update,
        headers={"X-Telegram-Bot-Api-Secret-Token": providers.telegram_webhook_secret(rt)},
    )
    assert response.status_code == 200
    work(rt)
    [request] = receiver.requests
    event = verify(secret, request["headers"], request["body"])
    assert event["event"] == "inbound-message"
    data = event["data"]
    with rt.session() as session:
        conversation_id = session.scalar(select(Conversation.id))
    assert data["conversation_id"] == conversation_id
    assert (data["channel"], data["from"]) == ("telegram", "4242")
    assert data["text"] == "Kontejner na Koroški cesti je poln <3"
    assert data["notice_id"] is None and data["received_at"].endswith("Z")


def test_a_cancelled_notice_reports_each_cancelled_delivery(seeded, receiver):
    rt = seeded
    _endpoint(rt, receiver, events=["delivery-status"])
    for i in range(3):
        _resident(rt, f"+3864011122{i}")
    broadcast_id = _send(rt)
    plan_broadcast(rt, broadcast_id)  # planned, nothing sent yet
    with rt.session() as session:
        assert cancel_broadcast(session, broadcast_id) == 3
    work(rt)
    statuses = [json.loads(r["body"])["data"]["status"] for r in receiver.requests]
    assert statuses == ["cancelled"] * 3


def test_no_endpoints_means_no_outbox_rows(seeded, smtp, receiver):
    rt = seeded
    _resident(rt, "+38640111222", email="ana@example.org")
    _send(rt)
    work(rt)
    _resident_writes(rt)
    _endpoint(rt, receiver, events=["delivery-status"])  # wants no inbound messages
    _resident_writes(rt, "Še eno vprašanje")
    work(rt)
    assert _outbox(rt) == [] and receiver.requests == []


# -- answers and retries -----------------------------------------------------------------------


def test_a_500_is_retried_with_backoff_and_then_delivered(seeded, receiver):
    rt = seeded
    receiver.answer((500, {}, "database <b>down</b>"))
    _endpoint(rt, receiver)
    _resident_writes(rt)
    work(rt)
    [row] = _outbox(rt)
    [first] = _attempts(rt)
    assert (row.status, row.attempts, row.last_status_code) == ("pending", 1, 500)
    assert first.error == "HTTP 500: database <b>down</b>"
    assert timedelta(seconds=7.9) <= row.next_attempt_at - first.at <= timedelta(seconds=12.1)
    _run_retry(rt)
    [row] = _outbox(rt)
    first, second = _attempts(rt)
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == (
        "delivered",
        2,
        200,
        None,
    )
    assert (second.status_code, second.error) == (200, None)
    one, two = receiver.requests
    assert one["headers"]["X-Hub-Delivery"] == two["headers"]["X-Hub-Delivery"]  # to dedupe
    assert one["body"] == two["body"]


def test_a_429_waits_as_long_as_retry_after_says(seeded, receiver):
    rt = seeded
    receiver.answer((429, {"Retry-After": "120"}))
    _endpoint(rt, receiver)
    _resident_writes(rt)
    work(rt)
    [row] = _outbox(rt)
    [attempt] = _attempts(rt)
    assert (row.status, row.last_status_code) == ("pending", 429)
    assert row.next_attempt_at - attempt.at >= timedelta(seconds=120)
    assert len(_scheduled(rt)) == 1


def test_a_400_fails_at_once(seeded, receiver):
    rt = seeded
    receiver.answer((400, {}, "unknown field"))
    _endpoint(rt, receiver)
    _resident_writes(rt)
    work(rt)
    [row] = _outbox(rt)
    assert (row.status, row.attempts, row.last_error) == ("failed", 1, "HTTP 400: unknown field")
    assert _scheduled(rt) == [] and len(receiver.requests) == 1


def test_a_redirect_is_not_followed(seeded, receiver):
    rt = seeded
    receiver.answer((302, {"Location": "http://elsewhere.example/steal"}))
    _endpoint(rt, receiver)
    _resident_writes(rt)
    work(rt)
    [row] = _outbox(rt)
    assert row.status == "failed" and "not followed" in row.last_error
    assert len(receiver.requests) == 1


def test_a_receiver_that_hangs_is_tried_again(seeded, receiver):
    rt = seeded
    rt.settings.callback_timeout_s = 0.5
    receiver.answer(("hang", 2))
    _endpoint(rt, receiver)
    _resident_writes(rt)
    started = time.monotonic()
    work(rt)
    assert time.monotonic() - started < 2
    [row] = _outbox(rt)
    [attempt] = _attempts(rt)
    assert (row.status, attempt.status_code, attempt.error) == (
        "pending",
        None,
        "no answer within 0.5 s",
    )
    _run_retry(rt)
    assert _outbox(rt)[0].status == "delivered"


def test_an_unreachable_receiver_gives_up_after_the_last_attempt(seeded, receiver):
    from hub.callbacks import MAX_ATTEMPTS

    rt = seeded
    _endpoint(rt, receiver)
    receiver.server.shutdown()
    receiver.server.server_close()  # nothing listens there any more
    _resident_writes(rt)
    work(rt)
    for _ in range(MAX_ATTEMPTS - 1):
        _run_retry(rt)
    [row] = _outbox(rt)
    assert (row.status, row.attempts) == ("failed", MAX_ATTEMPTS)
    assert row.last_error.startswith(f"gave up after {MAX_ATTEMPTS} attempts: could not connect")
    assert _scheduled(rt) == []


def test_losing_redis_loses_no_callback(seeded, receiver):
    rt = seeded
    _endpoint(rt, receiver)
    _resident_writes(rt)
    rt.redis.flushdb()  # the job is gone; the outbox row is not
    [row] = _outbox(rt)
    clock.advance_to(row.next_attempt_at + timedelta(seconds=rt.settings.sweep_grace_s + 1))
    assert sweep(rt).requeued_callbacks == 1
    assert sweep(rt).requeued_callbacks == 0  # queued now: not twice
    work(rt)
    assert _outbox(rt)[0].status == "delivered" and len(receiver.requests) == 1


def test_a_removed_endpoint_gets_nothing_more(seeded, receiver):
    rt = seeded
    endpoint_id, _ = _endpoint(rt, receiver)
    _resident_writes(rt)
    with rt.session() as session:
        assert remove_endpoint(session, endpoint_id, actor="test") == 1
    work(rt)
    _resident_writes(rt, "Še vedno nič")
    work(rt)
    assert receiver.requests == []
    [row] = _outbox(rt)
    assert (row.status, row.last_error) == ("failed", "the endpoint was removed")
    with rt.session() as session:
        actions = session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert actions == ["callbacks.add", "callbacks.remove"]


# -- the admins' command and page --------------------------------------------------------------


@pytest.fixture
def hub_cli(settings):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "hub.cli", "callbacks", *args],
            env=worker_env(settings, LANG="en_US.UTF-8"),
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


def _endpoints(rt) -> int:
    with rt.session() as session:
        return session.scalar(select(func.count()).select_from(CallbackEndpoint))


@pytest.mark.parametrize(
    "url, events, reason",
    [
        ("ftp://odpadki.kranj.si/hook", "delivery-status", "must start with https://"),
        ("odpadki.kranj.si/hook", "delivery-status", "must start with https://"),
        ("https://user:pw@odpadki.kranj.si/", "delivery-status", "user name or password"),
        ("https://odpadki.kranj.si/hook", "delivery-status,parcel-sent", "unknown event"),
        ("https://odpadki.kranj.si/hook", "", "unknown event"),
    ],
)
def test_bad_cli_input_exits_2_and_stores_nothing(hub_cli, rt, url, events, reason):
    result = hub_cli("add", "--name", "odpadki", "--url", url, "--events", events)
    assert result.returncode == 2
    assert reason in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert _endpoints(rt) == 0


def test_cli_adds_lists_shows_attempts_and_removes(hub_cli, rt, receiver):
    added = hub_cli(
        "add", "--name", "odpadki", "--url", receiver.url, "--events", "inbound-message"
    )
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip()  # stdout holds the secret alone, for scripts
    assert len(secret) == 64 and "shown once" in added.stderr
    listed = hub_cli("list").stdout.splitlines()
    assert listed == [f"1\todpadki\t{receiver.url}\tinbound-message\tactive"]
    receiver.answer((503, {}, "maintenance"))
    _resident_writes(rt)
    work(rt)
    failed = hub_cli("attempts", "--endpoint", "1", "--failed").stdout.splitlines()
    [(at, endpoint, event, delivery_id, code, duration, error)] = [
        line.split("\t") for line in failed
    ]
    assert at.endswith("Z") and duration.endswith("ms")
    assert (endpoint, event, code, error) == (
        "1:odpadki",
        "inbound-message",
        "503",
        "HTTP 503: maintenance",
    )
    assert delivery_id == _outbox(rt)[0].public_id
    assert secret not in hub_cli("list").stdout + hub_cli("attempts").stdout
    with rt.session() as session:  # kept sealed, not in the clear
        assert secret not in session.scalar(select(CallbackEndpoint.secret))
    removed = hub_cli("remove", "1")
    assert removed.returncode == 0 and "1 waiting event dropped" in removed.stdout
    again = hub_cli("remove", "1")
    assert again.returncode == 2 and "no active callback endpoint 1" in again.stderr
    assert hub_cli("list").stdout.strip().endswith("\tremoved")


def test_the_admin_page_is_for_admins_and_escapes_what_it_shows(rt, client, receiver):
    receiver.answer((500, {}, "<script>alert('odgovor')</script>"))
    _endpoint(rt, receiver, name="<img src=x onerror=alert(1)>")
    _resident_writes(rt)
    work(rt)
    assert client.get("/admin/callbacks").status_code == 302  # to sign in
    with rt.session() as session:
        create_staff_user(session, email="agent@kranj.example", role=Role.AGENT, password="x" * 12)
        create_staff_user(session, email="admin@kranj.example", role=Role.ADMIN, password="y" * 12)
    _login(client, "agent@kranj.example", "x" * 12)
    assert client.get("/admin/callbacks").status_code == 403
    admin = client.application.test_client()
    _login(admin, "admin@kranj.example", "y" * 12)
    page = admin.get("/admin/callbacks")
    assert page.status_code == 200
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert "<img src=x" not in page.text and "<script>alert" not in page.text
    assert "HTTP 500: &lt;script&gt;" in page.text
    assert receiver.url in page.text
