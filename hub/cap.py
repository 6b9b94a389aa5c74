"""OASIS CAP 1.2: every public notice as an alert (one `info` block per language), and an alert
from another system (the civil-protection office) turned into an emergency draft for an approver.

Documents are checked against the official schema (schemas/CAP-v1.2.xsd, © OASIS Open 2010).
Incoming XML is parsed without DTDs, entities or network access, and one with a DOCTYPE is
refused outright: CAP never needs one, and an attacker's XXE or entity bomb always does."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from flask_babel import gettext as _
from lxml import etree
from lxml.builder import ElementMaker
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.broadcasts import PUBLISHED, NoticeDraft, create_broadcast
from hub.config import Settings
from hub.models import Area, Broadcast, BroadcastStatus, ChannelPolicy, Priority
from hub.open_data import notice_url, went_out_at, xml_text
from hub.staff import audit

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
NS = {"cap": CAP_NS}
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "CAP-v1.2.xsd"
MAX_ALERT_BYTES = 1_000_000
IMPORT_TOPIC = "emergencies"  # seeded by `hub seed kranj`

# A hub locale as a CAP language (RFC 3066 tag with a region, as CAP readers expect).
LANGUAGE_TAGS = {"sl": "sl-SI", "en": "en-US"}
# How urgent, severe and certain a notice of each priority is (CAP's urgency/severity/certainty).
ASSESSMENT = {
    Priority.EMERGENCY: ("Immediate", "Severe", "Observed"),
    Priority.NORMAL: ("Expected", "Minor", "Observed"),
    Priority.BULK: ("Future", "Minor", "Observed"),
}
# CAP's category by topic slug; any other topic is "Other".
CATEGORIES = {
    "emergencies": "Safety",
    "road-works": "Transport",
    "public-transport": "Transport",
    "water-supply": "Infra",
    "waste-collection": "Env",
}


class CapError(ValueError):
    """A CAP document the hub cannot take; the message says why, in one line."""


# -- export -----------------------------------------------------------------------------------


def cap_notice(session: Session, broadcast_id: int) -> Broadcast | None:
    """A notice that has a CAP document: one that has gone out (an Alert), or one cancelled
    after it had gone out (a Cancel, so readers withdraw it). Drafts and notices cancelled
    before they went out have none."""
    broadcast = session.get(Broadcast, broadcast_id)
    if broadcast is None:
        return None
    if broadcast.status in PUBLISHED:
        return broadcast
    if broadcast.status == BroadcastStatus.CANCELLED and broadcast.planned_at is not None:
        return broadcast
    return None


def alert_xml(broadcast: Broadcast, settings: Settings) -> bytes:
    """The notice as a CAP 1.2 alert: msgType Alert, or Cancel (referencing that Alert) once it
    has been cancelled."""
    cap = ElementMaker(namespace=CAP_NS, nsmap={None: CAP_NS})
    sender = _sender(settings)
    original = _identifier(sender, broadcast.id)
    original_sent = _cap_time(went_out_at(broadcast), settings.timezone)
    cancelled = broadcast.status == BroadcastStatus.CANCELLED
    header = [
        cap.identifier(f"{original}:cancel" if cancelled else original),
        cap.sender(sender),
        cap.sent(
            _cap_time(_finished_at(broadcast), settings.timezone) if cancelled else original_sent
        ),
        cap.status("Actual"),
        cap.msgType("Cancel" if cancelled else "Alert"),
        cap.scope("Public"),
    ]
    if cancelled:
        header.append(cap.references(f"{sender},{original},{original_sent}"))
    alert = cap.alert(
        *header, *(_info(cap, broadcast, settings, loc) for loc in _locales(broadcast, settings))
    )
    return etree.tostring(alert, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _sender(settings: Settings) -> str:
    return urlsplit(settings.base_url).hostname or "localhost"


def _identifier(sender: str, broadcast_id: int) -> str:
    return f"{sender}:notice:{broadcast_id}"


def _cap_time(moment: datetime, timezone: str) -> str:
    """CAP's form: local time with its offset, whole seconds (2026-03-01T10:00:00+01:00)."""
    return moment.astimezone(ZoneInfo(timezone)).replace(microsecond=0).isoformat()


