"""Public notices as open data: the list anyone may read (by topic and area, newest first) and
its Atom feed (RFC 4287). Only notices that have gone out are public (broadcasts.PUBLISHED)."""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from flask_babel import force_locale
from flask_babel import gettext as _
from lxml import etree
from lxml.builder import ElementMaker
from sqlalchemy import exists, func, or_, select
from sqlalchemy.orm import Session, selectinload

from hub.broadcasts import PUBLISHED
from hub.clock import utcnow
from hub.config import Settings
from hub.models import Area, Broadcast, Priority, Topic, broadcast_areas
from hub.rendering import content_for

PAGE_SIZE = 20
FEED_SIZE = 50
ATOM_NS = "http://www.w3.org/2005/Atom"
XML_NS = "http://www.w3.org/XML/1998/namespace"
# Characters XML 1.0 cannot carry at all (lxml refuses them): dropped, not escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class FilterError(ValueError):
    """An unknown topic or area in a filter; the message names it."""


class NoSuchPage(LookupError):
    """A page number past the last page."""


@dataclass(frozen=True)
class NoticeFilter:
    topic: Topic | None = None
    area: Area | None = None

    def params(self) -> dict[str, str]:
        """The filter as query parameters (links to other pages keep it)."""
        chosen = {"topic": self.topic, "area": self.area}
        return {name: row.slug for name, row in chosen.items() if row is not None}


@dataclass(frozen=True)
class NoticePage:
    notices: list[Broadcast]
    number: int
    pages: int
    total: int


def xml_text(text: str) -> str:
    return _NOT_XML.sub("", text)


def notice_filter(session: Session, topic: str | None, area: str | None) -> NoticeFilter:
    """The filter for these slugs (empty or None: no filter); raises FilterError."""
    found_topic = found_area = None
    if topic:
        found_topic = session.scalar(select(Topic).where(Topic.slug == topic))
        if found_topic is None:
            raise FilterError(_("unknown topic %(topic)s", topic=topic))
    if area:
        found_area = session.scalar(select(Area).where(Area.slug == area))
        if found_area is None:
            raise FilterError(_("unknown area %(area)s", area=area))
    return NoticeFilter(found_topic, found_area)


def filter_choices(session: Session) -> tuple[list[Topic], list[Area]]:
    """Every topic and area, for the filter form."""
    return (
        list(session.scalars(select(Topic).order_by(Topic.slug))),
        list(session.scalars(select(Area).order_by(Area.slug))),
    )


def _public(chosen: NoticeFilter):
    query = select(Broadcast).where(Broadcast.status.in_(PUBLISHED))
    if chosen.topic is not None:
        query = query.where(Broadcast.topic_id == chosen.topic.id)
    if chosen.area is not None:
        # A notice for the whole city (no areas) concerns every area too.
        in_area = select(broadcast_areas.c.broadcast_id).where(
            broadcast_areas.c.area_id == chosen.area.id
        )
        whole_city = ~exists().where(broadcast_areas.c.broadcast_id == Broadcast.id)
        query = query.where(or_(Broadcast.id.in_(in_area), whole_city))
    return query


def public_notices(
    session: Session, chosen: NoticeFilter, page: int = 1, per_page: int = PAGE_SIZE
) -> NoticePage:
    """One page of the notices that have gone out, newest first; raises NoSuchPage."""
    total = session.scalar(select(func.count()).select_from(_public(chosen).subquery()))
    pages = max(1, math.ceil(total / per_page))
    if not 1 <= page <= pages:
        raise NoSuchPage(page)
    notices = session.scalars(
        _public(chosen)
        .options(
            selectinload(Broadcast.contents),
            selectinload(Broadcast.areas),
            selectinload(Broadcast.topic),
        )
        .order_by(Broadcast.planned_at.desc(), Broadcast.id.desc())
        .offset((page - 1) * per_page)
        .limit(per_page)
    )
    return NoticePage(list(notices), page, pages, total)


def went_out_at(broadcast: Broadcast) -> datetime:
    """When the notice went out (planning finished), as an aware UTC time."""
    return (broadcast.planned_at or broadcast.created_at).replace(tzinfo=UTC, microsecond=0)


def notice_url(settings: Settings, broadcast_id: int) -> str:
    return f"{settings.base_url}/notices/{broadcast_id}"


def cap_url(settings: Settings, broadcast_id: int) -> str:
    return f"{settings.base_url}/feeds/cap/{broadcast_id}.xml"


def feed_url(settings: Settings, locale: str, chosen: NoticeFilter) -> str:
    return f"{settings.base_url}/feeds/notices.atom?" + urlencode(
        {"lang": locale, **chosen.params()}
    )


def _stable_id(url: str) -> str:
    """A URN that stays the same for the same thing however often the feed is built."""
    return uuid.uuid5(uuid.NAMESPACE_URL, url).urn


def _now_utc() -> datetime:
    return utcnow().replace(tzinfo=UTC, microsecond=0)


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def atom_feed(session: Session, settings: Settings, locale: str, chosen: NoticeFilter) -> bytes:
    """The newest FEED_SIZE public notices as an Atom feed in `locale` (a notice without a text
    in that locale appears in the default one)."""
    notices = public_notices(session, chosen, per_page=FEED_SIZE).notices
    atom = ElementMaker(namespace=ATOM_NS, nsmap={None: ATOM_NS})
    self_url = feed_url(settings, locale, chosen)
    with force_locale(locale):
        feed = atom.feed(
            atom.id(_stable_id(self_url)),
            atom.title(_("Public notices: %(city)s", city=settings.city_name)),
            atom.updated(_rfc3339(went_out_at(notices[0]) if notices else _now_utc())),
            atom.author(atom.name(settings.city_name)),
            atom.link(rel="self", type="application/atom+xml", href=self_url),
            atom.link(rel="alternate", type="text/html", href=f"{settings.base_url}/notices"),
            *(_entry(atom, settings, locale, notice) for notice in notices),
        )
    feed.set(f"{{{XML_NS}}}lang", locale)
    return etree.tostring(feed, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _entry(atom: ElementMaker, settings: Settings, locale: str, notice: Broadcast):
    content = content_for(notice, locale, settings.default_locale)
    title = content.title
    if notice.priority == Priority.EMERGENCY:
        title = _("EMERGENCY: %(title)s", title=title)
    topic_name = notice.topic.names.get(locale) or notice.topic.names[settings.default_locale]
    when = _rfc3339(went_out_at(notice))
    page = notice_url(settings, notice.id)
    entry = atom.entry(
        atom.id(_stable_id(f"{page}?lang={locale}")),
        atom.title(xml_text(title)),
        atom.updated(when),
        atom.published(when),
        atom.link(rel="alternate", type="text/html", href=page),
        atom.link(rel="alternate", type="application/cap+xml", href=cap_url(settings, notice.id)),
        atom.category(term=notice.topic.slug, label=topic_name),
        atom.content(xml_text(content.body), type="text"),
    )
    if notice.priority == Priority.EMERGENCY:
        entry.insert(6, atom.category(term=Priority.EMERGENCY, label=_("Emergency")))
    entry.find(f"{{{ATOM_NS}}}content").set(f"{{{XML_NS}}}lang", content.locale)
    return entry
