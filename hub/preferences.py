"""A resident's choices, as planning reads them: topics and areas (Subscription rows, one per
topic in each chosen area), their local community (Resident.area_id: emergencies there reach
them whatever they follow), quiet hours (Resident.quiet_start/end; emergencies ignore them) and
language (Resident.locale: the language of the notices they get), and for any topic they follow
their own channel order (ResidentTopicChannel rows, read by hub.channel_order)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from flask_babel import gettext as _
from flask_babel import ngettext
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from hub.channel_order import channels_in_effect, usable
from hub.clock import utcnow
from hub.contacts import InvalidAddress, parse_quiet_hours
from hub.i18n import CHANNEL_LABELS
from hub.models import (
    CHANNELS,
    Area,
    ConsentRecord,
    ContactPoint,
    Resident,
    ResidentTopicChannel,
    Subscription,
    Topic,
)
from hub.portal import PortalError

MAX_NAME = 200


@dataclass
class Preferences:
    name: str = ""
    locale: str = ""
    area_id: int | None = None  # the local community they live in
    topic_ids: set[int] = field(default_factory=set)
    other_area_ids: set[int] = field(default_factory=set)  # followed besides their own
    quiet_start: str = ""  # "22:00", or "" for none
    quiet_end: str = ""


def preferences_of(session: Session, resident_id: int) -> Preferences:
    resident = session.get(Resident, resident_id)
    pairs = session.execute(
        select(Subscription.topic_id, Subscription.area_id).where(
            Subscription.resident_id == resident_id
        )
    ).all()
    return Preferences(
        name=resident.name,
        locale=resident.locale,
        area_id=resident.area_id,
        topic_ids={topic for topic, _ in pairs},
        other_area_ids={area for _, area in pairs} - {resident.area_id},
        quiet_start=clock_time(resident.quiet_start),
        quiet_end=clock_time(resident.quiet_end),
    )


def save_preferences(
    session: Session,
    resident_id: int,
    wanted: Preferences,
    locales: tuple[str, ...],
    now: datetime | None = None,
) -> None:
    """Check every choice, then store them all; raises PortalError and changes nothing."""
    now = now or utcnow()
    name = wanted.name.strip()
    if len(name) > MAX_NAME:
        raise PortalError(
            ngettext(
                "The name is too long (at most %(num)d character).",
                "The name is too long (at most %(num)d characters).",
                MAX_NAME,
            )
        )
    if wanted.locale not in locales:
        raise PortalError(_("Choose one of the languages offered."))
    areas = _known(session, Area, {wanted.area_id, *wanted.other_area_ids} - {None})
    topics = _known(session, Topic, wanted.topic_ids)
    if topics and not areas:
        raise PortalError(_("Choose your local community or at least one area to follow."))
    quiet = _quiet_hours(wanted.quiet_start, wanted.quiet_end)
    resident = session.get(Resident, resident_id)
    resident.name, resident.locale, resident.area_id = name, wanted.locale, wanted.area_id
    resident.quiet_start, resident.quiet_end = quiet or (None, None)
    _record_topic_consent(session, resident_id, topics, now)
    session.execute(delete(Subscription).where(Subscription.resident_id == resident_id))
    forget_topic_channels(session, resident_id, keep=topics)
    rows = [
        {"resident_id": resident_id, "topic_id": t, "area_id": a} for t in topics for a in areas
    ]
    if rows:
        session.execute(insert(Subscription), rows)


@dataclass
class TopicChannels:
    """A followed topic's channels: the resident's own order ([] = their usual order) and
    what a notice on it would try now."""

    topic: Topic
    own: list[str]
    in_effect: list[str]


def topic_channels_of(session: Session, resident_id: int) -> list[TopicChannels]:
    """One entry per topic the resident follows, by slug."""
    own = _own_orders(session, resident_id)
    topics = session.scalars(
        select(Topic)
        .where(
            Topic.id.in_(
                select(Subscription.topic_id).where(Subscription.resident_id == resident_id)
            )
        )
        .order_by(Topic.slug)
    )
    return [
        TopicChannels(t, own.get(t.id, []), channels_in_effect(session, resident_id, t.id))
        for t in topics
    ]


def own_orders_by_slug(session: Session, resident_id: int) -> dict[str, list[str]]:
    """The resident's own channel orders, {topic slug: channels, first first}."""
    slugs = dict(session.execute(select(Topic.id, Topic.slug)).all())
    return {slugs[t]: channels for t, channels in _own_orders(session, resident_id).items()}


