"""Which of a resident's addresses a notice on a topic tries, and in what order: the one
source of truth for planning (hub.planning), for the fall-back after a dead address
(hub.delivery.add_fallback) and for what the portal shows as in effect (hub.preferences).

A resident's general order is the rank of their contact points. For one topic they may
replace it with a list of channels of their own (resident_topic_channels): notices on that
topic then use only those channels, in that order (several addresses on one channel keep
their general order among themselves). Only usable addresses count: verified, active, not
opted out, on a channel the hub sends on.

Emergencies are always delivered: they follow the topic's own list too, but when none of its
channels has a usable address left they go by the general order instead."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import aliased

from hub.adapters import CHANNEL_ADAPTERS
from hub.models import ContactPoint, ResidentTopicChannel

ResidentFilter = Callable[[ColumnElement], ColumnElement]  # resident id column -> condition


def usable(cp=ContactPoint) -> ColumnElement:
    """An address a notice may go to now."""
    return and_(
        cp.verified.is_(True),
        cp.active.is_(True),
        cp.opted_out_at.is_(None),
        cp.channel.in_(tuple(CHANNEL_ADAPTERS)),
    )


def ranked_contact_points(
    topic_id: int, *, emergency: bool, residents: ResidentFilter, per_channel: bool = False
) -> Select:
    """SELECT id, resident_id, channel, rn: the usable contact points of the residents that a
    notice on the topic may use, rn = 1 for the first to try (per resident, or per resident
    and channel when every channel is sent to). Set-based: one query for any range."""
    cp, own = ContactPoint, ResidentTopicChannel
    overridden = _overridden(topic_id, emergency, residents).subquery()
    partition = [cp.resident_id, cp.channel] if per_channel else [cp.resident_id]
    # Within one resident either every row has its own rank (overridden) or none has.
    order = (own.rank, cp.rank, cp.id)
    return (
        select(
            cp.id,
            cp.resident_id,
            cp.channel,
            func.row_number().over(partition_by=partition, order_by=order).label("rn"),
        )
        .outerjoin(
            own,
            and_(
                own.resident_id == cp.resident_id,
                own.topic_id == topic_id,
                own.channel == cp.channel,
            ),
        )
        .outerjoin(overridden, overridden.c.resident_id == cp.resident_id)
        .where(
            usable(cp),
            residents(cp.resident_id),
            or_(own.rank.is_not(None), overridden.c.resident_id.is_(None)),
        )
    )


def _overridden(topic_id: int, emergency: bool, residents: ResidentFilter) -> Select:
    """The residents whose own list for the topic decides: anyone with one, except that an
    emergency ignores a list none of whose channels has a usable address."""
    own = ResidentTopicChannel
    query = select(own.resident_id).where(own.topic_id == topic_id, residents(own.resident_id))
    if emergency:
        cp = aliased(ContactPoint)
        query = query.join(
            cp, and_(cp.resident_id == own.resident_id, cp.channel == own.channel)
        ).where(usable(cp))
    return query.distinct()


def channels_in_effect(session, resident_id: int, topic_id: int) -> list[str]:
    """The channels a normal notice on the topic would try for the resident, first first."""
    ranked = ranked_contact_points(
        topic_id, emergency=False, residents=lambda column: column == resident_id
    ).subquery()
    rows = session.execute(select(ranked.c.channel).order_by(ranked.c.rn)).scalars()
    return list(dict.fromkeys(rows))
