"""Inbound events: every webhook call and received e-mail is stored raw first, once per
provider id (a provider that retries creates nothing new), answered fast, and processed by a
job on the `high` queue, which hands the message to hub.conversations.receive().

The jobs drain in batches: storing an event asks for a drain job unless one is already
waiting, and a drain takes every waiting event (oldest first, up to BATCH at a time, in one
transaction), so at 200 replies a second a worker runs a few jobs and commits a second, not
200. A lone reply still starts a drain at once (after GATHER_S). Two drains at once never take
the same event (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: drains take turns), and never
reorder one sender's messages: an event whose sender has an older one in another drain's hands
waits for it. A worker that dies mid-batch leaves its events unprocessed (the transaction never
commits) and the sweeper asks for a drain again."""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import Connection, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from channels.mailparse import InboundEmail, delivery_id_from_message_id, parse_inbound
from hub import callbacks, conversations, live, outbound, queues, runtime
from hub.clock import utcnow
from hub.contacts import InvalidAddress, normalise_email
from hub.models import ContactPoint, Delivery, DeliveryStatus, InboundEvent, Message
from hub.status import address_is_dead
from hub.tokens import read_token

log = logging.getLogger("hub.inbound")

PROCESS_JOB = "hub.inbound.process_event"
DRAIN_JOB = "hub.inbound.drain"
DRAIN_KEY = "hub:inbound:drain"  # the id of the drain job waiting in the queue, if any
DRAIN_RUNNING = "inbound-drain"  # heartbeat (queues.mark_running) of the drains at work
DRAIN_KEY_TTL_S = 300  # a lost waiting drain stops blocking new ones after this (sweeper: sooner)
BATCH = 25  # events per transaction, at most
# And no more work than this in one: its first reply is visible only at commit. On SQLite a
# batch holds the one write lock, which the webhooks storing events wait for.
BATCH_S = {"sqlite": 0.02, "postgresql": 0.05}
# SQLite: drains take turns (a Redis key), and the write lock stays free for this long after
# each batch. Two drains otherwise passed the lock straight to each other, and the webhooks
# storing events, asleep in SQLite's back-off, seldom found it free.
SQLITE_TURN_KEY = "hub:inbound:sqlite-turn"
SQLITE_PAUSE_MS = 10
SQLITE_TURN_TTL_MS = 30_000  # a drain that dies holding its turn blocks the others this long
GATHER_S = 0.02  # a drain's wait before it starts (see drain())
DRAIN_BUDGET_S = 2.0  # then the drain hands its worker back (an emergency may be waiting)
WAIT_FOR_OTHER_DRAIN_S = 10  # at most, for another drain holding an older event of a sender
FAILED = "failed: "  # outcome prefix of an event whose processing raised (left unprocessed)


def accept(
    rt: runtime.Runtime, channel: str, provider_event_id: str, payload: bytes, meta=None
) -> bool:
    """Store an event and queue its processing; False if this provider id was seen before.
    The one INSERT commits by itself (autocommit): no BEGIN and COMMIT round trips, and on
    SQLite the write lock is held inside that one statement, not from the INSERT until a
    web thread gets the interpreter back to COMMIT (which kept drains and other webhooks
    waiting in SQLite's back-off)."""
    autocommit = rt.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    with autocommit as connection:
        event_id = store(connection, channel, provider_event_id, payload, meta)
    if event_id is None:
        return False
    request_drain(rt)
    return True


def request_drain(rt: runtime.Runtime) -> bool:
    """Make sure a drain will run after now; True if this call queued one. Called after the
    event is committed: a drain already waiting starts later and so sees it."""
    return queues.enqueue_single(rt.redis, "high", DRAIN_JOB, DRAIN_KEY, DRAIN_KEY_TTL_S)


def drain_live(rt: runtime.Runtime) -> bool:
    """Is a drain waiting in the queue or at work (for the sweeper)?"""
    return queues.single_live(rt.redis, DRAIN_KEY, DRAIN_RUNNING)