def _own_orders(session: Session, resident_id: int) -> dict[int, list[str]]:
    rows = session.execute(
        select(ResidentTopicChannel.topic_id, ResidentTopicChannel.channel)
        .where(ResidentTopicChannel.resident_id == resident_id)
        .order_by(ResidentTopicChannel.topic_id, ResidentTopicChannel.rank)
    )
    orders: dict[int, list[str]] = {}
    for topic_id, channel in rows:
        orders.setdefault(topic_id, []).append(channel)
    return orders


def usable_channels(session: Session, resident_id: int) -> list[str]:
    """The channels the resident has an address notices can go to, in their usual order."""
    rows = session.scalars(
        select(ContactPoint.channel)
        .where(ContactPoint.resident_id == resident_id, usable())
        .order_by(ContactPoint.rank, ContactPoint.id)
    )
    return list(dict.fromkeys(rows))


def save_topic_channels(
    session: Session, resident_id: int, topic_id: int, channels: list[str] | None
) -> None:
    """Store the resident's own channel order for a topic they follow (None or []: back to
    their usual order). Raises PortalError and changes nothing when a channel is unknown,
    repeated or has no confirmed address, or the topic is not followed."""
    followed = session.scalar(
        select(Subscription.topic_id)
        .where(Subscription.resident_id == resident_id, Subscription.topic_id == topic_id)
        .limit(1)
    )
    if followed is None:
        raise PortalError(_("You do not follow this topic. Choose it under your topics first."))
    channels = channels or []
    if any(c not in CHANNELS for c in channels):
        raise PortalError(_("One of the channels chosen does not exist."))
    if len(set(channels)) != len(channels):
        raise PortalError(_("Give each channel its own place in the order."))
    reachable = usable_channels(session, resident_id)
    missing = [c for c in channels if c not in reachable]
    if missing:
        raise PortalError(
            _(
                "You have no confirmed address for %(channel)s. Add one under your addresses"
                " first.",
                channel=str(CHANNEL_LABELS[missing[0]]),
            )
        )
    forget_topic_channels(session, resident_id, only=topic_id)
    if channels:
        session.execute(
            insert(ResidentTopicChannel),
            [
                {"resident_id": resident_id, "topic_id": topic_id, "channel": c, "rank": rank}
                for rank, c in enumerate(channels, start=1)
            ],
        )


def forget_topic_channels(
    session: Session, resident_id: int, *, only: int | None = None, keep: set[int] | None = None
) -> None:
    """Delete the resident's own orders: of one topic, or of every topic not kept."""
    query = delete(ResidentTopicChannel).where(ResidentTopicChannel.resident_id == resident_id)
    if only is not None:
        query = query.where(ResidentTopicChannel.topic_id == only)
    if keep is not None:
        query = query.where(ResidentTopicChannel.topic_id.not_in(keep))
    session.execute(query)


def choices(session: Session) -> tuple[list[Area], list[Topic]]:
    """Every area and topic a resident can choose, by slug."""
    areas = list(session.scalars(select(Area).order_by(Area.slug)))
    topics = list(session.scalars(select(Topic).order_by(Topic.slug)))
    return areas, topics


def _known(session: Session, model, ids: set) -> set[int]:
    found = set(session.scalars(select(model.id).where(model.id.in_(ids)))) if ids else set()
    if found != ids:
        if model is Area:
            raise PortalError(_("One of the areas chosen does not exist."))
        raise PortalError(_("One of the topics chosen does not exist."))
    return found


def _quiet_hours(start: str, end: str) -> tuple[int, int] | None:
    start, end = start.strip(), end.strip()
    if not start and not end:
        return None
    if not start or not end:
        raise PortalError(_("Give both when quiet hours start and when they end, or neither."))
    try:
        return parse_quiet_hours(f"{start}-{end}")
    except InvalidAddress:
        raise PortalError(
            _("Quiet hours need two different times of day, like 22:00 and 07:00.")
        ) from None


def _record_topic_consent(session: Session, resident_id: int, topics: set[int], now) -> None:
    """A consent record for each topic started or stopped (what the law asks us to keep)."""
    before = set(
        session.scalars(
            select(Subscription.topic_id).where(Subscription.resident_id == resident_id).distinct()
        )
    )
    changed = (topics - before) | (before - topics)
    if not changed:
        return
    slugs = dict(session.execute(select(Topic.id, Topic.slug).where(Topic.id.in_(changed))).all())
    for topic_id in sorted(changed):
        session.add(
            ConsentRecord(
                resident_id=resident_id,
                action="granted" if topic_id in topics else "withdrawn",
                scope=f"topic:{slugs[topic_id]}",
                source="portal",
                created_at=now,
            )
        )


def clock_time(minutes: int | None) -> str:
    return "" if minutes is None else f"{minutes // 60:02d}:{minutes % 60:02d}"
