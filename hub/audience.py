"""Before a notice is sent: whom it will reach on which channel, how many of them are in their
quiet hours now, and how long each channel takes to reach everyone at its configured rate.

The counts come from the very query planning inserts the outbox with (planning.audience_rows),
run over every resident at once and counted instead of inserted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub.clock import utcnow
from hub.config import Settings
from hub.models import Broadcast, Resident
from hub.planning import audience_rows
from hub.preview import preview_broadcast


@dataclass(frozen=True)
class ChannelReach:
    channel: str
    recipients: int
    in_quiet_hours: int  # waiting for their quiet hours to end (never for an emergency)
    units: int  # what the provider's rate counts: SMS segments, otherwise messages
    seconds: float  # to hand every message to the provider at the configured rate


def channel_rates(settings: Settings) -> dict[str, float]:
    """Messages (SMS: segments) a second each channel is allowed, shared by all workers."""
    return {
        "email": settings.email_rate_per_s,
        "sms": settings.sms_rate_per_s,
        "telegram": settings.telegram_rate_per_s,
        "push": settings.push_rate_per_s,
    }


def audience_estimate(
    session: Session, broadcast: Broadcast, settings: Settings, now: datetime | None = None
) -> list[ChannelReach]:
    """One ChannelReach per channel the notice would use, the largest first."""
    now = now or utcnow()
    locales = sorted(c.locale for c in broadcast.contents)
    quiet_ends = session.scalars(
        select(Resident.quiet_end).where(Resident.quiet_end.is_not(None)).distinct()
    ).all()
    lo, hi = session.execute(select(func.min(Resident.id), func.max(Resident.id))).one()
    if lo is None:
        return []
    rows = audience_rows(broadcast, lo, hi + 1, now, locales, quiet_ends, settings).subquery()
    counts = session.execute(
        select(
            rows.c.channel,
            rows.c.locale,
            func.count(),
            func.count(rows.c.not_before),  # not NULL: deferred to the end of quiet hours
        ).group_by(rows.c.channel, rows.c.locale)
    ).all()
    segments = _sms_segments(broadcast, settings.default_locale)
    rates = channel_rates(settings)
    reach: dict[str, list[int]] = {}
    for channel, locale, recipients, quiet in counts:
        per_message = max(1, segments.get(locale, 1)) if channel == "sms" else 1
        totals = reach.setdefault(channel, [0, 0, 0])
        totals[0] += recipients
        totals[1] += quiet
        totals[2] += recipients * per_message
    return sorted(
        (ChannelReach(ch, n, q, units, units / rates[ch]) for ch, (n, q, units) in reach.items()),
        key=lambda r: -r.recipients,
    )


def _sms_segments(broadcast: Broadcast, default_locale: str) -> dict[str, int]:
    return {
        p.locale: p.sms.segments
        for p in preview_broadcast(broadcast, default_locale)
        if p.channel == "sms" and p.sms is not None
    }
