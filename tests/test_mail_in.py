"""E-mail replies and bounce reports through `hub mail-in` (aiosmtpd on a real socket, fed
by the standard library's smtplib as a mail server would)."""

from __future__ import annotations

import json
import smtplib

import pytest
from sqlalchemy import func, select

from channels.sandbox.smtp import free_port
from hub import conversations, outbound
from hub.broadcasts import NoticeDraft, send_notice
from hub.mailin import start_mail_in
from hub.models import Area, ContactPoint, Conversation, Delivery, InboundEvent, Message, Topic
from hub.residents import ResidentRow, import_rows
from tests.helpers import work
from tests.test_callbacks import _endpoint, receiver  # noqa: F401  (a fixture)

DOMAIN = "mestni-glas.example"


@pytest.fixture
def mail_in(rt):
    port = free_port()
    controller = start_mail_in(rt, "127.0.0.1", port)
    yield port
    controller.stop()


def _resident(rt, **addresses) -> None:
    with rt.session() as session:
        area_id = session.scalar(select(Area.id).where(Area.slug == "center"))
        topic_id = session.scalar(select(Topic.id).where(Topic.slug == "road-works"))
        import_rows(
            session, [ResidentRow("Ana", "sl", area_id, [topic_id], addresses, list(addresses))]
        )


def _notice(rt) -> int:
    draft = NoticeDraft(
        "Zapora ceste", "road-works", ("center",), "normal", "preferred", {"sl": "Jutri zaprto."}
    )
    return send_notice(rt, draft, actor="test")


def _deliver(port: int, raw: str, rcpt: str, sender: str = "ana@example.org") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.sendmail(sender, [rcpt], raw.replace("\n", "\r\n").encode())


REPLY = """\
From: Ana Novak <ana@example.org>
To: {to}
Subject: Re: Zapora ceste
Message-ID: <{message_id}>
In-Reply-To: <{in_reply_to}>
Date: Mon, 30 Nov 2026 08:00:00 +0100
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Kako dolgo bo cesta zaprta?

--{space}
Ana

Dne pon., 30. nov. 2026 ob 07:00 je Mestni glas <obvestila@{domain}> napisal:
> Jutri zaprto.
"""


def _sent_notice(rt, smtp) -> tuple[int, dict]:
    _resident(rt, email="ana@example.org", sms="+38640111222")
    broadcast_id = _notice(rt)
    work(rt)
    [mail] = smtp.messages(channel="email")
    return broadcast_id, mail["meta"]


def _messages(rt) -> list[Message]:
    with rt.session() as session:
        return list(session.scalars(select(Message).order_by(Message.id)))


def test_a_reply_is_threaded_by_its_token_and_shown_without_the_quote(seeded, smtp, mail_in):
    rt = seeded
    broadcast_id, meta = _sent_notice(rt, smtp)
    raw = REPLY.format(
        to=meta["reply_to"], message_id="r1@example.org", in_reply_to="x@y", domain=DOMAIN,
        space=" ",  # the signature delimiter is "-- " with its space
    )  # fmt: skip
    _deliver(mail_in, raw, meta["reply_to"])
    work(rt)
    [message] = _messages(rt)
    assert message.body == "Kako dolgo bo cesta zaprta?"
    assert "> Jutri zaprto." in message.full_body and "Ana" in message.full_body
    assert (message.channel, message.address, message.broadcast_id) == (
        "email",
        "ana@example.org",
        broadcast_id,
    )


def test_a_reply_to_the_from_address_is_threaded_by_in_reply_to(seeded, smtp, mail_in):
    rt = seeded
    broadcast_id, meta = _sent_notice(rt, smtp)
    to = f"obvestila@{DOMAIN}"
    raw = REPLY.format(
        to=to, message_id="r2@example.org", in_reply_to=meta["message_id"].strip("<>"),
        domain=DOMAIN, space=" ",
    )  # fmt: skip
    _deliver(mail_in, raw, to)
    work(rt)
    [message] = _messages(rt)
    assert message.broadcast_id == broadcast_id


def test_the_same_message_twice_is_one_event(seeded, smtp, mail_in):
    rt = seeded
    _, meta = _sent_notice(rt, smtp)
    raw = REPLY.format(to=meta["reply_to"], message_id="same@example.org", in_reply_to="x@y",
                       domain=DOMAIN, space=" ")  # fmt: skip
    _deliver(mail_in, raw, meta["reply_to"])
    _deliver(mail_in, raw, meta["reply_to"])
    work(rt)
    assert len(_messages(rt)) == 1
    with rt.session() as session:
        assert session.scalar(select(func.count()).select_from(InboundEvent)) == 1


