"""Conversations: every message a resident sends, on any channel, threaded into one inbox, and
the city's answers sent back on the resident's channel.

`receive()` is the one entry for every channel (SMS and Telegram webhooks, the e-mail
receiver, the resident portal): match the sender to a resident, act on keywords (STOP, START,
HELP in Slovenian and English), thread the message into the resident's open conversation and
link it to the notice it answers. `reply()` queues an agent's answer; hub.outbound sends it."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import BigInteger, Select, and_, column, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from hub import callbacks, keywords
from hub.clock import utcnow
from hub.models import (
    ConsentRecord,
    ContactPoint,
    Conversation,
    ConversationStatus,
    Delivery,
    DeliveryStatus,
    LinkToken,
    Message,
    MessageDirection,
    Resident,
)

# A reply with nothing else to go by answers the last notice sent to that address this recently.
NOTICE_WINDOW = timedelta(days=7)
LINK_TOKEN_TTL = timedelta(hours=1)
# The longest answer a channel takes: Twilio refuses an SMS body over 1,600 characters,
# Telegram a message over 4,096; an e-mail has no such limit but an answer is not a document.
MAX_ANSWER_CHARS = {"sms": 1600, "telegram": 4096}
MAX_EMAIL_ANSWER_CHARS = 20_000


class ConversationError(ValueError):
    """Bad input from an agent (empty reply, unknown conversation); the message says which."""


@dataclass(frozen=True)
class Received:
    """What receive() made. In a batch (`known` given) the ids exist once the batch flushes."""

    conversation: Conversation
    message: Message
    keyword: str | None  # stop, start or help when the message was one
    auto_reply: Message | None  # the confirmation or help text queued in answer, if any

    @property
    def conversation_id(self) -> int:
        return self.conversation.id

    @property
    def message_id(self) -> int:
        return self.message.id


def receive(
    session: Session,
    channel: str,
    address: str,
    text: str,
    *,
    default_locale: str,
    full_text: str | None = None,
    delivery_id: int | None = None,
    conversation_id: int | None = None,
    event_id: int | None = None,
    automatic: bool = False,
    resident_id: int | None = None,
    now: datetime | None = None,
    known: Known | None = None,
) -> Received:
    """A message from `address` on `channel`. `delivery_id` (the notice it answers, when the
    channel says: e-mail threading, Telegram reply-to) and `conversation_id` (an answer to one
    of ours) thread it precisely; otherwise the sender's latest conversation is used.
    `automatic`: the hub answers it itself (a deep link), so no agent needs to.
    `resident_id`: the sender, when the channel itself knows them (the portal's "web" channel
    has no contact points: its residents are signed in).
    `known`: what prefetch() read for a batch of messages; receive() asks for the rest, and
    leaves the flush to the batch, which writes all its messages in a statement or two."""
    now = now or utcnow()
    in_batch = known is not None
    known = known if known is not None else Known()
    contact = known.contacts.get((channel, address)) or _contact(session, channel, address)
    if contact is not None:
        resident_id = contact.resident_id
    sender = _sender_key(channel, address, resident_id)
    if sender not in known.locked:
        _one_sender_at_a_time(session, [sender])
        known.locked.add(sender)
    # The portal has its own settings page: STOP written there is a message for the agents.
    action = keywords.keyword(text) if channel != "web" else None
    conversation = _thread(session, channel, address, resident_id, conversation_id, now, known)
    broadcast_id = _answered_notice(session, contact, delivery_id, now, known)
    message = Message(
        conversation=conversation,  # perhaps new, without an id until the flush
        direction=MessageDirection.IN,
        channel=channel,
        address=address,
        body=text.strip(),
        full_body=full_text,
        status="received",
        broadcast_id=broadcast_id,
        inbound_event_id=event_id,
        created_at=now,
    )
    session.add(message)
    conversation.channel, conversation.address = channel, address
    conversation.last_message_at = now
    if broadcast_id is not None:
        conversation.broadcast_id = broadcast_id
    auto_reply = None
    if not automatic and action is None:
        _needs_an_answer(conversation, now)
    elif not automatic:
        locale = locale_of(session, contact, default_locale)
        auto_reply = _obey(session, action, channel, address, contact, conversation, locale, now)
    if not in_batch:
        session.flush()
    if not automatic:  # an automatic one is a deep link with its secret token: not passed on
        callbacks.record_inbound_message(session, message, resident_id, action)
    return Received(conversation, message, action, auto_reply)


def _one_sender_at_a_time(session: Session, senders: list[str]) -> None:
    """Two workers handling one sender's messages at once would each find no conversation and
    open two. On PostgreSQL a lock per sender, held until the transaction ends, makes the
    second wait and then find the first's. The locks are taken in one order (by key), so two
    transactions locking several senders cannot deadlock. SQLite has one writer at a time:
    the second transaction fails to write instead, and its event is processed again later."""
    if not senders or session.get_bind().dialect.name != "postgresql":
        return
    keys = sorted(
        int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "big", signed=True)
        for s in set(senders)
    )
    lock = select(func.pg_advisory_xact_lock(column("key"))).select_from(
        func.unnest(literal(keys, ARRAY(BigInteger))).alias("key")
    )
    session.execute(lock).all()


def _sender_key(channel: str, address: str, resident_id: int | None) -> str:
    return f"resident:{resident_id}" if resident_id else f"{channel}:{address}"


def _contact(session: Session, channel: str, address: str) -> ContactPoint | None:
    return session.scalar(
        select(ContactPoint).where(ContactPoint.channel == channel, ContactPoint.address == address)
    )


def _thread(session, channel, address, resident_id, conversation_id, now, known) -> Conversation:
    conversation = None
    if conversation_id is not None:
        conversation = session.get(Conversation, conversation_id)
    key = _thread_key(channel, address, resident_id)
    if conversation is None and key in known.threads:
        conversation = known.threads[key]
    elif conversation is None:
        [query] = _thread_queries([key])
        conversation = session.scalar(query.order_by(Conversation.id.desc()).limit(1))
    if conversation is None:
        conversation = Conversation(
            resident_id=resident_id,
            channel=channel,
            address=address,
            status=ConversationStatus.OPEN,
            unread=0,
            created_at=now,
            last_message_at=now,
        )
        session.add(conversation)
    if conversation_id is None:
        known.threads[key] = conversation  # the next message of this batch from them: here
    return conversation


def _thread_key(channel: str, address: str, resident_id: int | None) -> tuple:
    """One thread per resident; an unknown sender's by channel and address."""
    return ("resident", resident_id) if resident_id is not None else (channel, address)


