"""A resident's own data: all of it as one JSON document, and deleting their account.

Deleting keeps the rows that statistics and the law need, emptied of everything that names or
reaches the resident: contact points lose their addresses (deliveries keep counting), messages
lose their text, raw inbound events their payload, and consent records are kept as they are."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from hub.clock import utcnow
from hub.models import (
    Area,
    Broadcast,
    ConsentRecord,
    ContactPoint,
    Conversation,
    Delivery,
    InboundEvent,
    LinkToken,
    Message,
    MessageDirection,
    OneTimeCode,
    Resident,
    ResidentErasure,
    Subscription,
    Topic,
)
from hub.portal import contact_points, forget_contact
from hub.preferences import clock_time, forget_topic_channels, own_orders_by_slug
from hub.rendering import content_for

ERASED = "account deleted by the resident"


def export(session: Session, resident_id: int, default_locale: str) -> dict:
    """Everything the hub holds about the resident, and nothing about anyone else."""
    resident = session.get(Resident, resident_id)
    return {
        "exported_at": _iso(utcnow()),
        "resident": {
            "id": resident.id,
            "name": resident.name,
            "language": resident.locale,
            "local_community": _slug(session, Area, resident.area_id),
            "quiet_hours": _quiet(resident),
            "created_at": _iso(resident.created_at),
        },
        "contact_points": [
            {
                "channel": c.channel,
                "address": c.address,
                "order": c.rank,
                "verified": c.verified,
                "active": c.active,
                "opted_out_at": _iso(c.opted_out_at),
                "created_at": _iso(c.created_at),
            }
            for c in contact_points(session, resident_id)
        ],
        "subscriptions": [
            {"topic": topic, "area": area}
            for topic, area in session.execute(
                select(Topic.slug, Area.slug)
                .join(Subscription, Subscription.topic_id == Topic.id)
                .join(Area, Area.id == Subscription.area_id)
                .where(Subscription.resident_id == resident_id)
                .order_by(Topic.slug, Area.slug)
            )
        ],
        "topic_channels": [
            {"topic": slug, "channels": channels}
            for slug, channels in sorted(own_orders_by_slug(session, resident_id).items())
        ],
        "consent_records": [
            {"action": r.action, "scope": r.scope, "source": r.source, "at": _iso(r.created_at)}
            for r in session.scalars(
                select(ConsentRecord)
                .where(ConsentRecord.resident_id == resident_id)
                .order_by(ConsentRecord.id)
            )
        ],
        "notices_received": _notices(session, resident, default_locale),
        "messages": _messages(session, resident_id),
    }


def _notices(session: Session, resident: Resident, default_locale: str) -> list[dict]:
    rows = session.execute(
        select(Delivery, Broadcast)
        .join(Broadcast, Broadcast.id == Delivery.broadcast_id)
        .where(Delivery.resident_id == resident.id)
        .order_by(Delivery.id)
    ).all()
    return [
        {
            "notice_id": b.id,
            "title": content_for(b, resident.locale, default_locale).title,
            "channel": d.channel,
            "language": d.locale,
            "status": d.status,
            "sent_at": _iso(d.sent_at),
        }
        for d, b in rows
    ]


def _messages(session: Session, resident_id: int) -> list[dict]:
    """What the resident wrote and what the city answered (agents' private notes are theirs)."""
    rows = session.scalars(
        select(Message)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(
            Conversation.resident_id == resident_id,
            Message.direction.in_((MessageDirection.IN, MessageDirection.OUT)),
        )
        .order_by(Message.id)
    )
    return [
        {
            "direction": "from_you" if m.direction == MessageDirection.IN else "from_the_city",
            "channel": m.channel,
            "text": m.body,
            "status": m.status,
            "notice_id": m.broadcast_id,
            "at": _iso(m.created_at),
        }
        for m in rows
    ]


def erase(session: Session, resident_id: int, now: datetime | None = None) -> None:
    """Delete the resident's account (see the module's docstring for what stays)."""
    now = now or utcnow()
    contacts = list(
        session.scalars(select(ContactPoint).where(ContactPoint.resident_id == resident_id))
    )
    addresses = [c.address for c in contacts]
    session.execute(delete(OneTimeCode).where(OneTimeCode.resident_id == resident_id))
    if addresses:
        session.execute(delete(OneTimeCode).where(OneTimeCode.address.in_(addresses)))
    session.execute(delete(LinkToken).where(LinkToken.resident_id == resident_id))
    session.execute(delete(Subscription).where(Subscription.resident_id == resident_id))
    forget_topic_channels(session, resident_id)
    for contact in contacts:
        forget_contact(contact, ERASED)
    _anonymise_conversations(session, resident_id)
    # A Telegram provider id is "<chat id>:<message id>": the chat id reaches the resident.
    session.execute(
        update(Delivery).where(Delivery.resident_id == resident_id).values(provider_id=None)
    )
    resident = session.get(Resident, resident_id)
    resident.name, resident.area_id = "", None
    resident.quiet_start = resident.quiet_end = None
    session.add(
        ConsentRecord(
            resident_id=resident_id,
            action="withdrawn",
            scope="account",
            source="portal",
            created_at=now,
        )
    )
    session.add(ResidentErasure(resident_id=resident_id, erased_at=now))
    session.flush()


def _anonymise_conversations(session: Session, resident_id: int) -> None:
    conversation_ids = select(Conversation.id).where(Conversation.resident_id == resident_id)
    event_ids = select(Message.inbound_event_id).where(
        Message.conversation_id.in_(conversation_ids), Message.inbound_event_id.is_not(None)
    )
    session.execute(
        update(InboundEvent).where(InboundEvent.id.in_(event_ids)).values(payload=b"", meta=None)
    )
    session.execute(
        update(Message)
        .where(Message.conversation_id.in_(conversation_ids))
        .values(body="", full_body=None, address=None, error=None)
    )
    session.execute(
        update(Conversation).where(Conversation.resident_id == resident_id).values(address="")
    )


def _slug(session: Session, model, row_id: int | None) -> str | None:
    return session.scalar(select(model.slug).where(model.id == row_id)) if row_id else None


def _quiet(resident: Resident) -> str | None:
    if resident.quiet_start is None or resident.quiet_end is None:
        return None
    return f"{clock_time(resident.quiet_start)}-{clock_time(resident.quiet_end)}"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") + "Z" if moment else None
