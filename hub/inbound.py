"""Inbound events: every webhook call and received e-mail is stored raw first, once per
provider id (a provider that retries creates nothing new), answered fast, and processed by a
job on the `high` queue, which hands the message to hub.conversations.receive()."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import parse_qs

from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from channels.mailparse import InboundEmail, delivery_id_from_message_id, parse_inbound
from hub import callbacks, conversations, live, outbound, queues, runtime
from hub.clock import utcnow
from hub.contacts import InvalidAddress, normalise_email
from hub.models import ContactPoint, Delivery, DeliveryStatus, InboundEvent
from hub.status import address_is_dead
from hub.tokens import read_token

PROCESS_JOB = "hub.inbound.process_event"


def accept(
    rt: runtime.Runtime, channel: str, provider_event_id: str, payload: bytes, meta=None
) -> bool:
    """Store an event and queue its processing; False if this provider id was seen before."""
    with rt.session() as session:
        event_id = store(session, channel, provider_event_id, payload, meta)
    if event_id is None:
        return False
    enqueue(rt, event_id)
    return True


def job_id(event_id: int) -> str:
    return f"inbound-{event_id}"


def enqueue(rt: runtime.Runtime, event_id: int) -> None:
    queues.enqueue_once(rt.redis, "high", PROCESS_JOB, (event_id,), job_id(event_id))


def store(session: Session, channel: str, provider_event_id: str, payload: bytes, meta=None):
    """The new event's id, or None when the provider id is already stored."""
    event = InboundEvent(
        channel=channel,
        provider_event_id=provider_event_id[:300],
        payload=payload,
        meta=meta,
        received_at=utcnow(),
    )
    try:
        with session.begin_nested():
            session.add(event)
    except IntegrityError:
        return None
    return event.id


def process_event(event_id: int) -> str:
    """RQ job: process one stored event (once; a second run finds it processed)."""
    rt = runtime.current()
    with rt.session() as session:
        event = session.get(InboundEvent, event_id)
        if event is None or event.processed_at is not None:
            return "already processed"
        handled = HANDLERS[event.channel](rt, session, event)
        event.processed_at, event.outcome = utcnow(), handled.outcome[:300]
    if handled.conversation_id is not None:
        live.publish(rt, "message", handled.conversation_id)
    for message_id in handled.to_send:
        outbound.enqueue(rt, message_id)
    return handled.outcome


class Handled(NamedTuple):
    outcome: str  # what was done, kept on the event
    to_send: tuple[int, ...] = ()  # messages queued in answer
    conversation_id: int | None = None  # where the inbox shows it, if anywhere


def _received(result: conversations.Received) -> Handled:
    what = f"conversation {result.conversation_id}"
    if result.keyword:
        what += f", keyword {result.keyword}"
    to_send = (result.auto_reply_id,) if result.auto_reply_id else ()
    return Handled(what, to_send, result.conversation_id)


# -- SMS (Twilio) ----------------------------------------------------------------------------


def _sms(rt: runtime.Runtime, session: Session, event: InboundEvent) -> Handled:
    form = {k: v[0] for k, v in parse_qs(event.payload.decode(), keep_blank_values=True).items()}
    return _received(
        conversations.receive(
            session,
            "sms",
            form.get("From", ""),
            form.get("Body", ""),
            default_locale=rt.settings.default_locale,
            event_id=event.id,
        )
    )


# -- Telegram --------------------------------------------------------------------------------


def _telegram(rt: runtime.Runtime, session: Session, event: InboundEvent) -> Handled:
    update_ = json.loads(event.payload)
    if "my_chat_member" in update_:
        return Handled(_chat_member(session, update_["my_chat_member"]))
    message = update_.get("message") or update_.get("edited_message")
    if not message or "text" not in message:
        return Handled("ignored: no text message")
    chat_id, text = str(message["chat"]["id"]), message["text"]
    command, _, argument = text.strip().partition(" ")
    if command.split("@")[0] == "/start" and argument.strip():
        return _link_chat(rt, session, event, chat_id, text, argument.strip())
    delivery_id = None
    replied_to = message.get("reply_to_message", {}).get("message_id")
    if replied_to is not None:
        delivery_id = session.scalar(
            select(Delivery.id).where(
                Delivery.channel == "telegram", Delivery.provider_id == f"{chat_id}:{replied_to}"
            )
        )
    return _received(
        conversations.receive(
            session,
            "telegram",
            chat_id,
            text,
            default_locale=rt.settings.default_locale,
            delivery_id=delivery_id,
            event_id=event.id,
        )
    )


def _chat_member(session: Session, member_update: dict) -> str:
    """The resident blocked the bot ("kicked"): stop sending to that chat."""
    status = member_update.get("new_chat_member", {}).get("status")
    chat_id = str(member_update.get("chat", {}).get("id"))
    if status != "kicked":
        return f"chat member status {status}"
    session.execute(
        update(ContactPoint)
        .where(ContactPoint.channel == "telegram", ContactPoint.address == chat_id)
        .values(active=False, deactivated_reason="the resident blocked the bot")
    )
    return "chat blocked the bot: deactivated"