def _finished_at(broadcast: Broadcast) -> datetime:
    return (broadcast.finished_at or broadcast.planned_at).replace(tzinfo=UTC)


def _locales(broadcast: Broadcast, settings: Settings) -> list[str]:
    """The notice's languages, the hub's default first."""
    have = {c.locale for c in broadcast.contents}
    return sorted(have, key=lambda loc: (loc != settings.default_locale, loc))


def _info(cap: ElementMaker, broadcast: Broadcast, settings: Settings, locale: str):
    content = next(c for c in broadcast.contents if c.locale == locale)
    urgency, severity, certainty = ASSESSMENT[broadcast.priority]
    cancelled = broadcast.status == BroadcastStatus.CANCELLED
    return cap.info(
        cap.language(LANGUAGE_TAGS.get(locale, locale)),
        cap.category(CATEGORIES.get(broadcast.topic.slug, "Other")),
        cap.event(xml_text(_name(broadcast.topic.names, locale, settings))),
        *([cap.responseType("AllClear")] if cancelled else []),
        cap.urgency(urgency),
        cap.severity(severity),
        cap.certainty(certainty),
        cap.senderName(settings.city_name),
        cap.headline(xml_text(content.title)),
        cap.description(xml_text(content.body)),
        # a cancelled notice's public page is gone
        *([] if cancelled else [cap.web(notice_url(settings, broadcast.id))]),
        *(
            cap.area(cap.areaDesc(xml_text(name)))
            for name in _area_names(broadcast, settings, locale)
        ),
    )


def _name(names: dict[str, str], locale: str, settings: Settings) -> str:
    return names.get(locale) or names[settings.default_locale]


def _area_names(broadcast: Broadcast, settings: Settings, locale: str) -> list[str]:
    """The notice's areas in `locale`; a notice for the whole city names the city."""
    return [_name(a.names, locale, settings) for a in broadcast.areas] or [settings.city_name]


# -- import -----------------------------------------------------------------------------------


@cache
def _schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMA_PATH)))


def _safe_parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def parse_alert(data: bytes) -> etree._Element:
    """A CAP 1.2 alert, parsed safely and valid against the schema; raises CapError."""
    if len(data) > MAX_ALERT_BYTES:
        raise CapError(_("the alert is larger than %(num)d bytes", num=MAX_ALERT_BYTES))
    try:
        root = etree.fromstring(data, _safe_parser())
    except etree.XMLSyntaxError as exc:
        raise CapError(_("not well-formed XML: %(reason)s", reason=exc.msg)) from None
    if root.getroottree().docinfo.doctype:
        raise CapError(_("a CAP alert must not have a DOCTYPE (DTDs and entities are refused)"))
    if root.tag != f"{{{CAP_NS}}}alert":
        raise CapError(
            _(
                "not a CAP 1.2 alert: the root element is %(found)s, expected alert in %(ns)s",
                found=root.tag,
                ns=CAP_NS,
            )
        )
    schema = _schema()
    if not schema.validate(root):
        error = schema.error_log[0]
        raise CapError(
            _(
                "not a valid CAP 1.2 alert: line %(line)d: %(reason)s",
                line=error.line,
                reason=error.message,
            )
        )
    return root