def _thread_queries(keys: list[tuple]) -> list[Select]:
    """The conversations of these thread keys, a query for residents and one for unknown
    senders (the caller keeps the newest of each key). Each uses its own index: one query
    with OR made SQLite read every conversation."""
    residents = [key[1] for key in keys if key[0] == "resident"]
    unknown = [key for key in keys if key[0] != "resident"]
    queries = []
    if residents:
        queries.append(select(Conversation).where(Conversation.resident_id.in_(residents)))
    if unknown:
        by_address = _at(Conversation.channel, Conversation.address, unknown)
        queries.append(select(Conversation).where(Conversation.resident_id.is_(None), by_address))
    return queries


def _at(channel_column, address_column, addresses: list[tuple[str, str]]):
    """(channel, address) is one of `addresses`: per channel, `address IN (...)`. SQLite uses
    an index for that, not for a row value `IN (VALUES ...)`, which read the whole table."""
    by_channel: dict[str, list[str]] = {}
    for channel, address in addresses:
        by_channel.setdefault(channel, []).append(address)
    return or_(
        *(
            and_(channel_column == channel, address_column.in_(channel_addresses))
            for channel, channel_addresses in by_channel.items()
        )
    )


def _answered_notice(session, contact, delivery_id, now, known) -> int | None:
    """The notice a reply answers: the one the channel named, else the last notice sent to
    that address within NOTICE_WINDOW."""
    if delivery_id is not None:
        return session.scalar(select(Delivery.broadcast_id).where(Delivery.id == delivery_id))
    if contact is None:
        return None
    if contact.id in known.notices:
        return known.notices[contact.id]
    return session.scalar(
        _recent_notices([contact.id], now).order_by(Delivery.sent_at.desc()).limit(1)
    )


def _recent_notices(contact_ids: list[int], now: datetime):
    """(notice, contact point, sent at) of what was sent to these addresses in the window."""
    return select(Delivery.broadcast_id, Delivery.contact_point_id, Delivery.sent_at).where(
        Delivery.contact_point_id.in_(contact_ids),
        Delivery.status.in_((DeliveryStatus.SENT, DeliveryStatus.DELIVERED)),
        Delivery.sent_at >= now - NOTICE_WINDOW,
    )


# -- a batch of messages at once ------------------------------------------------------------------


