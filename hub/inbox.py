"""The agents' side of conversations: the inbox list (filters, waiting time, keyset pages) and
what an agent does to a conversation (assign, label, note, snooze, resolve, prioritise, use a
canned answer). Every function takes a session; the web views and the API call the same."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime

from flask_babel import gettext as _
from sqlalchemy import and_, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session

from hub.clock import utcnow
from hub.conversations import ConversationError, messages_of
from hub.models import (
    CONVERSATION_PRIORITIES,
    Area,
    Broadcast,
    BroadcastContent,
    CannedResponse,
    ContactPoint,
    Conversation,
    ConversationLabel,
    ConversationStatus,
    Message,
    MessageDirection,
    Resident,
    Role,
    StaffUser,
    Subscription,
    Topic,
)

PAGE_SIZE = 50
MAX_NOTE_CHARS = 10_000


@dataclass(frozen=True)
class InboxFilter:
    status: str | None = ConversationStatus.OPEN  # None: any
    assignee_id: int | None = None
    unassigned: bool = False
    channel: str | None = None
    label: str | None = None
    topic: str | None = None  # slug of the notice's topic the conversation answers
    unread: bool = False
    text: str | None = None  # in any message of the conversation


@dataclass(frozen=True)
class InboxPage:
    conversations: list[Conversation]
    next_cursor: str | None  # pass back as `after` for the next page


def inbox(
    session: Session, filters: InboxFilter, after: str | None = None, limit: int = PAGE_SIZE
) -> InboxPage:
    """Conversations that wait longest first (those not waiting last, newest first among
    them), keyset-paginated: a page costs the same however deep it is."""
    query = select(Conversation).where(*_conditions(filters))
    if after:
        query = query.where(_after(after))
    query = query.order_by(
        Conversation.waiting_since.is_(None),
        Conversation.waiting_since,
        Conversation.id,
    ).limit(limit + 1)
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return InboxPage(rows, _cursor(rows[-1]) if more and rows else None)


def _conditions(f: InboxFilter) -> list:
    if f.status is not None and f.status not in ConversationStatus.ALL:
        raise ConversationError(_("unknown status %(value)s", value=f.status))
    conditions = []
    if f.status is not None:
        conditions.append(Conversation.status == f.status)
    if f.assignee_id is not None:
        conditions.append(Conversation.assignee_id == f.assignee_id)
    if f.unassigned:
        conditions.append(Conversation.assignee_id.is_(None))
    if f.channel:
        conditions.append(Conversation.channel == f.channel)
    if f.unread:
        conditions.append(Conversation.unread > 0)
    if f.label:
        conditions.append(
            exists().where(
                ConversationLabel.conversation_id == Conversation.id,
                ConversationLabel.label == f.label,
            )
        )
    if f.topic:
        conditions.append(
            Conversation.broadcast_id.in_(
                select(Broadcast.id).join(Topic).where(Topic.slug == f.topic)
            )
        )
    if f.text and f.text.strip():
        pattern = f"%{_escape_like(f.text.strip())}%"
        conditions.append(
            exists().where(
                Message.conversation_id == Conversation.id,
                Message.body.ilike(pattern, escape="\\"),
            )
        )
    return conditions


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _cursor(conversation: Conversation) -> str:
    waiting = conversation.waiting_since.isoformat() if conversation.waiting_since else None
    raw = json.dumps([waiting, conversation.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(cursor: str):
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        waiting, last_id = json.loads(raw)
        waiting = datetime.fromisoformat(waiting) if waiting is not None else None
        last_id = int(last_id)
    except (ValueError, TypeError):
        raise ConversationError(_("the page cursor is not valid")) from None
    if waiting is None:  # in the tail of conversations not waiting
        return and_(Conversation.waiting_since.is_(None), Conversation.id > last_id)
    return or_(
        Conversation.waiting_since.is_(None),
        Conversation.waiting_since > waiting,
        and_(Conversation.waiting_since == waiting, Conversation.id > last_id),
    )


# -- what an agent does to a conversation ------------------------------------------------------


def _get(session: Session, conversation_id: int) -> Conversation:
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        raise ConversationError(_("no conversation %(id)d", id=conversation_id))
    return conversation


def assign(session: Session, conversation_id: int, staff_id: int | None) -> None:
    conversation = _get(session, conversation_id)
    if staff_id is not None and session.get(StaffUser, staff_id) is None:
        raise ConversationError(_("no staff user %(id)d", id=staff_id))
    conversation.assignee_id = staff_id


def set_labels(session: Session, conversation_id: int, labels: list[str]) -> None:
    _get(session, conversation_id)
    cleaned = sorted({label.strip().lower() for label in labels if label.strip()})
    if any(len(label) > 64 for label in cleaned):
        raise ConversationError(_("a label has at most 64 characters"))
    session.execute(
        delete(ConversationLabel).where(ConversationLabel.conversation_id == conversation_id)
    )
    session.add_all(
        ConversationLabel(conversation_id=conversation_id, label=label) for label in cleaned
    )
    session.flush()


def labels_of(session: Session, conversation_id: int) -> list[str]:
    return list(
        session.scalars(
            select(ConversationLabel.label)
            .where(ConversationLabel.conversation_id == conversation_id)
            .order_by(ConversationLabel.label)
        )
    )


def add_note(session: Session, conversation_id: int, text: str, author_id: int) -> Message:
    """A private note for the other agents: never sent to anyone."""
    _get(session, conversation_id)
    if not text.strip():
        raise ConversationError(_("the note is empty"))
    if len(text.strip()) > MAX_NOTE_CHARS:
        raise ConversationError(_("a note has at most %(num)d characters", num=MAX_NOTE_CHARS))
    note = Message(
        conversation_id=conversation_id,
        direction=MessageDirection.NOTE,
        body=text.strip(),
        author_id=author_id,
        status="note",
        created_at=utcnow(),
    )
    session.add(note)
    session.flush()
    return note


def snooze(session: Session, conversation_id: int, until: datetime | None) -> None:
    """Out of the open list until `until` (the sweeper wakes it) or, with None, until the
    resident writes again."""
    if until is not None and until <= utcnow():
        raise ConversationError(_("snooze until a time in the future"))
    conversation = _get(session, conversation_id)
    conversation.status, conversation.snoozed_until = ConversationStatus.SNOOZED, until


def wake_snoozed(session: Session, now: datetime | None = None) -> int:
    """Snoozed conversations whose time has come are open again (the sweeper calls this)."""
    return session.execute(
        update(Conversation)
        .where(
            Conversation.status == ConversationStatus.SNOOZED,
            Conversation.snoozed_until <= (now or utcnow()),
        )
        .values(status=ConversationStatus.OPEN, snoozed_until=None)
    ).rowcount


def resolve(session: Session, conversation_id: int) -> None:
    conversation = _get(session, conversation_id)
    conversation.status = ConversationStatus.RESOLVED
    conversation.resolved_at = utcnow()
    conversation.waiting_since, conversation.unread, conversation.snoozed_until = None, 0, None


def set_priority(session: Session, conversation_id: int, priority: str) -> None:
    if priority not in CONVERSATION_PRIORITIES:
        raise ConversationError(_("unknown priority %(value)s", value=priority))
    _get(session, conversation_id).priority = priority


# -- canned answers ----------------------------------------------------------------------------


def save_canned(session: Session, shortcut: str, locale: str, body: str) -> CannedResponse:
    shortcut = shortcut.strip().lower()
    if not shortcut or not body.strip():
        raise ConversationError(_("a canned answer needs a shortcut and a text"))
    canned = session.scalar(
        select(CannedResponse).where(
            CannedResponse.shortcut == shortcut, CannedResponse.locale == locale
        )
    )
    if canned is None:
        canned = CannedResponse(shortcut=shortcut, locale=locale, body=body.strip())
        session.add(canned)
    else:
        canned.body = body.strip()
    session.flush()
    return canned


def canned_text(
    session: Session,
    shortcut: str,
    conversation_id: int,
    agent_name: str,
    default_locale: str,
) -> str:
    """The canned answer in the resident's language (else the hub's), its {name}, {notice}
    and {agent} filled in. Unknown placeholders stay as written."""
    conversation = _get(session, conversation_id)
    resident = session.get(Resident, conversation.resident_id) if conversation.resident_id else None
    locale = resident.locale if resident else default_locale
    answers = {
        c.locale: c.body
        for c in session.scalars(
            select(CannedResponse).where(CannedResponse.shortcut == shortcut.strip().lower())
        )
    }
    body = answers.get(locale) or answers.get(default_locale)
    if body is None:
        raise ConversationError(_("no canned answer %(shortcut)s", shortcut=shortcut))
    values = {
        "name": resident.name if resident else "",
        "agent": agent_name,
        "notice": _notice_title(session, conversation.broadcast_id, locale),
    }
    for key, value in values.items():
        body = body.replace("{" + key + "}", value)
    return body


def _notice_title(session: Session, broadcast_id: int | None, locale: str) -> str:
    if broadcast_id is None:
        return ""
    titles = dict(
        session.execute(
            select(BroadcastContent.locale, BroadcastContent.title).where(
                BroadcastContent.broadcast_id == broadcast_id
            )
        ).all()
    )
    return titles.get(locale) or next(iter(titles.values()), "")


# -- unknown senders ---------------------------------------------------------------------------


def link_to_resident(session: Session, conversation_id: int, resident_id: int) -> None:
    """An unknown sender is a known resident: the address becomes theirs (verified: they
    wrote from it) and the conversation theirs."""
    conversation = _get(session, conversation_id)
    if session.get(Resident, resident_id) is None:
        raise ConversationError(_("no resident %(id)d", id=resident_id))
    owner = session.scalar(
        select(ContactPoint).where(
            ContactPoint.channel == conversation.channel,
            ContactPoint.address == conversation.address,
        )
    )
    if owner is not None and owner.resident_id != resident_id:
        raise ConversationError(_("this address belongs to another resident"))
    if owner is None:
        rank = session.scalar(
            select(func.coalesce(func.max(ContactPoint.rank), 0)).where(
                ContactPoint.resident_id == resident_id
            )
        )
        session.add(
            ContactPoint(
                resident_id=resident_id,
                channel=conversation.channel,
                address=conversation.address,
                rank=rank + 1,
                verified=True,
            )
        )
    conversation.resident_id = resident_id
    session.flush()


def create_resident_from(
    session: Session, conversation_id: int, name: str, locale: str, area_slug: str | None
) -> int:
    """A new resident from an unknown sender's conversation (no topics yet: they choose
    them in the portal); returns the resident's id."""
    conversation = _get(session, conversation_id)
    if conversation.resident_id is not None:
        raise ConversationError(_("the conversation already has a resident"))
    if not name.strip():
        raise ConversationError(_("a resident needs a name"))
    area_id = None
    if area_slug:
        area_id = session.scalar(select(Area.id).where(Area.slug == area_slug))
        if area_id is None:
            raise ConversationError(_("unknown area %(area)s", area=area_slug))
    resident = Resident(name=name.strip()[:200], locale=locale, area_id=area_id)
    session.add(resident)
    session.flush()
    link_to_resident(session, conversation_id, resident.id)
    return resident.id