def job_id(event_id: int) -> str:
    return f"inbound-{event_id}"


def enqueue(rt: runtime.Runtime, event_id: int) -> None:
    """One event's own job: the sweeper's retry of an event whose processing failed."""
    queues.enqueue_once(rt.redis, "high", PROCESS_JOB, (event_id,), job_id(event_id))


def store(bind: Connection, channel: str, provider_event_id: str, payload: bytes, meta=None):
    """The new event's id, or None when the provider id is already stored. One statement, as
    a webhook answers faster without the savepoint an ORM insert needs to survive a duplicate:
    INSERT ... ON CONFLICT DO NOTHING (the only unique key is channel and provider id)."""
    values = {
        "channel": channel,
        "provider_event_id": provider_event_id[:300],
        "payload": payload,
        "received_at": utcnow(),
    }
    if meta is not None:
        values["meta"] = meta
    if bind.dialect.name == "postgresql":
        return bind.execute(_STORE_POSTGRESQL, values).scalar()
    result = bind.execute(_STORE_SQLITE, values)
    return result.lastrowid if result.rowcount == 1 else None


# Built once: building the statement took a tenth of a webhook's time in the web server.
_STORE_POSTGRESQL = (
    postgresql.insert(InboundEvent).on_conflict_do_nothing().returning(InboundEvent.id)
)
# Without RETURNING: a statement that returns a row keeps SQLite's write lock until the row
# is read, which a web thread does only when it gets the interpreter back.
_STORE_SQLITE = sqlite.insert(InboundEvent).on_conflict_do_nothing()


def drain() -> str:
    """RQ job: process waiting events, a batch per transaction, until none is left that no
    other drain holds, or the time budget is spent (then another drain is queued)."""
    rt = runtime.current()
    # Let replies arriving together gather first, while webhooks still see this drain waiting
    # and queue no other: at 200 a second a drain took ~4 events and each job's overhead
    # cost more CPU than its events.
    time.sleep(GATHER_S)
    queues.single_started(rt.redis, DRAIN_KEY)  # events stored from now on queue a new drain
    deadline = time.monotonic() + DRAIN_BUDGET_S
    # SQLite: one batch a job. A batch holds the one write lock; the webhooks waiting for it
    # (sleeping in SQLite's back-off) get it between jobs, not in a loop's instant between
    # two batches.
    one_batch = rt.engine.dialect.name == "sqlite"
    processed = 0
    try:
        while True:
            queues.mark_running(rt.redis, DRAIN_RUNNING, rt.settings.claim_ttl_s)
            batch = process_batch(rt, BATCH)
            processed += len(batch.processed)
            if len(batch.claimed) < BATCH and not batch.waiting_for and not batch.left:
                break
            if one_batch or time.monotonic() > deadline:
                request_drain(rt)
                break
            if batch.waiting_for and not _wait_for(rt, batch.waiting_for):
                request_drain(rt)
                break
    finally:
        queues.clear_running(rt.redis, DRAIN_RUNNING)
    return f"{processed} events processed"


def process_event(event_id: int) -> str:
    """RQ job: process one stored event (once; a second run finds it processed). The sweeper
    queues it for an event whose processing failed in a drain; it raises if it fails again,
    so the failure shows in RQ's failed jobs."""
    rt = runtime.current()
    batch = process_batch(rt, 1, only=event_id)
    if batch.failed:
        raise RuntimeError(f"inbound event {event_id}: {batch.failed[0][1]}")
    return batch.processed[0][1] if batch.processed else "already processed"


@dataclass
class Batch:
    claimed: list[int] = field(default_factory=list)
    processed: list[tuple[int, str]] = field(default_factory=list)  # (event id, outcome)
    failed: list[tuple[int, str]] = field(default_factory=list)  # (event id, error)
    waiting_for: list[int] = field(default_factory=list)  # other drains' older events
    left: int = 0  # claimed, then left for the next batch (BATCH_S was spent)