@dataclass
class Known:
    """What receive() needs about the senders of a batch of messages (hub.inbound's drains),
    read by prefetch() in five statements instead of four a message. A sender missing here
    is looked up by receive() itself, so a batch whose senders change mid-way (a Telegram
    chat linked by its /start) stays right."""

    contacts: dict[tuple[str, str], ContactPoint] = field(default_factory=dict)
    locked: set[str] = field(default_factory=set)  # sender keys whose lock this transaction holds
    threads: dict[tuple, Conversation | None] = field(default_factory=dict)  # None: none yet
    notices: dict[int, int | None] = field(default_factory=dict)  # contact point -> notice


def prefetch(session: Session, addresses: list[tuple[str, str]], now: datetime) -> Known:
    """Read, for these (channel, address) senders: their contact points; then, holding every
    sender's lock (taken here, in one statement), their latest conversations and the last
    notice each address got."""
    known = Known()
    addresses = list(dict.fromkeys(addresses))
    if not addresses:
        return known
    by_address = _at(ContactPoint.channel, ContactPoint.address, addresses)
    for contact in session.scalars(select(ContactPoint).where(by_address)):
        known.contacts[(contact.channel, contact.address)] = contact
    residents = {a: c.resident_id for a, c in known.contacts.items()}
    keys = [_thread_key(*a, residents.get(a)) for a in addresses]
    senders = [_sender_key(*a, residents.get(a)) for a in addresses]
    _one_sender_at_a_time(session, senders)
    known.locked.update(senders)
    known.threads = dict.fromkeys(keys)
    for query in _thread_queries(keys):
        for conversation in session.scalars(query.order_by(Conversation.id)):
            key = _thread_key(conversation.channel, conversation.address, conversation.resident_id)
            known.threads[key] = conversation  # in id order: the newest stays
    contact_ids = [c.id for c in known.contacts.values()]
    known.notices = dict.fromkeys(contact_ids)
    for notice, contact_id, _sent in session.execute(
        _recent_notices(contact_ids, now).order_by(Delivery.sent_at)
    ):
        known.notices[contact_id] = notice  # in time order: the latest stays
    return known


def _needs_an_answer(conversation: Conversation, now: datetime) -> None:
    """A resident wrote: the conversation is open (a snoozed or resolved one opens again) and
    waits for an agent."""
    conversation.status = ConversationStatus.OPEN
    conversation.resolved_at, conversation.snoozed_until = None, None
    conversation.unread = (conversation.unread or 0) + 1
    if conversation.waiting_since is None:
        conversation.waiting_since = now


# -- keywords ------------------------------------------------------------------------------------


def _obey(session, action, channel, address, contact, conversation, locale, now) -> Message:
    """Do what the keyword asks and queue the confirmation, in the resident's language."""
    if contact is not None and action == keywords.STOP:
        contact.opted_out_at = now
        _consent(session, contact, "withdrawn", now)
    elif contact is not None and action == keywords.START:
        contact.opted_out_at = None
        _consent(session, contact, "granted", now)
    with force_locale(locale):
        if contact is None and action == keywords.START:
            text = _("Mestni glas: to get the city's notices, sign up in the resident portal.")
            return _queue_out(session, conversation, channel, address, text, now, author_id=None)
        text = {
            keywords.STOP: _(
                "Mestni glas: you will get no more messages here. Send START to get them again."
            ),
            keywords.START: _(
                "Mestni glas: the notices you chose come here. Send STOP to stop them."
            ),
            keywords.HELP: _(
                "Mestni glas, notices of the City of Kranj. Reply to write to the city. "
                "STOP stops the messages here, START starts them again."
            ),
        }[action]
    return _queue_out(session, conversation, channel, address, text, now, author_id=None)


def _consent(session: Session, contact: ContactPoint, action: str, now: datetime) -> None:
    session.add(
        ConsentRecord(
            resident_id=contact.resident_id,
            action=action,
            scope=f"channel:{contact.channel}",
            source="keyword",
            created_at=now,
        )
    )


def locale_of(session: Session, contact: ContactPoint | None, default_locale: str) -> str:
    """The resident's language, or the hub's for a sender it does not know."""
    if contact is None:
        return default_locale
    return session.scalar(select(Resident.locale).where(Resident.id == contact.resident_id))


# -- answers ------------------------------------------------------------------------------------