# -- what the inbox pages show (a few queries per page, never one per row) ---------------------

ANSWERABLE_CHANNELS = ("sms", "telegram", "email", "web")  # hub.outbound answers on these
FIRST_LINE_CHARS = 120


@dataclass(frozen=True)
class Summary:
    """What the list shows of a conversation besides its own columns."""

    name: str | None  # the resident's; None for an unknown sender
    first_line: str  # of the last message to or from the resident (notes are not shown)
    labels: list[str]


def summaries(session: Session, conversations: list[Conversation]) -> dict[int, Summary]:
    ids = [c.id for c in conversations]
    resident_ids = {c.resident_id for c in conversations if c.resident_id is not None}
    names = dict(
        session.execute(
            select(Resident.id, Resident.name).where(Resident.id.in_(resident_ids))
        ).all()
    )
    last_ids = (
        select(func.max(Message.id))
        .where(Message.conversation_id.in_(ids), Message.direction != MessageDirection.NOTE)
        .group_by(Message.conversation_id)
    )
    bodies = dict(
        session.execute(
            select(Message.conversation_id, Message.body).where(Message.id.in_(last_ids))
        ).all()
    )
    labels: dict[int, list[str]] = {}
    for conversation_id, label in session.execute(
        select(ConversationLabel.conversation_id, ConversationLabel.label)
        .where(ConversationLabel.conversation_id.in_(ids))
        .order_by(ConversationLabel.label)
    ):
        labels.setdefault(conversation_id, []).append(label)
    return {
        c.id: Summary(
            names.get(c.resident_id), first_line(bodies.get(c.id, "")), labels.get(c.id, [])
        )
        for c in conversations
    }


