"""A resident's choices, as planning reads them: topics and areas (Subscription rows, one per
topic in each chosen area), their local community (Resident.area_id: emergencies there reach
them whatever they follow), quiet hours (Resident.quiet_start/end; emergencies ignore them) and
language (Resident.locale: the language of the notices they get)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from flask_babel import gettext as _
from flask_babel import ngettext
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from hub.clock import utcnow
from hub.contacts import InvalidAddress, parse_quiet_hours
from hub.models import Area, ConsentRecord, Resident, Subscription, Topic
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
    rows = [
        {"resident_id": resident_id, "topic_id": t, "area_id": a} for t in topics for a in areas
    ]
    if rows:
        session.execute(insert(Subscription), rows)


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
