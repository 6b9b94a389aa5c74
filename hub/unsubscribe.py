"""One-click unsubscribe (RFC 8058): the link in every e-mail leaves the notice's topic."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from hub.models import Broadcast, ConsentRecord, Delivery, Subscription, Topic
from hub.tokens import read_token


@dataclass(frozen=True)
class UnsubscribeTarget:
    resident_id: int
    topic: Topic


def find_target(session: Session, secret_key: str, token: str) -> UnsubscribeTarget | None:
    """What the link unsubscribes from, or None for a forged or unknown link."""
    delivery_id = read_token(secret_key, "unsub", token)
    if delivery_id is None:
        return None
    row = session.execute(
        select(Delivery.resident_id, Topic)
        .join(Broadcast, Broadcast.id == Delivery.broadcast_id)
        .join(Topic, Topic.id == Broadcast.topic_id)
        .where(Delivery.id == delivery_id)
    ).first()
    return UnsubscribeTarget(row[0], row[1]) if row else None


def is_subscribed(session: Session, target: UnsubscribeTarget) -> bool:
    return (
        session.scalar(
            select(Subscription.resident_id)
            .where(
                Subscription.resident_id == target.resident_id,
                Subscription.topic_id == target.topic.id,
            )
            .limit(1)
        )
        is not None
    )


def unsubscribe(session: Session, target: UnsubscribeTarget) -> bool:
    """Leave the topic in every area; idempotent. Returns False if there was nothing to leave."""
    removed = session.execute(
        delete(Subscription).where(
            Subscription.resident_id == target.resident_id,
            Subscription.topic_id == target.topic.id,
        )
    ).rowcount
    if removed:
        session.add(
            ConsentRecord(
                resident_id=target.resident_id,
                action="withdrawn",
                scope=f"topic:{target.topic.slug}",
                source="list-unsubscribe",
            )
        )
    return bool(removed)