def process_batch(rt: runtime.Runtime, limit: int, only: int | None = None) -> Batch:
    """Claim up to `limit` waiting events (or the one event `only`) and process them in one
    transaction; then publish to the inbox pages and queue the answers, after the commit.

    Savepoints cost two round trips an event, so a batch first runs without them; if an
    event raises, the batch is rolled back and run again with one savepoint per event, so
    that one spoils only itself."""
    if only is None:
        try:
            return _process_batch(rt, limit, None, careful=False)
        except Exception:
            log.warning("an inbound batch failed; again, event by event", exc_info=True)
    return _process_batch(rt, limit, only, careful=True)


def _process_batch(rt: runtime.Runtime, limit: int, only: int | None, careful: bool) -> Batch:
    batch, done = Batch(), []
    with _sqlite_turn(rt), rt.session() as session:
        events = _claim(session, limit, only)
        batch.claimed = [e.id for e in events]
        held = _senders_held_elsewhere(session, batch.claimed) if only is None else {}
        senders = [_sender(e.channel, e.payload, e.meta) for e in events]
        ours = [sender for sender in senders if sender is not None and sender not in held]
        known = conversations.prefetch(session, ours, utcnow())
        ends = time.monotonic() + BATCH_S.get(session.get_bind().dialect.name, 0.05)
        for i, (event, sender) in enumerate(zip(events, senders, strict=True)):
            if time.monotonic() > ends:
                batch.left = len(events) - i  # in order: a sender's later ones are left too
                break
            if sender is not None and sender in held:
                # keep this sender's messages in order: later ones wait behind the older one
                batch.waiting_for.append(held[sender])
                continue
            handled = _process_one(rt, session, event, known, batch, careful)
            if handled is None:
                # its savepoint was rolled back, and with it perhaps a conversation `known` holds
                known = conversations.Known()
                continue
            done.append((event.id, handled))
        session.flush()  # the batch's conversations and messages: a statement or two each
        batch.processed = _mark_processed(session, done)
    handled_events = [handled for _event_id, handled in done]
    for conversation_id in dict.fromkeys(h.conversation_id for h in handled_events if h.received):
        live.publish(rt, "message", conversation_id)
    for message in (message for handled in handled_events for message in handled.answers):
        outbound.enqueue(rt, message.id)
    return batch


def _mark_processed(session: Session, done: list[tuple[int, Handled]]) -> list[tuple[int, str]]:
    """Mark the batch's handled events processed, with their outcomes, in one statement."""
    now = utcnow()
    outcomes = [(event_id, handled.outcome()[:300]) for event_id, handled in done]
    if outcomes:
        session.execute(
            update(InboundEvent),
            [{"id": i, "processed_at": now, "outcome": outcome} for i, outcome in outcomes],
        )
    return outcomes


@contextlib.contextmanager
def _sqlite_turn(rt: runtime.Runtime) -> Iterator[None]:
    """On SQLite, wait for the drains' turn (not for the write lock, in SQLite's back-off),
    and keep it SQLITE_PAUSE_MS after the batch. Nothing on PostgreSQL. A drain that waits
    WAIT_FOR_OTHER_DRAIN_S goes ahead anyway: SQLite's own lock still keeps it correct."""
    if rt.engine.dialect.name != "sqlite":
        yield
        return
    token = uuid.uuid4().hex
    deadline = time.monotonic() + WAIT_FOR_OTHER_DRAIN_S
    while not rt.redis.set(SQLITE_TURN_KEY, token, nx=True, px=SQLITE_TURN_TTL_MS):
        if time.monotonic() > deadline:
            break
        time.sleep(0.002)
    try:
        yield
    finally:
        if rt.redis.get(SQLITE_TURN_KEY) == token.encode():
            rt.redis.pexpire(SQLITE_TURN_KEY, SQLITE_PAUSE_MS)


