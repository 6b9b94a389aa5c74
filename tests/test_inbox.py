"""Replies from every channel land in one inbox; keywords; agents answer on the resident's
channel. Webhooks are signed (forgeries refused, retries idempotent); the real provider
libraries carry the answers to the stand-ins."""

from __future__ import annotations

import os
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from hub import clock, conversations, outbound, providers
from hub.broadcasts import NoticeDraft, send_notice
from hub.models import (
    Area,
    ContactPoint,
    Conversation,
    Delivery,
    InboundEvent,
    Message,
    Resident,
    Topic,
)
from hub.residents import ResidentRow, import_rows
from tests.helpers import work

PHONE = "+38640111222"


def _resident(rt, locale="sl", **addresses) -> int:
    with rt.session() as session:
        area_id = session.scalar(select(Area.id).where(Area.slug == "center"))
        topic_id = session.scalar(select(Topic.id).where(Topic.slug == "road-works"))
        row = ResidentRow("Ana", locale, area_id, [topic_id], addresses, list(addresses))
        import_rows(session, [row])
        return session.scalar(select(Resident.id).order_by(Resident.id.desc()))


def _notice(rt, title="Zapora Koroške ceste") -> int:
    draft = NoticeDraft(title, "road-works", ("center",), "normal", "preferred", {"sl": title})
    return send_notice(rt, draft, actor="test")


def _sms_webhook(client, rt, body, sid="SM" + "1" * 32, sender=PHONE, signature=None):
    url = f"{rt.settings.base_url}/webhooks/twilio/sms"
    params = {"MessageSid": sid, "From": sender, "To": "+15005550006", "Body": body}
    if signature is None:
        token = providers.twilio_account(rt).auth_token
        signature = RequestValidator(token).compute_signature(url, params)
    return client.post(
        "/webhooks/twilio/sms", data=params, headers={"X-Twilio-Signature": signature}
    )


def _conversation_messages(rt) -> list[tuple[str, str, str]]:
    with rt.session() as session:
        rows = session.execute(select(Message.direction, Message.channel, Message.body)).all()
        return [tuple(r) for r in rows]


def _count(rt, model) -> int:
    with rt.session() as session:
        return session.scalar(select(func.count()).select_from(model))


# -- SMS -------------------------------------------------------------------------------------


def test_an_sms_reply_lands_in_the_residents_conversation(seeded, standin, client):
    rt = seeded
    resident_id = _resident(rt, sms=PHONE)
    broadcast_id = _notice(rt)
    work(rt)
    response = _sms_webhook(client, rt, "Kdaj bo cesta spet odprta?")
    assert response.status_code == 200
    assert response.mimetype == "text/xml" and "<Response></Response>" in response.text
    work(rt)
    with rt.session() as session:
        conversation = session.scalar(select(Conversation))
        [message] = session.scalars(select(Message)).all()
    assert conversation.resident_id == resident_id
    assert conversation.broadcast_id == broadcast_id  # the last notice sent to that number
    assert (conversation.status, conversation.unread) == ("open", 1)
    assert conversation.waiting_since is not None
    assert (message.direction, message.body, message.broadcast_id) == (
        "in",
        "Kdaj bo cesta spet odprta?",
        broadcast_id,
    )


def test_forged_and_replayed_sms_webhooks_change_nothing(seeded, standin, client):
    rt = seeded
    _resident(rt, sms=PHONE)
    assert _sms_webhook(client, rt, "Živjo", signature="forged").status_code == 403
    assert _count(rt, InboundEvent) == 0
    for _ in range(3):  # Twilio retries a webhook it got no answer to
        assert _sms_webhook(client, rt, "Živjo").status_code == 200
    work(rt)
    assert _count(rt, InboundEvent) == 1
    assert _conversation_messages(rt) == [("in", "sms", "Živjo")]


def test_an_unknown_sender_gets_a_conversation_of_their_own(seeded, standin, client):
    rt = seeded
    assert _sms_webhook(client, rt, "Kje dobim obrazec?", sender="+38641999888").status_code == 200
    work(rt)
    with rt.session() as session:
        conversation = session.scalar(select(Conversation))
    assert conversation.resident_id is None and conversation.address == "+38641999888"


@pytest.mark.parametrize(
    "word", ["STOP", "stop", "Stop!", "STOPALL", "unsubscribe", "Cancel", "END", "quit", "Odjava"]
)
def test_stop_in_every_form_opts_out_and_no_notice_follows(seeded, standin, client, word):
    rt = seeded
    _resident(rt, sms=PHONE)
    _sms_webhook(client, rt, word)
    work(rt)
    with rt.session() as session:
        assert session.scalar(select(ContactPoint.opted_out_at)) is not None
    [confirmation] = standin.store.messages(channel="sms")
    assert "Send START" in confirmation["body"] or "START" in confirmation["body"]
    assert "ne boste več prejemali" in confirmation["body"]  # in the resident's language
    _notice(rt)
    work(rt)
    assert standin.store.count("sms") == 1, "a notice reached an address that said STOP"