def first_line(text: str) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= FIRST_LINE_CHARS else line[: FIRST_LINE_CHARS - 1] + "…"


@dataclass(frozen=True)
class ResidentProfile:
    resident: Resident
    contact_points: list[ContactPoint]
    subscriptions: list[tuple[dict, dict]]  # (topic names, area names), each {locale: name}


@dataclass(frozen=True)
class ConversationDetails:
    """Everything the conversation page shows, read in one session."""

    conversation: Conversation
    messages: list[Message]
    authors: dict[int, str]  # staff id -> name (or e-mail) of who wrote an answer or note
    labels: list[str]
    resident: ResidentProfile | None
    notice_title: str | None
    reply_channels: list[str]  # where an answer can go, the channel the resident used last first


def details(session: Session, conversation_id: int, locale: str) -> ConversationDetails | None:
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        return None
    messages = messages_of(session, conversation_id)
    author_ids = {m.author_id for m in messages if m.author_id is not None}
    profile = _profile(session, conversation.resident_id)
    notice = _notice_title(session, conversation.broadcast_id, locale)
    return ConversationDetails(
        conversation=conversation,
        messages=messages,
        authors=_staff_names(session, author_ids),
        labels=labels_of(session, conversation_id),
        resident=profile,
        notice_title=notice or None,
        reply_channels=_reply_channels(conversation, profile),
    )


