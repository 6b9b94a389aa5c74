"""The data model. The database is the source of truth; Redis only holds work."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from hub.clock import utcnow
from hub.db import Base

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key for the outbox.
BigId = BigInteger().with_variant(Integer(), "sqlite")

CHANNELS = ("email", "sms", "telegram", "push")


class Priority:
    EMERGENCY = "emergency"
    NORMAL = "normal"
    BULK = "bulk"
    ALL = (EMERGENCY, NORMAL, BULK)


class ChannelPolicy:
    PREFERRED = "preferred"  # each resident's first usable channel, falling back on a dead one
    ALL_CHANNELS = "all"  # every verified channel
    ALL = (PREFERRED, ALL_CHANNELS)


class BroadcastStatus:
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    PLANNING = "planning"
    SENDING = "sending"
    DONE = "done"
    CANCELLED = "cancelled"


class DeliveryStatus:
    PENDING = "pending"  # waiting for a worker (possibly until not_before: quiet hours)
    SENDING = "sending"  # claimed by a worker, not yet handed to the provider
    RETRY = "retry"  # transient failure, waits until not_before
    SENT = "sent"  # accepted by the provider
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    GONE = "gone"  # address dead: deactivated, fell back to the next channel if any
    FAILED = "failed"  # permanent failure, reason kept
    CANCELLED = "cancelled"
    OPEN = (PENDING, SENDING, RETRY)
    FINAL = (SENT, DELIVERED, UNDELIVERED, GONE, FAILED, CANCELLED)


class Role:
    ADMIN = "admin"
    BROADCASTER = "broadcaster"
    APPROVER = "approver"
    AGENT = "agent"
    ALL = (ADMIN, BROADCASTER, APPROVER, AGENT)


class Area(Base):
    """A part of the city a notice can target; in Kranj, its local communities."""

    __tablename__ = "areas"
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    names: Mapped[dict] = mapped_column(JSON)  # {locale: name}


class Topic(Base):
    __tablename__ = "topics"
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    names: Mapped[dict] = mapped_column(JSON)


class Resident(Base):
    __tablename__ = "residents"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    locale: Mapped[str] = mapped_column(String(8))
    area_id: Mapped[int | None] = mapped_column(ForeignKey("areas.id"))
    # Quiet hours as minutes after local midnight; start > end wraps past midnight (22:00-07:00).
    quiet_start: Mapped[int | None] = mapped_column(SmallInteger)
    quiet_end: Mapped[int | None] = mapped_column(SmallInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    contact_points: Mapped[list[ContactPoint]] = relationship(
        back_populates="resident", order_by="ContactPoint.rank"
    )


class ContactPoint(Base):
    """One address of a resident on one channel; `rank` orders the resident's channel preference."""

    __tablename__ = "contact_points"
    __table_args__ = (UniqueConstraint("channel", "address"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    resident_id: Mapped[int] = mapped_column(ForeignKey("residents.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    # E.164 phone, normalised e-mail, Telegram chat id, or a push subscription's endpoint URL
    address: Mapped[str] = mapped_column(String(1000))
    # What else the channel needs to reach it: a push subscription's keys (p256dh, auth).
    details: Mapped[dict | None] = mapped_column(JSON)
    rank: Mapped[int] = mapped_column(SmallInteger, default=1)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failure_count: Mapped[int] = mapped_column(Integer, default=0)
    opted_out_at: Mapped[datetime | None] = mapped_column(DateTime)
    deactivated_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    resident: Mapped[Resident] = relationship(back_populates="contact_points")


Index("ix_contact_points_resident", ContactPoint.resident_id, ContactPoint.rank)
# Planning reads one channel for a range of residents (planning.audience_insert). Without it
# SQLite walks UNIQUE(channel, address) for the channel, all of it, in every step.
Index(
    "ix_contact_points_channel_resident",
    ContactPoint.channel,
    ContactPoint.resident_id,
    ContactPoint.rank,
)


class Subscription(Base):
    """A resident follows a topic in an area (their own local community, or any other)."""

    __tablename__ = "subscriptions"
    resident_id: Mapped[int] = mapped_column(
        ForeignKey("residents.id", ondelete="CASCADE"), primary_key=True
    )
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"), primary_key=True)
    area_id: Mapped[int] = mapped_column(ForeignKey("areas.id"), primary_key=True)


Index("ix_subscriptions_topic_area", Subscription.topic_id, Subscription.area_id)


class ResidentTopicChannel(Base):
    """One channel of a resident's own order for one topic: for notices on that topic these
    rows, by rank, replace the order of their contact points (hub.channel_order)."""

    __tablename__ = "resident_topic_channels"
    resident_id: Mapped[int] = mapped_column(
        ForeignKey("residents.id", ondelete="CASCADE"), primary_key=True
    )
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    rank: Mapped[int] = mapped_column(SmallInteger)


class ConsentRecord(Base):
    """What a resident agreed to or withdrew, when and through what; kept as the law requires."""

    __tablename__ = "consent_records"
    id: Mapped[int] = mapped_column(primary_key=True)
    resident_id: Mapped[int] = mapped_column(ForeignKey("residents.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(16))  # granted | withdrawn
    scope: Mapped[str] = mapped_column(String(120))  # e.g. "topic:waste-collection"
    source: Mapped[str] = mapped_column(String(40))  # import | list-unsubscribe | portal | keyword
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


broadcast_areas = Table(
    "broadcast_areas",
    Base.metadata,
    Column("broadcast_id", ForeignKey("broadcasts.id", ondelete="CASCADE"), primary_key=True),
    Column("area_id", ForeignKey("areas.id"), primary_key=True),
)


class Broadcast(Base):
    """A notice: written once, in several locales, for one topic and some areas."""

    __tablename__ = "broadcasts"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"))
    priority: Mapped[str] = mapped_column(String(16), default=Priority.NORMAL)
    channel_policy: Mapped[str] = mapped_column(String(16), default=ChannelPolicy.PREFERRED)
    status: Mapped[str] = mapped_column(String(16), default=BroadcastStatus.DRAFT)
    scheduled_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_by: Mapped[str] = mapped_column(String(320))
    approved_by: Mapped[str | None] = mapped_column(String(320))
    # SMS text transliterated to GSM-7 (č -> c, ...): up to a third of the segments.
    sms_transliterate: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    planned_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)

    topic: Mapped[Topic] = relationship()
    areas: Mapped[list[Area]] = relationship(secondary=broadcast_areas)
    contents: Mapped[list[BroadcastContent]] = relationship(
        back_populates="broadcast", cascade="all, delete-orphan"
    )


class BroadcastContent(Base):
    __tablename__ = "broadcast_contents"
    broadcast_id: Mapped[int] = mapped_column(
        ForeignKey("broadcasts.id", ondelete="CASCADE"), primary_key=True
    )
    locale: Mapped[str] = mapped_column(String(8), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)

    broadcast: Mapped[Broadcast] = relationship(back_populates="contents")


class Rendering(Base):
    """A notice rendered once per (locale, channel); per-recipient links are filled in at send."""

    __tablename__ = "renderings"
    broadcast_id: Mapped[int] = mapped_column(
        ForeignKey("broadcasts.id", ondelete="CASCADE"), primary_key=True
    )
    locale: Mapped[str] = mapped_column(String(8), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    subject: Mapped[str] = mapped_column(String(300), default="")
    text: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)


class Delivery(Base):
    """The outbox: one row per (notice, resident, contact point)."""

    __tablename__ = "deliveries"
    # A notice reaches one address at most once, however often planning or a job runs.
    __table_args__ = (UniqueConstraint("broadcast_id", "contact_point_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    broadcast_id: Mapped[int] = mapped_column(ForeignKey("broadcasts.id", ondelete="CASCADE"))
    resident_id: Mapped[int] = mapped_column(ForeignKey("residents.id", ondelete="CASCADE"))
    contact_point_id: Mapped[int] = mapped_column(
        ForeignKey("contact_points.id", ondelete="CASCADE")
    )
    channel: Mapped[str] = mapped_column(String(16))
    locale: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0)
    not_before: Mapped[datetime | None] = mapped_column(DateTime)
    claim_id: Mapped[str | None] = mapped_column(String(40))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime)
    provider_id: Mapped[str | None] = mapped_column(String(300))
    error: Mapped[str | None] = mapped_column(String(1000))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    fallback_from_id: Mapped[int | None] = mapped_column(BigId)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


Index("ix_deliveries_broadcast_status", Delivery.broadcast_id, Delivery.status)
Index("ix_deliveries_broadcast_resident", Delivery.broadcast_id, Delivery.resident_id)
Index("ix_deliveries_status_not_before", Delivery.status, Delivery.not_before)
Index("ix_deliveries_resident", Delivery.resident_id)
# Provider status callbacks find their delivery by the provider's message id.
Index("ix_deliveries_provider_id", Delivery.provider_id)
# A reply is linked to the last notice sent to its address (hub.conversations).
Index("ix_deliveries_contact_point_sent", Delivery.contact_point_id, Delivery.sent_at)


class ConversationStatus:
    OPEN = "open"
    PENDING = "pending"  # waiting for the resident
    RESOLVED = "resolved"
    SNOOZED = "snoozed"  # until snoozed_until, or until the resident writes
    ALL = (OPEN, PENDING, RESOLVED, SNOOZED)


CONVERSATION_PRIORITIES = ("low", "normal", "high", "urgent")


class MessageDirection:
    IN = "in"
    OUT = "out"
    NOTE = "note"  # a private note: never sent


class InboundEvent(Base):
    """Every webhook call and received e-mail, stored raw before it is processed, once per
    provider id: a provider that retries creates no second event."""

    __tablename__ = "inbound_events"
    __table_args__ = (UniqueConstraint("channel", "provider_event_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    provider_event_id: Mapped[str] = mapped_column(String(300))  # MessageSid, update_id, ...
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    meta: Mapped[dict | None] = mapped_column(JSON)  # e.g. an e-mail's envelope
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime)
    outcome: Mapped[str | None] = mapped_column(String(300))  # what processing did, or why not


# The sweeper looks for events stored but not processed (processed_at IS NULL).
Index("ix_inbound_events_processed_received", InboundEvent.processed_at, InboundEvent.received_at)
# Drains claim the waiting events oldest first. Without it PostgreSQL walked the primary key
# past every processed event, so each claim got slower as the table grew.
_WAITING = InboundEvent.processed_at.is_(None) & InboundEvent.outcome.is_(None)
Index(
    "ix_inbound_events_waiting",
    InboundEvent.id,
    postgresql_where=_WAITING,
    sqlite_where=_WAITING,
)


class Conversation(Base):
    """One thread with one resident (or, until an agent links it, one unknown sender)."""

    __tablename__ = "conversations"
    id: Mapped[int] = mapped_column(primary_key=True)
    resident_id: Mapped[int | None] = mapped_column(ForeignKey("residents.id", ondelete="SET NULL"))
    # Where the resident wrote from last: the default channel and address of a reply.
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(1000))
    status: Mapped[str] = mapped_column(String(16), default=ConversationStatus.OPEN)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    broadcast_id: Mapped[int | None] = mapped_column(
        ForeignKey("broadcasts.id", ondelete="SET NULL")
    )
    priority: Mapped[str] = mapped_column(String(8), default="normal", server_default="normal")
    snoozed_until: Mapped[datetime | None] = mapped_column(DateTime)  # None: until they write
    unread: Mapped[int] = mapped_column(Integer, default=0)
    last_message_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    waiting_since: Mapped[datetime | None] = mapped_column(DateTime)  # oldest unanswered message
    first_response_at: Mapped[datetime | None] = mapped_column(DateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


Index("ix_conversations_status_waiting", Conversation.status, Conversation.waiting_since)
Index("ix_conversations_resident", Conversation.resident_id)
Index("ix_conversations_channel_address", Conversation.channel, Conversation.address)


class Message(Base):
    """A message in a conversation: from the resident, to the resident, or a private note."""

    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    # Set on new messages, so a message and its new conversation go out in one flush; never
    # loaded (lazy="raise"): read conversation_id.
    conversation: Mapped[Conversation] = relationship(lazy="raise")
    direction: Mapped[str] = mapped_column(String(8))
    channel: Mapped[str | None] = mapped_column(String(16))
    address: Mapped[str | None] = mapped_column(String(1000))  # from (in) or to (out)
    body: Mapped[str] = mapped_column(Text)
    full_body: Mapped[str | None] = mapped_column(Text)  # an e-mail with its quoted history
    author_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    # in: received; out: pending, sent, delivered, undelivered, failed; note: note
    status: Mapped[str] = mapped_column(String(16))
    provider_id: Mapped[str | None] = mapped_column(String(300))
    error: Mapped[str | None] = mapped_column(String(1000))
    broadcast_id: Mapped[int | None] = mapped_column(
        ForeignKey("broadcasts.id", ondelete="SET NULL")
    )
    inbound_event_id: Mapped[int | None] = mapped_column(BigId)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)


Index("ix_messages_conversation", Message.conversation_id, Message.id)
Index("ix_messages_provider_id", Message.provider_id)
# The sweeper looks for answers still waiting to be sent.
Index("ix_messages_status_created", Message.status, Message.created_at)


class ConversationLabel(Base):
    __tablename__ = "conversation_labels"
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    label: Mapped[str] = mapped_column(String(64), primary_key=True)


Index("ix_conversation_labels_label", ConversationLabel.label)


class CannedResponse(Base):
    """A ready answer per locale; {name}, {notice} and {agent} are filled in when used."""

    __tablename__ = "canned_responses"
    __table_args__ = (UniqueConstraint("shortcut", "locale"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    shortcut: Mapped[str] = mapped_column(String(64))
    locale: Mapped[str] = mapped_column(String(8))
    body: Mapped[str] = mapped_column(Text)


class LinkToken(Base):
    """A single-use, expiring token that links a new address to a resident (Telegram's
    `/start <token>` deep link); only its hash is stored."""

    __tablename__ = "link_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    resident_id: Mapped[int] = mapped_column(ForeignKey("residents.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    used_at: Mapped[datetime | None] = mapped_column(DateTime)


class InstanceKey(Base):
    """A key this installation generated for itself (VAPID keys, the sandbox's provider
    credentials), kept in the database so every web and worker host uses the same one."""

    __tablename__ = "instance_keys"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class StaffUser(Base):
    __tablename__ = "staff_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # Staff console: a session carries the generation it signed in with; "sign out everywhere"
    # raises it, so every older session (on any device, any web process) stops working.
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Shown to admins (/admin/users); set by hub.signin on each successful sign-in.
    last_signin_at: Mapped[datetime | None] = mapped_column(DateTime)


class AuditEntry(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(120), default="")
    detail: Mapped[dict] = mapped_column(JSON, default=dict)


# -- API keys (REST API v1 and the GOV.UK Notify-compatible v2) --------------------------------


class ApiKeyType:
    NORMAL = "normal"  # sends to anyone
    TEAM = "team"  # sends only to staff members' own addresses
    TEST = "test"  # never sends; notifications get a simulated receipt
    ALL = (NORMAL, TEAM, TEST)


class ApiKey(Base):
    """A key another system uses, shown once as `{name}-{service_id}-{secret}` (Notify's
    format). The secret is kept twice: hashed, to recognise a Bearer key; and sealed with
    HUB_SECRET_KEY, because a Notify client signs each request's JWT with it."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    key_type: Mapped[str] = mapped_column(String(8), default=ApiKeyType.NORMAL)
    role: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    secret_sealed: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)


# -- callbacks to other city systems (signed POSTs of delivery statuses and inbound messages) ---


class CallbackEvent:
    DELIVERY_STATUS = "delivery-status"  # a notice's delivery reached a final or provider status
    INBOUND_MESSAGE = "inbound-message"  # a resident wrote to the city
    ALL = (DELIVERY_STATUS, INBOUND_MESSAGE)


class CallbackEndpoint(Base):
    """A city system that hears back from the hub. Its secret is shown once, when the endpoint
    is added, and kept sealed with HUB_SECRET_KEY (signing each POST needs it back)."""

    __tablename__ = "callback_endpoints"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list] = mapped_column(JSON)  # some of CallbackEvent.ALL
    secret: Mapped[str] = mapped_column(Text)  # sealed: hub.sealing
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class CallbackStatus:
    PENDING = "pending"  # waiting for next_attempt_at
    DELIVERED = "delivered"  # the endpoint answered 2xx
    FAILED = "failed"  # refused (4xx), redirected, out of attempts, or the endpoint was removed


class CallbackOutbox(Base):
    """One event for one endpoint, written in the transaction of the change that caused it."""

    __tablename__ = "callback_outbox"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(36), unique=True)  # X-Hub-Delivery
    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("callback_endpoints.id", ondelete="CASCADE")
    )
    event: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=CallbackStatus.PENDING)
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime)
    last_status_code: Mapped[int | None] = mapped_column(SmallInteger)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime)


Index("ix_callback_outbox_status_next", CallbackOutbox.status, CallbackOutbox.next_attempt_at)
Index("ix_callback_outbox_endpoint", CallbackOutbox.endpoint_id, CallbackOutbox.id)


class CallbackAttempt(Base):
    """One POST of an outbox event, as the admins see it: what the endpoint answered, or why
    nothing came back."""

    __tablename__ = "callback_attempts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    outbox_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("callback_outbox.id", ondelete="CASCADE")
    )
    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("callback_endpoints.id", ondelete="CASCADE")
    )
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    status_code: Mapped[int | None] = mapped_column(SmallInteger)
    error: Mapped[str | None] = mapped_column(String(500))
    duration_ms: Mapped[int] = mapped_column(Integer)


Index("ix_callback_attempts_endpoint", CallbackAttempt.endpoint_id, CallbackAttempt.id)
Index("ix_callback_attempts_outbox", CallbackAttempt.outbox_id)


# -- REST API v1: idempotent POSTs -------------------------------------------------------------


class IdempotencyRecord(Base):
    """The first answer to a POST with an `Idempotency-Key`, replayed for 24 h to retries with
    the same key. The primary key is the claim: of two identical requests at once, one inserts
    the row and runs, the other finds it."""

    __tablename__ = "idempotency_records"
    # No foreign key: keys are revoked, never deleted, and a record lives 24 h at most.
    api_key_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    idempotency_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))  # sha256 of method, path and body
    status_code: Mapped[int | None] = mapped_column(SmallInteger)  # None while it runs
    response_body: Mapped[dict | None] = mapped_column(JSON)
    location: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


Index("ix_idempotency_records_created", IdempotencyRecord.created_at)


# -- GOV.UK Notify-compatible API /v2: templates and the notifications sent with them ---------


class NotifyTemplate(Base):
    """A Notify-style template: `((placeholders))` in the body (and an e-mail's subject),
    versioned; this row is the current version, NotifyTemplateVersion keeps every one."""

    __tablename__ = "notify_templates"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # a UUID, as Notify's
    name: Mapped[str] = mapped_column(String(255))
    template_type: Mapped[str] = mapped_column(String(8))  # sms | email
    subject: Mapped[str | None] = mapped_column(String(1000))  # e-mail only
    body: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)


class NotifyTemplateVersion(Base):
    __tablename__ = "notify_template_versions"
    template_id: Mapped[str] = mapped_column(
        ForeignKey("notify_templates.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    subject: Mapped[str | None] = mapped_column(String(1000))
    body: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class NotifyNotification(Base):
    """One SMS or e-mail sent through /v2, with its status in Notify's words (created, sending,
    delivered, sent, pending, permanent-failure, temporary-failure, technical-failure)."""

    __tablename__ = "notify_notifications"
    # The order of creation: `older_than` pages by it, and it is the channel's message key.
    seq: Mapped[int] = mapped_column(BigId, primary_key=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)  # the UUID clients see
    # The key it came with (api_keys.id; no foreign key: that table is on another migration
    # branch, and keys are revoked, never deleted).
    api_key_id: Mapped[int] = mapped_column(Integer)
    key_type: Mapped[str] = mapped_column(String(8))
    notification_type: Mapped[str] = mapped_column(String(8))  # sms | email
    recipient: Mapped[str] = mapped_column(String(320))  # E.164 or a normalised address
    template_id: Mapped[str] = mapped_column(ForeignKey("notify_templates.id"))
    template_version: Mapped[int] = mapped_column(Integer)
    reference: Mapped[str | None] = mapped_column(String(1000))
    subject: Mapped[str | None] = mapped_column(String(1000))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    provider_id: Mapped[str | None] = mapped_column(String(300))
    error: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime)


Index("ix_notify_notifications_key_type_seq", NotifyNotification.key_type, NotifyNotification.seq)
Index("ix_notify_notifications_provider_id", NotifyNotification.provider_id)
# The sweeper looks for notifications not yet sent whose job Redis lost.
Index(
    "ix_notify_notifications_status_created",
    NotifyNotification.status,
    NotifyNotification.created_at,
)


# -- resident portal: passwordless sign-in and verification codes, erased accounts -------------


class CodePurpose:
    """What a one-time code proves: that its holder may sign in (or up) with an address, or
    that a signed-in resident holds an address they add."""

    SIGN_IN = "signin"
    VERIFY = "verify"


class OneTimeCode(Base):
    """A 6-digit code and a link, sent to one address; single use, expiring. Only keyed
    hashes are stored: the code's HMAC (a million codes are no secret under a plain hash)
    and the link token's SHA-256."""

    __tablename__ = "one_time_codes"
    id: Mapped[int] = mapped_column(primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16))  # CodePurpose.SIGN_IN | VERIFY
    channel: Mapped[str] = mapped_column(String(16))  # email | sms
    address: Mapped[str] = mapped_column(String(1000))
    # VERIFY: the resident who adds the address; SIGN_IN: None (the address decides who)
    resident_id: Mapped[int | None] = mapped_column(ForeignKey("residents.id", ondelete="CASCADE"))
    code_hash: Mapped[str] = mapped_column(String(64))
    link_hash: Mapped[str] = mapped_column(String(64), unique=True)
    locale: Mapped[str] = mapped_column(String(8))  # of the message, and of a new resident
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0)  # wrong codes entered
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    used_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ResidentErasure(Base):
    """A resident who deleted their account. The resident row stays, with nothing left that
    names or reaches them, so notices' statistics and the consent records stay whole."""

    __tablename__ = "resident_erasures"
    resident_id: Mapped[int] = mapped_column(
        ForeignKey("residents.id", ondelete="CASCADE"), primary_key=True
    )
    erased_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