def test_start_brings_an_address_back(seeded, standin, client):
    rt = seeded
    _resident(rt, locale="en", sms=PHONE)
    _sms_webhook(client, rt, "ODJAVA", sid="SM" + "a" * 32)
    _sms_webhook(client, rt, "prijava", sid="SM" + "b" * 32)
    work(rt)
    with rt.session() as session:
        assert session.scalar(select(ContactPoint.opted_out_at)) is None
    _notice(rt, title="Road closed")
    work(rt)
    bodies = [m["body"] for m in reversed(standin.store.messages(channel="sms"))]
    assert len(bodies) == 3
    assert "no more messages" in bodies[0] and "come here" in bodies[1]
    assert "Road closed" in bodies[2]


@pytest.mark.parametrize("word", ["HELP", "info", "POMOČ", "pomoc"])
def test_help_answers_with_help_and_changes_nothing(seeded, standin, client, word):
    rt = seeded
    _resident(rt, sms=PHONE)
    _sms_webhook(client, rt, word)
    work(rt)
    [answer] = standin.store.messages(channel="sms")
    assert "Mestni glas" in answer["body"] and "STOP" in answer["body"]
    with rt.session() as session:
        assert session.scalar(select(ContactPoint.opted_out_at)) is None
        conversation = session.scalar(select(Conversation))
        assert conversation.waiting_since is None, "a keyword needs no agent"


# -- agents' answers ---------------------------------------------------------------------------


def _conversation_id(rt) -> int:
    with rt.session() as session:
        return session.scalar(select(Conversation.id))


def test_an_agents_answer_goes_back_on_the_residents_channel(seeded, standin, client):
    rt = seeded
    _resident(rt, sms=PHONE, email="ana@example.org")
    _sms_webhook(client, rt, "Kdaj odvoz?")
    work(rt)
    with rt.session() as session:
        message = conversations.reply(session, _conversation_id(rt), "Jutri ob 7h.", author_id=None)
        message_id = message.id
    outbound.enqueue(rt, message_id)
    work(rt)
    [answer] = standin.store.messages(channel="sms")
    assert (answer["to"], answer["body"]) == (PHONE, "Jutri ob 7h.")
    with rt.session() as session:
        sent = session.get(Message, message_id)
        conversation = session.get(Conversation, sent.conversation_id)
        assert (sent.status, sent.provider_id) == ("sent", answer["meta"]["sid"])
        assert conversation.status == "pending" and conversation.first_response_at is not None
    # Twilio reports delivery of the answer like any SMS.
    url = f"{rt.settings.base_url}/webhooks/twilio/status"
    params = {"MessageSid": answer["meta"]["sid"], "MessageStatus": "delivered"}
    signature = RequestValidator(providers.twilio_account(rt).auth_token).compute_signature(
        url, params
    )
    client.post("/webhooks/twilio/status", data=params, headers={"X-Twilio-Signature": signature})
    with rt.session() as session:
        assert session.get(Message, message_id).status == "delivered"


def test_a_failed_answer_shows_the_error_and_retry_sends_it(seeded, standin, client):
    rt = seeded
    _resident(rt, sms=PHONE)
    _sms_webhook(client, rt, "Halo?")
    work(rt)
    standin.twilio.control_fail(
        PHONE, 21408, message="Permission to send an SMS has not been enabled"
    )
    with rt.session() as session:
        message_id = conversations.reply(
            session, _conversation_id(rt), "Dober dan.", author_id=None
        ).id
    outbound.enqueue(rt, message_id)
    work(rt)
    with rt.session() as session:
        failed = session.get(Message, message_id)
        assert failed.status == "failed" and "21408" in failed.error
    del standin.twilio.failures[PHONE]  # the account is fixed
    with rt.session() as session:
        conversations.retry_message(session, message_id)
    outbound.enqueue(rt, message_id)
    work(rt)
    with rt.session() as session:
        assert session.get(Message, message_id).status == "sent"
    assert [m["body"] for m in standin.store.messages(channel="sms")] == ["Dober dan."]


