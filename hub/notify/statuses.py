"""Notify's status vocabulary, and how the providers' answers and receipts move a /v2
notification through it: forward only, and a final status is final."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from channels import base as outcome
from hub.clock import utcnow
from hub.models import NotifyNotification

CREATED = "created"  # stored, waiting for a worker (or for a retry)
SENDING = "sending"  # the provider took it; no receipt yet
PENDING = "pending"  # SMS: the carrier took it; the phone has not answered yet
DELIVERED = "delivered"
PERMANENT_FAILURE = "permanent-failure"  # the address is wrong or dead
TEMPORARY_FAILURE = "temporary-failure"  # the phone did not take it (off, full)
TECHNICAL_FAILURE = "technical-failure"  # between the hub and the provider; send again
FAILED = "failed"  # a filter: any of the three failures
FAILURES = (PERMANENT_FAILURE, TEMPORARY_FAILURE, TECHNICAL_FAILURE)
# What GET /v2/notifications?status= accepts: Notify's list, letters' statuses included, so a
# client that asks for them gets an empty page rather than an error.
FILTERABLE = (
    "cancelled",
    CREATED,
    SENDING,
    "sent",
    DELIVERED,
    PENDING,
    FAILED,
    TECHNICAL_FAILURE,
    TEMPORARY_FAILURE,
    PERMANENT_FAILURE,
    "pending-virus-check",
    "validation-failed",
    "virus-scan-failed",
    "returned-letter",
    "accepted",
    "received",
)


def statuses_for(filters: list[str]) -> list[str]:
    """`failed` means every failure, as in Notify."""
    wanted: list[str] = []
    for name in filters:
        wanted += FAILURES if name == FAILED else (name,)
    return wanted


def after_send(notification_type: str, result: outcome.Outcome, retrying: bool) -> dict:
    """The columns a send's outcome sets. An e-mail the relay accepted is as far as SMTP can
    tell, so it is `delivered`; an SMS waits for Twilio's receipt in `sending`."""
    now = utcnow()
    if result.status == outcome.SENT:
        if notification_type == "email":
            return {
                "status": DELIVERED,
                "provider_id": result.provider_id,
                "sent_at": now,
                "completed_at": now,
                "error": None,
            }
        return {"status": SENDING, "provider_id": result.provider_id, "sent_at": now, "error": None}
    if result.status == outcome.RETRY and retrying:
        return {"status": CREATED, "error": result.error}
    final = PERMANENT_FAILURE if result.status == outcome.GONE else TECHNICAL_FAILURE
    return {"status": final, "error": result.error, "completed_at": now}


def apply_twilio_status(
    session: Session, sid: str, twilio_status: str, error: str | None, dead_number: bool
) -> bool:
    """Apply Twilio's receipt to the /v2 SMS it is about; False if it is about none."""
    if twilio_status == "sent":
        new, moving_from = PENDING, (SENDING,)
    elif twilio_status == "delivered":
        new, moving_from = DELIVERED, (SENDING, PENDING)
    elif twilio_status in ("undelivered", "failed"):
        carrier = TEMPORARY_FAILURE if twilio_status == "undelivered" else TECHNICAL_FAILURE
        new, moving_from = (PERMANENT_FAILURE if dead_number else carrier), (SENDING, PENDING)
    else:  # queued, sending, accepted: nothing the notification does not say already
        new, moving_from = None, ()
    values = {"status": new, "error": error}
    if new != PENDING:
        values["completed_at"] = utcnow()
    moved = (
        new is not None
        and session.execute(
            update(NotifyNotification)
            .where(
                NotifyNotification.provider_id == sid,
                NotifyNotification.status.in_(moving_from),
            )
            .values(**values)
        ).rowcount
    )
    if moved:
        return True
    known = select(NotifyNotification.seq).where(NotifyNotification.provider_id == sid)
    return session.scalar(known.limit(1)) is not None