def draft_from_alert(session: Session, alert: etree._Element, settings: Settings) -> NoticeDraft:
    """An emergency notice (topic IMPORT_TOPIC, every channel) with the alert's texts per
    language and its areas; raises CapError."""
    _require(alert, "cap:status", "Actual", _("only alerts with status Actual can be imported"))
    _require(alert, "cap:scope", "Public", _("only alerts with scope Public can be imported"))
    if alert.findtext("cap:msgType", namespaces=NS) not in ("Alert", "Update"):
        raise CapError(_("only Alert and Update messages can be imported"))
    infos = _infos_by_locale(alert, settings.locales)
    titles = {locale: _title(info) for locale, info in infos.items()}
    return NoticeDraft(
        title=titles.get(settings.default_locale) or next(iter(titles.values())),
        topic=IMPORT_TOPIC,
        areas=_area_slugs(session, infos.values(), settings.city_name),
        priority=Priority.EMERGENCY,
        channel_policy=ChannelPolicy.ALL_CHANNELS,
        bodies={locale: _body(info) for locale, info in infos.items()},
        titles=titles,
    )


def import_alert(session: Session, data: bytes, *, actor: str, settings: Settings) -> Broadcast:
    """Store a CAP alert as an emergency draft (an approver starts it); raises CapError or
    BroadcastError, storing nothing."""
    alert = parse_alert(data)
    draft = draft_from_alert(session, alert, settings)
    broadcast = create_broadcast(
        session, draft, created_by=actor, default_locale=settings.default_locale
    )
    audit(
        session,
        actor,
        "cap.import",
        f"broadcast:{broadcast.id}",
        identifier=alert.findtext("cap:identifier", namespaces=NS),
        sender=alert.findtext("cap:sender", namespaces=NS),
        areas=list(draft.areas),
    )
    return broadcast


def _require(alert: etree._Element, path: str, wanted: str, message: str) -> None:
    if alert.findtext(path, namespaces=NS) != wanted:
        raise CapError(message)


def _infos_by_locale(alert: etree._Element, locales: tuple[str, ...]) -> dict:
    """The info blocks in the hub's languages (others are skipped), one per language."""
    infos = {}
    for info in alert.findall("cap:info", NS):
        # CAP's default language is en-US; sl-SI, sl and SL all mean sl.
        tag = info.findtext("cap:language", default="en-US", namespaces=NS)
        locale = tag.split("-")[0].lower()
        if locale not in locales:
            continue
        if locale in infos:
            raise CapError(_("the alert has two info blocks in %(locale)s", locale=locale))
        infos[locale] = info
    if not infos:
        raise CapError(_("the alert has no info block in %(locales)s", locales=", ".join(locales)))
    return infos


def _title(info: etree._Element) -> str:
    raw = info.findtext("cap:headline", namespaces=NS) or info.findtext("cap:event", namespaces=NS)
    return " ".join(raw.split())  # a headline may wrap; a title is one line


def _body(info: etree._Element) -> str:
    parts = (info.findtext(f"cap:{name}", namespaces=NS) for name in ("description", "instruction"))
    return "\n\n".join(part.strip() for part in parts if part and part.strip())


def _area_slugs(session: Session, infos, city_name: str) -> tuple[str, ...]:
    """Areas by areaDesc: an area's slug or its name in any language (case and spacing do not
    matter); the city's name means the whole city (no areas). Unknown names: CapError."""
    known: dict[str, str] = {}
    for area in session.scalars(select(Area)):
        for name in (area.slug, *area.names.values()):
            known[_key(name)] = area.slug
    wanted = [
        desc for info in infos for desc in info.xpath("cap:area/cap:areaDesc/text()", namespaces=NS)
    ]
    if not wanted:
        raise CapError(_("the alert names no area (areaDesc)"))
    if any(_key(desc) == _key(city_name) for desc in wanted):
        return ()
    unknown = sorted({desc.strip() for desc in wanted if _key(desc) not in known})
    if unknown:
        raise CapError(_("unknown areas in the alert: %(areas)s", areas=", ".join(unknown)))
    return tuple(dict.fromkeys(known[_key(desc)] for desc in wanted))


def _key(name: str) -> str:
    return " ".join(name.split()).casefold()