def test_an_agent_cannot_write_to_an_address_that_said_stop(seeded, standin, client):
    from hub.models import StaffUser
    from hub.staff import create_staff_user

    rt = seeded
    _resident(rt, sms=PHONE)
    _sms_webhook(client, rt, "STOP")
    work(rt)
    with rt.session() as session:
        agent = create_staff_user(session, email="a@kranj.si", role="agent", password="x" * 12)
        agent_id = session.scalar(select(StaffUser.id).where(StaffUser.email == agent.email))
        message_id = conversations.reply(
            session, _conversation_id(rt), "Še eno vprašanje?", author_id=agent_id
        ).id
    outbound.enqueue(rt, message_id)
    work(rt)
    with rt.session() as session:
        refused = session.get(Message, message_id)
    assert refused.status == "failed" and "opted out" in refused.error
    assert standin.store.count("sms") == 1  # only the STOP confirmation


def test_an_empty_answer_is_refused(seeded, standin, client):
    rt = seeded
    _sms_webhook(client, rt, "Halo")
    work(rt)
    with rt.session() as session, pytest.raises(conversations.ConversationError):
        conversations.reply(session, _conversation_id(rt), "   ", author_id=None)


# -- Telegram ----------------------------------------------------------------------------------


def _telegram_webhook(client, rt, update, secret=None):
    secret = providers.telegram_webhook_secret(rt) if secret is None else secret
    return client.post(
        "/webhooks/telegram", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": secret}
    )


def test_telegram_webhooks_need_the_secret_and_are_idempotent(seeded, standin, client):
    rt = seeded
    update = standin.telegram.message_update("Živjo", 4242)
    assert _telegram_webhook(client, rt, update, secret="wrong").status_code == 403
    assert _telegram_webhook(client, rt, update, secret="").status_code == 403
    assert _count(rt, InboundEvent) == 0
    for _ in range(2):
        assert _telegram_webhook(client, rt, update).status_code == 200
    assert _telegram_webhook(client, rt, {"message": {}}).status_code == 400
    work(rt)
    assert _conversation_messages(rt) == [("in", "telegram", "Živjo")]


def test_a_deep_link_links_the_chat_once(seeded, standin, client):
    rt = seeded
    resident_id = _resident(rt, email="ana@example.org")
    with rt.session() as session:
        token = conversations.make_link_token(session, resident_id, "telegram")
    assert len(token) <= 64
    _telegram_webhook(client, rt, standin.telegram.message_update(f"/start {token}", 4242))
    work(rt)
    with rt.session() as session:
        chat = session.scalar(select(ContactPoint).where(ContactPoint.channel == "telegram"))
        assert (chat.resident_id, chat.address, chat.verified) == (resident_id, "4242", True)
    # the same link again, from another chat: refused
    _telegram_webhook(client, rt, standin.telegram.message_update(f"/start {token}", 5353))
    work(rt)
    answers = {m["to"]: m["body"] for m in standin.store.messages(channel="telegram")}
    assert "linked" in answers["4242"] or "povezan" in answers["4242"]
    assert "expired" in answers["5353"] or "potekla" in answers["5353"]
    with rt.session() as session:
        assert session.scalar(select(func.count()).where(ContactPoint.address == "5353")) == 0


def test_an_expired_link_is_refused(seeded, standin, client):
    rt = seeded
    resident_id = _resident(rt, email="ana@example.org")
    with rt.session() as session:
        token = conversations.make_link_token(session, resident_id, "telegram")
    clock.advance_to(clock.utcnow() + conversations.LINK_TOKEN_TTL + timedelta(minutes=1))
    _telegram_webhook(client, rt, standin.telegram.message_update(f"/start {token}", 4242))
    work(rt)
    with rt.session() as session:
        assert session.scalar(select(func.count()).where(ContactPoint.channel == "telegram")) == 0


def test_telegram_stop_and_a_blocked_bot(seeded, standin, client):
    rt = seeded
    _resident(rt, telegram="4242")
    _resident(rt, telegram="5353")
    _telegram_webhook(client, rt, standin.telegram.message_update("/stop", 4242))
    _telegram_webhook(client, rt, standin.telegram.chat_member_update(5353, "kicked"))
    work(rt)
    with rt.session() as session:
        chats = {c.address: c for c in session.scalars(select(ContactPoint))}
    assert chats["4242"].opted_out_at is not None and chats["4242"].active
    assert not chats["5353"].active
    _notice(rt)
    work(rt)
    to = [m["to"] for m in standin.store.messages(channel="telegram")]
    assert to == ["4242"], "only the /stop confirmation; no notice to either chat"