def test_the_receiver_is_no_relay(seeded, mail_in):
    with (
        smtplib.SMTP("127.0.0.1", mail_in, timeout=10) as smtp,
        pytest.raises(smtplib.SMTPRecipientsRefused),
    ):
        smtp.sendmail("spam@example.net", ["someone@gmail.com"], b"Subject: x\r\n\r\nx")


def test_auto_replies_are_ignored(seeded, smtp, mail_in):
    rt = seeded
    _, meta = _sent_notice(rt, smtp)
    raw = (
        f"From: ana@example.org\nTo: {meta['reply_to']}\nSubject: Odsotnost\n"
        "Auto-Submitted: auto-replied\nMessage-ID: <oof@example.org>\n\n"
        "Do 5. 12. sem odsotna.\n"
    )
    _deliver(mail_in, raw, meta["reply_to"])
    work(rt)
    assert _messages(rt) == []
    with rt.session() as session:
        assert session.scalar(select(InboundEvent.outcome)) == "auto-reply ignored"


BOUNCE = """\
From: Mail Delivery System <MAILER-DAEMON@relay.example>
To: {bounce_to}
Subject: Undelivered Mail Returned to Sender
Message-ID: <dsn1@relay.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

Your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.example

Final-Recipient: rfc822; ana@example.org
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 User unknown

--B
Content-Type: text/rfc822-headers

Message-ID: {message_id}
Subject: Zapora ceste

--B--
"""


def test_a_bounce_suppresses_the_address_and_the_notice_falls_back(seeded, smtp, standin, mail_in):
    rt = seeded
    broadcast_id, meta = _sent_notice(rt, smtp)
    raw = BOUNCE.format(bounce_to=meta["envelope_from"], message_id=meta["message_id"])
    with smtplib.SMTP("127.0.0.1", mail_in, timeout=10) as server:
        server.sendmail("", [meta["envelope_from"]], raw.replace("\n", "\r\n").encode())
    work(rt)
    with rt.session() as session:
        email, sms = session.scalars(
            select(Delivery).where(Delivery.broadcast_id == broadcast_id).order_by(Delivery.id)
        ).all()
        address = session.scalar(select(ContactPoint).where(ContactPoint.channel == "email"))
    assert email.status == "gone" and "5.1.1" in email.error
    assert not address.active
    assert (sms.channel, sms.status, sms.fallback_from_id) == ("sms", "sent", email.id)
    assert _messages(rt) == []  # a bounce is no message for the inbox


def test_a_bounce_is_reported_to_callback_endpoints(seeded, smtp, standin, mail_in, receiver):  # noqa: F811
    rt = seeded
    _, meta = _sent_notice(rt, smtp)
    _endpoint(rt, receiver, events=["delivery-status"])  # after the send: only the bounce's news
    raw = BOUNCE.format(bounce_to=meta["envelope_from"], message_id=meta["message_id"])
    with smtplib.SMTP("127.0.0.1", mail_in, timeout=10) as server:
        server.sendmail("", [meta["envelope_from"]], raw.replace("\n", "\r\n").encode())
    work(rt)
    events = {
        (e["channel"], e["status"])
        for e in (json.loads(r["body"])["data"] for r in receiver.requests)
    }
    assert events == {("email", "gone"), ("sms", "sent")}  # the bounce, and the fall-back


def test_an_answer_by_email_and_the_residents_reply_to_it(seeded, smtp, mail_in):
    rt = seeded
    _, meta = _sent_notice(rt, smtp)
    raw = REPLY.format(to=meta["reply_to"], message_id="r3@example.org", in_reply_to="x@y",
                       domain=DOMAIN, space=" ")  # fmt: skip
    _deliver(mail_in, raw, meta["reply_to"])
    work(rt)
    with rt.session() as session:
        conversation_id = session.scalar(select(Conversation.id))
        answer_id = conversations.reply(session, conversation_id, "Do petka.", author_id=None).id
    outbound.enqueue(rt, answer_id)
    work(rt)
    answer = smtp.messages(channel="email")[0]
    assert answer["to"] == "ana@example.org" and "Do petka." in answer["body"]
    again = (
        f"From: ana@example.org\nTo: {answer['meta']['reply_to']}\nSubject: Re: Mestni glas\n"
        f"Message-ID: <r4@example.org>\nIn-Reply-To: {answer['meta']['message_id']}\n\nHvala!\n"
    )
    _deliver(mail_in, again, answer["meta"]["reply_to"])
    work(rt)
    assert [(m.direction, m.body, m.conversation_id) for m in _messages(rt)] == [
        ("in", "Kako dolgo bo cesta zaprta?", conversation_id),
        ("out", "Do petka.", conversation_id),
        ("in", "Hvala!", conversation_id),
    ]