def _link_chat(rt, session, event, chat_id: str, text: str, token: str) -> Handled:
    """`/start <token>` from the portal's deep link: the chat becomes the resident's."""
    resident_id = conversations.link_address(session, token, "telegram", chat_id)
    received = conversations.receive(
        session,
        "telegram",
        chat_id,
        text,
        default_locale=rt.settings.default_locale,
        event_id=event.id,
        automatic=True,
    )
    contact = session.scalar(
        select(ContactPoint).where(
            ContactPoint.channel == "telegram", ContactPoint.address == chat_id
        )
    )
    with force_locale(conversations.locale_of(session, contact, rt.settings.default_locale)):
        if resident_id is not None:
            answer = _("Mestni glas: this chat is linked to your account. Notices come here now.")
        else:
            answer = _(
                "Mestni glas: this link has expired or was used already. "
                "Make a new one in the resident portal."
            )
    message = conversations.answer_automatically(session, received.conversation_id, answer)
    linked = "linked" if resident_id is not None else "link refused"
    conversation_id = received.conversation_id
    return Handled(f"{linked}, conversation {conversation_id}", (message.id,), conversation_id)


# -- e-mail ------------------------------------------------------------------------------------


def _email(rt: runtime.Runtime, session: Session, event: InboundEvent) -> Handled:
    envelope = event.meta or {}
    mail = parse_inbound(event.payload, envelope.get("mail_from", ""), envelope.get("rcpt_tos", []))
    if mail.bounce is not None:
        return Handled(_bounce(rt, session, mail))
    if mail.auto:
        return Handled("auto-reply ignored")
    delivery_id, conversation_id = _threading(rt, mail)
    return _received(
        conversations.receive(
            session,
            "email",
            _normalised(mail.sender),
            mail.text,
            full_text=mail.full_text,
            default_locale=rt.settings.default_locale,
            delivery_id=delivery_id,
            conversation_id=conversation_id,
            event_id=event.id,
        )
    )


def _threading(rt: runtime.Runtime, mail: InboundEmail) -> tuple[int | None, int | None]:
    """(delivery, conversation) a reply belongs to: by its reply+TOKEN@ address first (signed,
    so it cannot be guessed), then by the message ids it answers."""
    secret = rt.settings.secret_key
    for token in mail.reply_tokens:
        delivery_id = read_token(secret, "reply", token)
        conversation_id = read_token(secret, "conversation", token)
        if delivery_id is not None or conversation_id is not None:
            return delivery_id, conversation_id
    for message_id in [*mail.in_reply_to, *reversed(mail.references)]:
        delivery_id = delivery_id_from_message_id(message_id)
        if delivery_id is not None:
            return delivery_id, None
        conversation_id = _conversation_from_message_id(message_id)
        if conversation_id is not None:
            return None, conversation_id
    return None, None


def _conversation_from_message_id(message_id: str) -> int | None:
    """Our answers' Message-IDs are m<message>.c<conversation>@domain (hub.outbound)."""
    local = message_id.partition("@")[0]
    head, _, conversation = local.partition(".c")
    if head.startswith("m") and head[1:].isdigit() and conversation.isdigit():
        return int(conversation)
    return None


def _bounce(rt: runtime.Runtime, session: Session, mail: InboundEmail) -> str:
    """A delivery-status report: 5.x.x means the address is dead (deactivated, and the notice
    goes to the resident's next channel); 4.x.x is noted, the relay is still trying."""
    bounce = mail.bounce
    delivery = session.get(Delivery, bounce.delivery_id) if bounce.delivery_id else None
    if delivery is None:
        return "bounce for no known delivery"
    if bounce.action == "delivered":  # a success report (DSN NOTIFY=SUCCESS)
        if delivery.status == DeliveryStatus.SENT:
            delivery.status = DeliveryStatus.DELIVERED
            callbacks.record_delivery_statuses(session, [delivery.id])
        return f"delivery {delivery.id} delivered"
    error = f"bounced {bounce.status}: {bounce.diagnostic or bounce.action}"[:1000]
    if not bounce.permanent:
        delivery.error = error
        return f"delivery {delivery.id} {bounce.action}"
    if delivery.status not in (DeliveryStatus.SENT, DeliveryStatus.DELIVERED):
        return f"delivery {delivery.id} already {delivery.status}"
    delivery.status, delivery.error = DeliveryStatus.GONE, error
    address_is_dead(session, delivery, error, rt.settings.default_locale)
    callbacks.record_delivery_statuses(session, [delivery.id])
    return f"delivery {delivery.id} bounced: address suppressed"


def _normalised(address: str) -> str:
    try:
        return normalise_email(address)
    except InvalidAddress:
        return address


HANDLERS: dict[str, Callable[[runtime.Runtime, Session, InboundEvent], Handled]] = {
    "sms": _sms,
    "telegram": _telegram,
    "email": _email,
}