def _claim(session: Session, limit: int, only: int | None) -> Sequence[InboundEvent]:
    """Oldest first, skipping events another drain holds (PostgreSQL). SQLite ignores FOR
    UPDATE; a write as the transaction's first statement takes its one write lock there, so
    a second drain waits for this one to commit and then finds these events processed."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(InboundEvent).where(InboundEvent.id < 0).values(outcome=None))
    query = select(InboundEvent).where(InboundEvent.processed_at.is_(None))
    if only is not None:
        return session.scalars(query.where(InboundEvent.id == only).with_for_update()).all()
    query = query.where(InboundEvent.outcome.is_(None)).order_by(InboundEvent.id).limit(limit)
    return session.scalars(query.with_for_update(skip_locked=True)).all()


def _senders_held_elsewhere(session: Session, claimed: list[int]) -> dict[tuple[str, str], int]:
    """Sender -> the oldest of their events older than ours that we did not claim (another
    drain holds it, or it was stored after our claim): ours from that sender must wait."""
    if not claimed:
        return {}
    others = session.execute(
        select(InboundEvent.id, InboundEvent.channel, InboundEvent.payload, InboundEvent.meta)
        .where(
            InboundEvent.processed_at.is_(None),
            InboundEvent.outcome.is_(None),
            InboundEvent.id < max(claimed),
            InboundEvent.id.not_in(claimed),
        )
        .order_by(InboundEvent.id.desc())
    ).all()
    held = {}
    for event_id, channel, payload, meta in others:  # newest first: the oldest one wins
        sender = _sender(channel, payload, meta)
        if sender is not None:
            held[sender] = event_id
    return held


def _process_one(
    rt, session: Session, event: InboundEvent, known: conversations.Known, batch, careful: bool
) -> Handled | None:
    """Handle one event; `careful`: in a savepoint, and None if it raised (it stays
    unprocessed, marked failed, for the sweeper to try again in a job of its own)."""
    event_id = event.id
    try:
        with session.begin_nested() if careful else contextlib.nullcontext():
            handled = HANDLERS[event.channel](rt, session, event, known)
            if careful:
                session.flush()  # what it wrote fails here, inside its savepoint
    except Exception as exc:
        if not careful:
            raise
        # one bad event must not stop the others
        log.exception("inbound event %s failed", event_id)
        error = f"{FAILED}{type(exc).__name__}: {exc}"[:300]
        session.execute(
            update(InboundEvent).where(InboundEvent.id == event_id).values(outcome=error)
        )
        batch.failed.append((event_id, error))
        return None
    return handled


def _wait_for(rt: runtime.Runtime, event_ids: list[int]) -> bool:
    """Wait (holding nothing ourselves) until the drains holding these events commit; False
    if they take too long (then a later drain carries on)."""
    with rt.session() as session:
        if session.get_bind().dialect.name != "postgresql":
            return True
        session.execute(select(func.set_config("lock_timeout", f"{WAIT_FOR_OTHER_DRAIN_S}s", True)))
        try:
            session.execute(
                select(InboundEvent.id)
                .where(InboundEvent.id.in_(event_ids))
                .with_for_update(read=True)
            ).all()
        except OperationalError:
            session.rollback()
            return False
    return True


@dataclass(frozen=True)
class Handled:
    """What handling an event did; read once the batch is flushed (ids are known then)."""

    what: str = ""  # what was done, for an event that is not (only) a message
    received: conversations.Received | None = None  # the message, in its conversation
    answers: tuple[Message, ...] = ()  # messages queued in answer

    @property
    def conversation_id(self) -> int | None:
        return self.received.conversation_id if self.received else None

    def outcome(self) -> str:
        """What was done, kept on the event."""
        parts = [self.what] if self.what else []
        if self.received is not None:
            parts.append(f"conversation {self.received.conversation_id}")
            if self.received.keyword:
                parts.append(f"keyword {self.received.keyword}")
        return ", ".join(parts)


def _received(result: conversations.Received) -> Handled:
    answers = (result.auto_reply,) if result.auto_reply is not None else ()
    return Handled(received=result, answers=answers)


# -- SMS (Twilio) ----------------------------------------------------------------------------


def _form(payload: bytes) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(payload.decode(), keep_blank_values=True).items()}


def _sms(rt: runtime.Runtime, session: Session, event: InboundEvent, known) -> Handled:
    form = _form(event.payload)
    return _received(
        conversations.receive(
            session,
            "sms",
            form.get("From", ""),
            form.get("Body", ""),
            default_locale=rt.settings.default_locale,
            event_id=event.id,
            known=known,
        )
    )


# -- Telegram --------------------------------------------------------------------------------


def _telegram(rt: runtime.Runtime, session: Session, event: InboundEvent, known) -> Handled:
    update_ = json.loads(event.payload)
    if "my_chat_member" in update_:
        return Handled(_chat_member(session, update_["my_chat_member"]))
    message = update_.get("message") or update_.get("edited_message")
    if not message or "text" not in message:
        return Handled("ignored: no text message")
    chat_id, text = str(message["chat"]["id"]), message["text"]
    command, _, argument = text.strip().partition(" ")
    if command.split("@")[0] == "/start" and argument.strip():
        return _link_chat(rt, session, event, chat_id, text, argument.strip(), known)
    delivery_id = None
    replied_to = message.get("reply_to_message", {}).get("message_id")
    if replied_to is not None:
        delivery_id = session.scalar(
            select(Delivery.id).where(
                Delivery.channel == "telegram", Delivery.provider_id == f"{chat_id}:{replied_to}"
            )
        )
    return _received(
        conversations.receive(
            session,
            "telegram",
            chat_id,
            text,
            default_locale=rt.settings.default_locale,
            delivery_id=delivery_id,
            event_id=event.id,
            known=known,
        )
    )


def _chat_member(session: Session, member_update: dict) -> str:
    """The resident blocked the bot ("kicked"): stop sending to that chat."""
    status = member_update.get("new_chat_member", {}).get("status")
    chat_id = str(member_update.get("chat", {}).get("id"))
    if status != "kicked":
        return f"chat member status {status}"
    session.execute(
        update(ContactPoint)
        .where(ContactPoint.channel == "telegram", ContactPoint.address == chat_id)
        .values(active=False, deactivated_reason="the resident blocked the bot")
    )
    return "chat blocked the bot: deactivated"


def _link_chat(rt, session, event, chat_id: str, text: str, token: str, known) -> Handled:
    """`/start <token>` from the portal's deep link: the chat becomes the resident's."""
    resident_id = conversations.link_address(session, token, "telegram", chat_id)
    received = conversations.receive(
        session,
        "telegram",
        chat_id,
        text,
        default_locale=rt.settings.default_locale,
        event_id=event.id,
        automatic=True,
        known=known,
    )
    contact = session.scalar(
        select(ContactPoint).where(
            ContactPoint.channel == "telegram", ContactPoint.address == chat_id
        )
    )
    with force_locale(conversations.locale_of(session, contact, rt.settings.default_locale)):
        if resident_id is not None:
            answer = _("Mestni glas: this chat is linked to your account. Notices come here now.")
        else:
            answer = _(
                "Mestni glas: this link has expired or was used already. "
                "Make a new one in the resident portal."
            )
    message = conversations.answer_automatically(session, received.conversation, answer)
    linked = "linked" if resident_id is not None else "link refused"
    return Handled(linked, received, (message,))


# -- e-mail ------------------------------------------------------------------------------------


def _email(rt: runtime.Runtime, session: Session, event: InboundEvent, known) -> Handled:
    envelope = event.meta or {}
    mail = parse_inbound(event.payload, envelope.get("mail_from", ""), envelope.get("rcpt_tos", []))
    if mail.bounce is not None:
        return Handled(_bounce(rt, session, mail))
    if mail.auto:
        return Handled("auto-reply ignored")
    delivery_id, conversation_id = _threading(rt, mail)
    return _received(
        conversations.receive(
            session,
            "email",
            _normalised(mail.sender),
            mail.text,
            full_text=mail.full_text,
            default_locale=rt.settings.default_locale,
            delivery_id=delivery_id,
            conversation_id=conversation_id,
            event_id=event.id,
            known=known,
        )
    )


def _threading(rt: runtime.Runtime, mail: InboundEmail) -> tuple[int | None, int | None]:
    """(delivery, conversation) a reply belongs to: by its reply+TOKEN@ address first (signed,
    so it cannot be guessed), then by the message ids it answers."""
    secret = rt.settings.secret_key
    for token in mail.reply_tokens:
        delivery_id = read_token(secret, "reply", token)
        conversation_id = read_token(secret, "conversation", token)
        if delivery_id is not None or conversation_id is not None:
            return delivery_id, conversation_id
    for message_id in [*mail.in_reply_to, *reversed(mail.references)]:
        delivery_id = delivery_id_from_message_id(message_id)
        if delivery_id is not None:
            return delivery_id, None
        conversation_id = _conversation_from_message_id(message_id)
        if conversation_id is not None:
            return None, conversation_id
    return None, None


def _conversation_from_message_id(message_id: str) -> int | None:
    """Our answers' Message-IDs are m<message>.c<conversation>@domain (hub.outbound)."""
    local = message_id.partition("@")[0]
    head, _, conversation = local.partition(".c")
    if head.startswith("m") and head[1:].isdigit() and conversation.isdigit():
        return int(conversation)
    return None