def reply(
    session: Session,
    conversation_id: int,
    text: str,
    *,
    author_id: int | None,
    channel: str | None = None,
    now: datetime | None = None,
) -> Message:
    """An agent's answer, queued to go out on the channel the resident used last (or
    `channel`, to one of the resident's addresses on it). Raises ConversationError."""
    now = now or utcnow()
    text = text.strip()
    if not text:
        raise ConversationError(_("the reply is empty"))
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        raise ConversationError(_("no conversation %(id)d", id=conversation_id))
    address = conversation.address
    if channel is not None and channel != conversation.channel:
        address = _address_on(session, conversation, channel)
    channel = channel or conversation.channel
    limit = MAX_ANSWER_CHARS.get(channel, MAX_EMAIL_ANSWER_CHARS)
    if len(text) > limit:
        raise ConversationError(
            _("an answer on %(channel)s has at most %(num)d characters", channel=channel, num=limit)
        )
    message = _queue_out(session, conversation, channel, address, text, now, author_id=author_id)
    if conversation.first_response_at is None:
        conversation.first_response_at = now
    conversation.waiting_since = None
    conversation.unread = 0
    conversation.status = ConversationStatus.PENDING
    session.flush()
    return message


def _address_on(session: Session, conversation: Conversation, channel: str) -> str:
    address = None
    if conversation.resident_id is not None:
        address = session.scalar(
            select(ContactPoint.address)
            .where(
                ContactPoint.resident_id == conversation.resident_id,
                ContactPoint.channel == channel,
                ContactPoint.active.is_(True),
            )
            .order_by(ContactPoint.rank)
            .limit(1)
        )
    if address is None:
        raise ConversationError(_("the resident has no address on %(channel)s", channel=channel))
    return address


def _queue_out(session, conversation, channel, address, text, now, *, author_id) -> Message:
    message = Message(
        conversation=conversation,
        direction=MessageDirection.OUT,
        channel=channel,
        address=address,
        body=text,
        author_id=author_id,
        status="pending",
        created_at=now,
    )
    session.add(message)
    session.flush()
    return message


def answer_automatically(session: Session, conversation: Conversation, text: str) -> Message:
    """A message the hub itself sends into a conversation (a confirmation), on its channel."""
    return _queue_out(
        session, conversation, conversation.channel, conversation.address, text, utcnow(),
        author_id=None,
    )  # fmt: skip


def retry_message(session: Session, message_id: int) -> Message:
    """Send a failed answer again (the agent's Retry)."""
    message = session.get(Message, message_id)
    if message is None or message.direction != MessageDirection.OUT:
        raise ConversationError(_("no message %(id)d to send", id=message_id))
    if message.status != "failed":
        raise ConversationError(_("only a failed message can be sent again"))
    message.status, message.error = "pending", None
    session.flush()
    return message


def messages_of(session: Session, conversation_id: int) -> list[Message]:
    return list(
        session.scalars(
            select(Message).where(Message.conversation_id == conversation_id).order_by(Message.id)
        )
    )


def mark_read(session: Session, conversation_id: int) -> None:
    session.execute(update(Conversation).where(Conversation.id == conversation_id).values(unread=0))


# -- linking a new address (Telegram's /start <token>) -------------------------------------------


def make_link_token(
    session: Session, resident_id: int, channel: str, now: datetime | None = None
) -> str:
    """A single-use token (at most 64 characters of [A-Za-z0-9_-], as Telegram's deep links
    allow) valid for LINK_TOKEN_TTL; only its hash is stored."""
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    session.add(
        LinkToken(
            token_hash=_hash(token),
            resident_id=resident_id,
            channel=channel,
            expires_at=now + LINK_TOKEN_TTL,
        )
    )
    session.flush()
    return token


def link_address(
    session: Session, token: str, channel: str, address: str, now: datetime | None = None
) -> int | None:
    """Use a link token: the address becomes the resident's verified contact point on the
    channel. Returns the resident id, or None for an unknown, used or expired token, or an
    address that is already someone else's."""
    now = now or utcnow()
    used = session.execute(
        update(LinkToken)
        .where(
            LinkToken.token_hash == _hash(token),
            LinkToken.channel == channel,
            LinkToken.used_at.is_(None),
            LinkToken.expires_at > now,
        )
        .values(used_at=now)
        .returning(LinkToken.resident_id)
    ).first()
    if used is None:
        return None
    resident_id = used[0]
    existing = _contact(session, channel, address)
    if existing is not None:
        if existing.resident_id != resident_id:
            return None
        existing.active, existing.verified, existing.opted_out_at = True, True, None
        return resident_id
    rank = session.scalar(
        select(func.coalesce(func.max(ContactPoint.rank), 0)).where(
            ContactPoint.resident_id == resident_id
        )
    )
    session.add(
        ContactPoint(
            resident_id=resident_id,
            channel=channel,
            address=address,
            rank=rank + 1,
            verified=True,
            created_at=now,
        )
    )
    session.add(
        ConsentRecord(
            resident_id=resident_id,
            action="granted",
            scope=f"channel:{channel}",
            source="link",
            created_at=now,
        )
    )
    session.flush()
    return resident_id


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