def test_a_telegram_reply_to_a_notice_is_linked_to_it(seeded, standin, client):
    rt = seeded
    _resident(rt, telegram="4242")
    broadcast_id = _notice(rt)
    work(rt)
    with rt.session() as session:
        delivery = session.scalar(select(Delivery))
    notice_message_id = int(delivery.provider_id.split(":")[1])
    update = standin.telegram.message_update("Hvala!", 4242, reply_to_message_id=notice_message_id)
    _telegram_webhook(client, rt, update)
    work(rt)
    with rt.session() as session:
        message = session.scalar(select(Message))
    assert message.broadcast_id == broadcast_id


def test_set_webhook_registers_it_with_the_secret(seeded, standin):
    from hub.telegram_admin import set_webhook, webhook_info

    rt = seeded
    info = set_webhook(rt)
    assert info.registered and info.url == f"{rt.settings.base_url}/webhooks/telegram"
    assert standin.telegram.webhook["secret_token"] == providers.telegram_webhook_secret(rt)
    rt.settings.base_url = "https://elsewhere.example"
    assert not webhook_info(rt).registered


def test_a_message_whose_job_redis_lost_still_reaches_the_inbox(seeded, standin, client):
    from hub.sweeper import sweep

    rt = seeded
    _resident(rt, sms=PHONE)
    _sms_webhook(client, rt, "Halo?")
    rt.redis.flushdb()  # the queued job is gone; the stored event is not
    work(rt)
    assert _conversation_messages(rt) == []
    clock.advance_to(clock.utcnow() + timedelta(seconds=rt.settings.sweep_grace_s + 1))
    assert sweep(rt).requeued_inbound == 1
    work(rt)
    assert ("in", "sms", "Halo?") in _conversation_messages(rt)
    # its STOP-style auto answers and agents' answers are recovered the same way
    with rt.session() as session:
        answer_id = conversations.reply(session, _conversation_id(rt), "Da?", author_id=None).id
    clock.advance_to(clock.utcnow() + timedelta(seconds=rt.settings.sweep_grace_s + 1))
    assert sweep(rt).requeued_inbound == 1  # never enqueued at all
    work(rt)
    with rt.session() as session:
        assert session.get(Message, answer_id).status == "sent"


def test_open_inbox_pages_hear_of_new_messages(seeded, standin, client, app):
    import re

    from hub.staff import create_staff_user

    rt = seeded
    app.config["HUB_EVENTS_STREAM_S"] = 5
    assert client.get("/inbox/events").status_code == 302  # to the sign-in page
    with rt.session() as session:
        create_staff_user(session, email="agent@kranj.si", role="agent", password="x" * 12)
    login = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', login.text).group(1)
    client.post(
        "/login", data={"email": "agent@kranj.si", "password": "x" * 12, "csrf_token": token}
    )
    response = client.get("/inbox/events", buffered=False)
    assert response.mimetype == "text/event-stream"
    events = (chunk.decode() for chunk in response.response)
    assert next(events).startswith("retry:")  # listening now
    _resident(rt, sms=PHONE)
    _sms_webhook(client, rt, "Halo?")
    work(rt)
    event = next(events)
    assert event.startswith("event: message\n")
    assert f'"conversation_id": {_conversation_id(rt)}' in event
    response.close()


def test_healthz_says_when_each_webhook_last_passed_its_check(seeded, standin, client):
    rt = seeded
    before = client.get("/healthz").get_json()["webhooks_last_valid"]
    assert before == {"twilio-sms": None, "twilio-status": None, "telegram": None}
    _sms_webhook(client, rt, "Halo", signature="forged")
    assert client.get("/healthz").get_json()["webhooks_last_valid"]["twilio-sms"] is None
    _sms_webhook(client, rt, "Halo")
    _telegram_webhook(client, rt, standin.telegram.message_update("Živjo", 4242))
    after = client.get("/healthz").get_json()["webhooks_last_valid"]
    assert after["twilio-sms"] and after["telegram"] and after["twilio-status"] is None


@pytest.mark.skipif(
    not os.environ.get("HUB_TEST_DATABASE_URL"),
    reason="a PostgreSQL lock; SQLite lets one transaction write at a time anyway",
)
def test_two_workers_with_one_new_senders_messages_open_one_conversation(seeded):
    rt = seeded

    def receive(text: str) -> None:
        with rt.session() as session:
            conversations.receive(session, "sms", "+38640111222", text, default_locale="sl")

    with rt.session() as session:
        conversations.receive(session, "sms", "+38640111222", "Prvo", default_locale="sl")
        second = threading.Thread(target=receive, args=("Drugo",))
        second.start()
        second.join(timeout=0.5)
        assert second.is_alive()  # waits for the first transaction to end
    second.join(timeout=10)
    with rt.session() as session:
        assert session.scalar(select(func.count()).select_from(Conversation)) == 1
        assert session.scalar(select(Conversation.unread)) == 2