def _staff_names(session: Session, ids: set[int]) -> dict[int, str]:
    rows = session.execute(
        select(StaffUser.id, StaffUser.name, StaffUser.email).where(StaffUser.id.in_(ids))
    )
    return {staff_id: name or email for staff_id, name, email in rows}


def _profile(session: Session, resident_id: int | None) -> ResidentProfile | None:
    resident = session.get(Resident, resident_id) if resident_id is not None else None
    if resident is None:
        return None
    rows = session.execute(
        select(Topic.names, Area.names)
        .select_from(Subscription)
        .join(Topic, Topic.id == Subscription.topic_id)
        .join(Area, Area.id == Subscription.area_id)
        .where(Subscription.resident_id == resident.id)
        .order_by(Topic.slug, Area.slug)
    )
    return ResidentProfile(resident, list(resident.contact_points), [tuple(r) for r in rows])


def _reply_channels(conversation: Conversation, profile: ResidentProfile | None) -> list[str]:
    channels = [conversation.channel] if conversation.channel in ANSWERABLE_CHANNELS else []
    for contact in profile.contact_points if profile else []:
        usable = contact.active and contact.opted_out_at is None
        if usable and contact.channel in ANSWERABLE_CHANNELS and contact.channel not in channels:
            channels.append(contact.channel)
    return channels


def assignable_staff(session: Session) -> list[tuple[int, str]]:
    """Who a conversation can be given to: active agents and admins, by name."""
    rows = session.execute(
        select(StaffUser.id, StaffUser.name, StaffUser.email)
        .where(StaffUser.active, StaffUser.role.in_((Role.AGENT, Role.ADMIN)))
        .order_by(StaffUser.name, StaffUser.email)
    )
    return [(staff_id, name or email) for staff_id, name, email in rows]


def known_labels(session: Session) -> list[str]:
    return list(
        session.scalars(
            select(ConversationLabel.label).distinct().order_by(ConversationLabel.label)
        )
    )


def canned_shortcuts(session: Session) -> dict[str, list[str]]:
    """Each canned answer's shortcut with the locales it is written in."""
    shortcuts: dict[str, list[str]] = {}
    for shortcut, locale in session.execute(
        select(CannedResponse.shortcut, CannedResponse.locale).order_by(
            CannedResponse.shortcut, CannedResponse.locale
        )
    ):
        shortcuts.setdefault(shortcut, []).append(locale)
    return shortcuts


def canned_responses(session: Session) -> list[CannedResponse]:
    return list(
        session.scalars(
            select(CannedResponse).order_by(CannedResponse.shortcut, CannedResponse.locale)
        )
    )


def find_residents(session: Session, text: str, limit: int = 10) -> list[Resident]:
    """Residents whose name or one of whose addresses contains `text` (to link a sender to)."""
    text = text.strip()
    if not text:
        return []
    pattern = f"%{_escape_like(text)}%"
    by_address = select(ContactPoint.resident_id).where(
        ContactPoint.address.ilike(pattern, escape="\\")
    )
    return list(
        session.scalars(
            select(Resident)
            .where(or_(Resident.name.ilike(pattern, escape="\\"), Resident.id.in_(by_address)))
            .order_by(Resident.name, Resident.id)
            .limit(limit)
        )
    )


def area_choices(session: Session) -> list[tuple[str, dict]]:
    rows = session.execute(select(Area.slug, Area.names).order_by(Area.slug))
    return [tuple(row) for row in rows]


def add_label(session: Session, conversation_id: int, label: str) -> None:
    if not label.strip():
        raise ConversationError(_("the label is empty"))
    set_labels(session, conversation_id, [*labels_of(session, conversation_id), label])


def remove_label(session: Session, conversation_id: int, label: str) -> None:
    kept = [x for x in labels_of(session, conversation_id) if x != label.strip().lower()]
    set_labels(session, conversation_id, kept)


def reopen(session: Session, conversation_id: int) -> None:
    """A resolved or snoozed conversation back in the open list."""
    conversation = _get(session, conversation_id)
    conversation.status = ConversationStatus.OPEN
    conversation.resolved_at, conversation.snoozed_until = None, None
