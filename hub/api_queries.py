"""The read side of the REST API: every list in keyset pages behind an opaque cursor (a page
costs the same however deep it is, and rows added meanwhile cause no duplicates or gaps), and
the records behind single reads."""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from flask_babel import gettext as _
from sqlalchemy import Select, select
from sqlalchemy.orm import Session, selectinload

from hub import inbox
from hub.broadcasts import progress
from hub.models import (
    Area,
    Broadcast,
    Conversation,
    ConversationLabel,
    Delivery,
    Message,
    Resident,
    Topic,
)
from hub.resident_records import ResidentRecord, records

MAX_LIMIT = 100
DEFAULT_LIMIT = 50
T = TypeVar("T")


class BadCursor(ValueError):
    pass


class NotFound(LookupError):
    pass


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None  # None on the last page


def clamp(limit: int | None) -> int:
    return max(1, min(limit or DEFAULT_LIMIT, MAX_LIMIT))


def _encode(last_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": last_id}).encode()).decode().rstrip("=")


def _decode(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        last_id = json.loads(raw)["after"]
    except (ValueError, TypeError, KeyError):
        raise BadCursor(_("the page cursor is not valid")) from None
    if not isinstance(last_id, int) or isinstance(last_id, bool):
        raise BadCursor(_("the page cursor is not valid"))
    return last_id


def _page(
    session: Session, query: Select, column: Any, cursor: str | None, limit: int, *, newest=False
) -> Page:
    """Rows of `query` after the cursor, ordered by the unique `column`."""
    if cursor:
        last = _decode(cursor)
        query = query.where(column < last if newest else column > last)
    query = query.order_by(column.desc() if newest else column).limit(limit + 1)
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, _encode(rows[-1].id) if more else None)


def areas_page(session: Session, cursor: str | None, limit: int) -> Page[Area]:
    return _page(session, select(Area), Area.id, cursor, limit)


def topics_page(session: Session, cursor: str | None, limit: int) -> Page[Topic]:
    return _page(session, select(Topic), Topic.id, cursor, limit)


def residents_page(session: Session, cursor: str | None, limit: int) -> Page[ResidentRecord]:
    query = select(Resident).options(selectinload(Resident.contact_points))
    page = _page(session, query, Resident.id, cursor, limit)
    return Page(records(session, page.items), page.next_cursor)


# -- notices ----------------------------------------------------------------------------------


def _broadcasts() -> Select:
    return select(Broadcast).options(
        selectinload(Broadcast.topic),
        selectinload(Broadcast.areas),
        selectinload(Broadcast.contents),
    )


def broadcasts_page(session: Session, cursor: str | None, limit: int) -> Page[Broadcast]:
    """Newest first."""
    return _page(session, _broadcasts(), Broadcast.id, cursor, limit, newest=True)


def get_broadcast(session: Session, broadcast_id: int) -> Broadcast:
    broadcast = session.scalar(_broadcasts().where(Broadcast.id == broadcast_id))
    if broadcast is None:
        raise NotFound(_("no notice %(id)d", id=broadcast_id))
    return broadcast


@dataclass(frozen=True)
class BroadcastCounts:
    broadcast_id: int
    status: str
    total: int
    open: int
    final: int
    by_status: dict[str, int]
    by_channel: dict[str, dict[str, int]]


def broadcast_counts(session: Session, broadcast_id: int) -> BroadcastCounts:
    get_broadcast(session, broadcast_id)
    found = progress(session, broadcast_id)
    by_channel: dict[str, dict[str, int]] = defaultdict(dict)
    for (channel, status), count in found.by_channel_status.items():
        by_channel[channel][status] = count
    return BroadcastCounts(
        broadcast_id,
        found.status,
        found.total,
        found.open,
        found.final,
        dict(found.by_status),
        dict(by_channel),
    )


def deliveries_page(
    session: Session,
    cursor: str | None,
    limit: int,
    *,
    broadcast_id: int | None = None,
    resident_id: int | None = None,
    status: str | None = None,
) -> Page[Delivery]:
    query = select(Delivery)
    if broadcast_id is not None:
        query = query.where(Delivery.broadcast_id == broadcast_id)
    if resident_id is not None:
        query = query.where(Delivery.resident_id == resident_id)
    if status is not None:
        query = query.where(Delivery.status == status)
    return _page(session, query, Delivery.id, cursor, limit)


# -- conversations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConversationRecord:
    conversation: Conversation
    labels: list[str]


def conversations_page(
    session: Session, filters: inbox.InboxFilter, cursor: str | None, limit: int
) -> Page[ConversationRecord]:
    """The inbox's own order and cursor: longest waiting first."""
    found = inbox.inbox(session, filters, after=cursor, limit=limit)
    return Page(_with_labels(session, found.conversations), found.next_cursor)


def get_conversation(session: Session, conversation_id: int) -> ConversationRecord:
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        raise NotFound(_("no conversation %(id)d", id=conversation_id))
    return _with_labels(session, [conversation])[0]


def _with_labels(session: Session, conversations: list[Conversation]) -> list[ConversationRecord]:
    labels: dict[int, list[str]] = defaultdict(list)
    for conversation_id, label in session.execute(
        select(ConversationLabel.conversation_id, ConversationLabel.label)
        .where(ConversationLabel.conversation_id.in_([c.id for c in conversations]))
        .order_by(ConversationLabel.label)
    ):
        labels[conversation_id].append(label)
    return [ConversationRecord(c, labels[c.id]) for c in conversations]


def messages_page(
    session: Session, conversation_id: int, cursor: str | None, limit: int
) -> Page[Message]:
    """Oldest first, as a thread reads."""
    get_conversation(session, conversation_id)
    query = select(Message).where(Message.conversation_id == conversation_id)
    return _page(session, query, Message.id, cursor, limit)