def _bounce(rt: runtime.Runtime, session: Session, mail: InboundEmail) -> str:
    """A delivery-status report: 5.x.x means the address is dead (deactivated, and the notice
    goes to the resident's next channel); 4.x.x is noted, the relay is still trying."""
    bounce = mail.bounce
    delivery = session.get(Delivery, bounce.delivery_id) if bounce.delivery_id else None
    if delivery is None:
        return "bounce for no known delivery"
    if bounce.action == "delivered":  # a success report (DSN NOTIFY=SUCCESS)
        if delivery.status == DeliveryStatus.SENT:
            delivery.status = DeliveryStatus.DELIVERED
            callbacks.record_delivery_statuses(session, [delivery.id])
        return f"delivery {delivery.id} delivered"
    error = f"bounced {bounce.status}: {bounce.diagnostic or bounce.action}"[:1000]
    if not bounce.permanent:
        delivery.error = error
        return f"delivery {delivery.id} {bounce.action}"
    if delivery.status not in (DeliveryStatus.SENT, DeliveryStatus.DELIVERED):
        return f"delivery {delivery.id} already {delivery.status}"
    delivery.status, delivery.error = DeliveryStatus.GONE, error
    address_is_dead(session, delivery, error, rt.settings.default_locale)
    callbacks.record_delivery_statuses(session, [delivery.id])
    return f"delivery {delivery.id} bounced: address suppressed"


