"""What a resident sees of their notices and of their conversation with the city in the portal,
and what they write there: the portal is the "web" channel of hub.conversations, so an answer
or a question lands in the agents' inbox like any SMS or e-mail, and the agents' answers on
that channel are shown here (hub.outbound marks them delivered: no provider carries them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask_babel import gettext as _
from flask_babel import ngettext
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.conversations import Received, receive
from hub.models import (
    Broadcast,
    Conversation,
    Delivery,
    Message,
    MessageDirection,
)
from hub.outbound import WEB
from hub.portal import PortalError
from hub.rendering import content_for

MAX_MESSAGE = 4000


@dataclass(frozen=True)
class SentNotice:
    broadcast_id: int
    title: str
    priority: str
    channel: str
    status: str
    sent_at: datetime | None
    created_at: datetime


def web_address(resident_id: int) -> str:
    """The address a portal message comes from (and an answer on the web channel goes to)."""
    return f"resident:{resident_id}"


def notices_sent_to(
    session: Session, resident_id: int, locale: str, default_locale: str
) -> list[SentNotice]:
    """Every notice sent to the resident, newest first, once per channel it went on."""
    rows = session.execute(
        select(Delivery, Broadcast)
        .join(Broadcast, Broadcast.id == Delivery.broadcast_id)
        .where(Delivery.resident_id == resident_id)
        .order_by(Delivery.created_at.desc(), Delivery.id.desc())
    ).all()
    return [
        SentNotice(
            broadcast.id,
            content_for(broadcast, locale, default_locale).title,
            broadcast.priority,
            delivery.channel,
            delivery.status,
            delivery.sent_at,
            delivery.created_at,
        )
        for delivery, broadcast in rows
    ]


def notice_sent_to(session: Session, resident_id: int, broadcast_id: int) -> Broadcast | None:
    """The notice, if it was sent to this resident."""
    return session.scalar(
        select(Broadcast).where(
            Broadcast.id == broadcast_id,
            Broadcast.id.in_(
                select(Delivery.broadcast_id).where(Delivery.resident_id == resident_id)
            ),
        )
    )


def deliveries_of(session: Session, resident_id: int, broadcast_id: int) -> list[Delivery]:
    return list(
        session.scalars(
            select(Delivery)
            .where(Delivery.resident_id == resident_id, Delivery.broadcast_id == broadcast_id)
            .order_by(Delivery.id)
        )
    )


def thread_of(session: Session, resident_id: int) -> list[Message]:
    """The resident's messages to the city and the city's answers, on every channel, oldest
    first. Agents' private notes are never shown."""
    return list(
        session.scalars(
            select(Message)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(
                Conversation.resident_id == resident_id,
                Message.direction.in_((MessageDirection.IN, MessageDirection.OUT)),
            )
            .order_by(Message.created_at, Message.id)
        )
    )


def write(
    session: Session,
    resident_id: int,
    text: str,
    *,
    default_locale: str,
    broadcast_id: int | None = None,
) -> Received:
    """A question, or an answer to a notice sent to the resident, into their conversation."""
    text = (text or "").strip()
    if not text:
        raise PortalError(_("Write your message first."))
    if len(text) > MAX_MESSAGE:
        raise PortalError(
            ngettext(
                "The message is too long (at most %(num)d character).",
                "The message is too long (at most %(num)d characters).",
                MAX_MESSAGE,
            )
        )
    delivery_id = None
    if broadcast_id is not None:
        deliveries = deliveries_of(session, resident_id, broadcast_id)
        if not deliveries:
            raise PortalError(_("You can only answer a notice that was sent to you."))
        delivery_id = deliveries[0].id
    return receive(
        session,
        WEB,
        web_address(resident_id),
        text,
        default_locale=default_locale,
        delivery_id=delivery_id,
        resident_id=resident_id,
    )
