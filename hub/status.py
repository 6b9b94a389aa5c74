"""Provider status callbacks: move a delivery forward only.

Callbacks arrive out of order and more than once: "delivered" must never be overwritten by a
late "sent", and a final status is final. A callback can also arrive before the send job has
recorded the provider's id (the provider answers, the job commits a moment later); such a
callback is tried again shortly by a job instead of being lost."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from hub import callbacks, queues, runtime
from hub.delivery import add_fallback
from hub.models import (
    Broadcast,
    ChannelPolicy,
    ContactPoint,
    Delivery,
    DeliveryStatus,
    Message,
)
from hub.notify import statuses as notify_statuses

# Twilio's statuses, as the outbox knows them; the rest (queued, sending, accepted, ...) say
# nothing the outbox does not know already.
TWILIO_FINAL = {
    "delivered": DeliveryStatus.DELIVERED,
    "undelivered": DeliveryStatus.UNDELIVERED,
    "failed": DeliveryStatus.FAILED,
}
# Carrier errors that say the number cannot get an SMS at all: stop using it, fall back.
TWILIO_DEAD_NUMBER = {
    30005: "unknown destination handset",
    30006: "landline or unreachable carrier",
}
TWILIO_ERRORS = {
    30003: "unreachable destination handset",
    30004: "message blocked",
    30007: "message filtered by the carrier",
    30008: "unknown error",
    **TWILIO_DEAD_NUMBER,
}
EARLY_RETRIES_S = (1, 3, 10, 30)


@dataclass(frozen=True)
class StatusResult:
    changed: bool
    known: bool  # False: no delivery has this provider id (yet)
    conversation_id: int | None = None  # the SMS was an answer in this conversation


def apply_twilio_status(
    session: Session, sid: str, status: str, error_code: int | None, default_locale: str
) -> StatusResult:
    new_status = TWILIO_FINAL.get(status)
    error = None
    if error_code:
        error = f"Twilio {error_code}: {TWILIO_ERRORS.get(error_code, 'delivery failed')}"
    dead = error_code in TWILIO_DEAD_NUMBER
    if notify_statuses.apply_twilio_status(session, sid, status, error, dead):
        return StatusResult(changed=True, known=True)  # an SMS sent through the Notify API
    if new_status is None:
        known = _find(session, sid) is not None or session.scalar(
            select(Message.id).where(Message.provider_id == sid)
        )
        return StatusResult(changed=False, known=bool(known))
    changed = session.execute(
        update(Delivery)
        .where(
            Delivery.provider_id == sid,
            Delivery.channel == "sms",
            Delivery.status == DeliveryStatus.SENT,
        )
        .values(status=new_status, error=error)
    ).rowcount
    delivery = _find(session, sid)
    if delivery is None:
        return _apply_to_answer(session, sid, new_status, error)
    if changed:
        callbacks.record_delivery_statuses(session, [delivery.id])
    if changed and error_code in TWILIO_DEAD_NUMBER:
        address_is_dead(session, delivery, error, default_locale)
    return StatusResult(changed=bool(changed), known=True)


def _apply_to_answer(session: Session, sid: str, new_status: str, error: str | None):
    """The SMS was an answer in a conversation (hub.outbound), not a notice."""
    changed = session.execute(
        update(Message)
        .where(Message.provider_id == sid, Message.channel == "sms", Message.status == "sent")
        .values(status=new_status, error=error)
    ).rowcount
    conversation_id = session.scalar(
        select(Message.conversation_id).where(Message.provider_id == sid)
    )
    return StatusResult(bool(changed), conversation_id is not None, conversation_id)


def _find(session: Session, sid: str) -> Delivery | None:
    return session.scalars(
        select(Delivery).where(Delivery.provider_id == sid, Delivery.channel == "sms")
    ).first()


def address_is_dead(session: Session, delivery: Delivery, error: str, locale: str) -> None:
    """A provider said, after the fact, that a delivery's address cannot be reached (a carrier's
    report, a bounce): stop using it and, under `preferred`, send on the next channel."""
    session.execute(
        update(ContactPoint)
        .where(ContactPoint.id == delivery.contact_point_id)
        .values(
            active=False, deactivated_reason=error, failure_count=ContactPoint.failure_count + 1
        )
    )
    broadcast = session.get(Broadcast, delivery.broadcast_id)
    if broadcast.channel_policy != ChannelPolicy.PREFERRED:
        return
    new_id = add_fallback(
        session, delivery.broadcast_id, delivery.id, delivery.resident_id, delivery.locale, locale
    )
    if new_id is not None:
        rt = runtime.current()
        bucket = new_id // rt.settings.chunk_size
        session.flush()
        queues.enqueue_send_chunks(
            rt.redis, broadcast.priority, [(broadcast.id, bucket)], suffix=f"-st{delivery.id}"
        )


def retry_twilio_status(sid: str, status: str, error_code: int | None, attempt: int) -> None:
    """RQ job: a callback that came before its delivery was recorded, tried again."""
    rt = runtime.current()
    with rt.session() as session:
        result = apply_twilio_status(session, sid, status, error_code, rt.settings.default_locale)
    if not result.known:
        schedule_retry(rt, sid, status, error_code, attempt + 1)


def schedule_retry(rt, sid: str, status: str, error_code: int | None, attempt: int) -> bool:
    if status not in TWILIO_FINAL or attempt >= len(EARLY_RETRIES_S):
        return False
    queues.schedule_status_retry(
        rt.redis, (sid, status, error_code, attempt), EARLY_RETRIES_S[attempt]
    )
    return True