def _normalised(address: str) -> str:
    try:
        return normalise_email(address)
    except InvalidAddress:
        return address


Handler = Callable[[runtime.Runtime, Session, InboundEvent, conversations.Known], Handled]
HANDLERS: dict[str, Handler] = {
    "sms": _sms,
    "telegram": _telegram,
    "email": _email,
}


# -- who sent an event (per-sender order between drains) ---------------------------------------


def _sender(channel: str, payload: bytes, meta: dict | None) -> tuple[str, str] | None:
    """(channel, address) of the sender whose messages must be handled in the order received,
    or None when the order does not matter (a bounce, an update without a chat, a payload we
    cannot read)."""
    try:
        address = SENDERS[channel](payload, meta or {})
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return (channel, address) if address else None


def _telegram_chat(payload: bytes, _meta: dict) -> str | None:
    update_ = json.loads(payload)
    part = update_.get("message") or update_.get("edited_message") or update_.get("my_chat_member")
    return str(part["chat"]["id"]) if part else None


def _mail_from(_payload: bytes, meta: dict) -> str | None:
    sender = (meta.get("mail_from") or "").strip("<>")
    return sender.lower() or None  # the null sender: a bounce report


SENDERS: dict[str, Callable[[bytes, dict], str | None]] = {
    "sms": lambda payload, _meta: _form(payload).get("From"),
    "telegram": _telegram_chat,
    "email": _mail_from,
}
