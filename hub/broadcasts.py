"""Notices: create (validated), start (now or at a time), cancel, and count how they are doing."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

import redis
from flask_babel import gettext as _
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, aliased

from hub import callbacks, queues
from hub.clock import utcnow
from hub.models import (
    Area,
    AuditEntry,
    Broadcast,
    BroadcastContent,
    BroadcastStatus,
    ChannelPolicy,
    Delivery,
    DeliveryStatus,
    Priority,
    Role,
    Topic,
)
from hub.runtime import Runtime
from hub.staff import audit

MAX_TITLE = 200


class BroadcastError(ValueError):
    """Bad input for a notice; the message says what to fix."""


class NotADraft(BroadcastError):
    """The notice has been approved (or sent, or cancelled): it can no longer be changed."""


class SavedNotQueued(RuntimeError):
    """The notice is stored, but Redis could not take its planning job; the sweeper starts it
    once Redis is back. Sending it again would send it twice."""

    def __init__(self, broadcast_id: int):
        super().__init__(broadcast_id)
        self.broadcast_id = broadcast_id


@dataclass(frozen=True)
class NoticeDraft:
    title: str
    topic: str  # slug
    areas: tuple[str, ...]  # slugs; empty means the whole city
    priority: str
    channel_policy: str
    bodies: dict[str, str]  # locale -> text
    titles: dict[str, str] = field(default_factory=dict)  # locale -> title, where not `title`
    scheduled_at: datetime | None = None  # naive UTC
    sms_transliterate: bool = False  # SMS text in GSM-7 (č -> c): fewer segments


def create_broadcast(
    session: Session, draft: NoticeDraft, *, created_by: str, default_locale: str, now=None
) -> Broadcast:
    """Validate a draft and store it as a notice ready to start; raises BroadcastError."""
    now = now or utcnow()
    broadcast = Broadcast(status=BroadcastStatus.DRAFT, created_by=created_by, created_at=now)
    _fill(session, broadcast, draft, default_locale=default_locale, now=now)
    session.add(broadcast)
    session.flush()
    return broadcast


def _fill(
    session: Session, broadcast: Broadcast, draft: NoticeDraft, *, default_locale: str, now
) -> None:
    """Validate a draft and put it into `broadcast` (new, or a draft being edited): the same
    rules for both, so an edit can never store what a new notice could not."""
    title = _checked_title(draft.title)
    if draft.priority not in Priority.ALL:
        raise BroadcastError(_("unknown priority %(value)s", value=draft.priority))
    if draft.channel_policy not in ChannelPolicy.ALL:
        raise BroadcastError(_("unknown channel policy %(value)s", value=draft.channel_policy))
    bodies = {loc: text.strip() for loc, text in draft.bodies.items() if text and text.strip()}
    if any("\0" in text for text in bodies.values()):
        raise BroadcastError(_("the text must not contain NUL characters"))
    if default_locale not in bodies:
        raise BroadcastError(_("the text in %(locale)s is required", locale=default_locale))
    if draft.scheduled_at is not None and draft.scheduled_at <= now:
        raise BroadcastError(_("the scheduled time is in the past"))
    topic = session.scalar(select(Topic).where(Topic.slug == draft.topic))
    if topic is None:
        raise BroadcastError(_("unknown topic %(topic)s", topic=draft.topic))
    areas = _areas(session, draft.areas)
    titles = {loc: _title(draft, loc, title) for loc in bodies}
    broadcast.title = title
    broadcast.topic = topic
    broadcast.areas = areas
    broadcast.priority = draft.priority
    broadcast.channel_policy = draft.channel_policy
    broadcast.scheduled_at = draft.scheduled_at
    broadcast.sms_transliterate = draft.sms_transliterate
    # In place, by locale: a content row keeps its key (broadcast, locale) through an edit.
    kept = {c.locale: c for c in broadcast.contents if c.locale in bodies}
    for loc, body in bodies.items():
        content = kept.get(loc) or BroadcastContent(locale=loc)
        content.title, content.body = titles[loc], body
        kept[loc] = content
    broadcast.contents = list(kept.values())


def _checked_title(raw: str) -> str:
    """A title is one line (it becomes an e-mail subject): 1 to MAX_TITLE characters."""
    title = raw.strip()
    if not title or len(title) > MAX_TITLE:
        raise BroadcastError(_("the title must have 1 to %(n)d characters", n=MAX_TITLE))
    if any(c in title for c in "\r\n\0"):
        raise BroadcastError(_("the title must be a single line"))
    return title


def _title(draft: NoticeDraft, locale: str, default: str) -> str:
    raw = draft.titles.get(locale, "")
    return _checked_title(raw) if raw.strip() else default


def _areas(session: Session, slugs: tuple[str, ...]) -> list[Area]:
    wanted = list(dict.fromkeys(slugs))
    found = {a.slug: a for a in session.scalars(select(Area).where(Area.slug.in_(wanted)))}
    unknown = [s for s in wanted if s not in found]
    if unknown:
        raise BroadcastError(_("unknown area %(area)s", area=", ".join(unknown)))
    return [found[s] for s in wanted]


def mark_scheduled(session: Session, broadcast: Broadcast, approved_by: str) -> None:
    """A draft becomes ready for its planning job (now, or at its scheduled time)."""
    if broadcast.status != BroadcastStatus.DRAFT:
        raise BroadcastError(_("only a draft can be sent"))
    broadcast.status = BroadcastStatus.SCHEDULED
    broadcast.approved_by = approved_by


def cancel_broadcast(session: Session, broadcast_id: int) -> int:
    """Stop what has not gone yet; returns how many deliveries were cancelled."""
    broadcast = session.get(Broadcast, broadcast_id)
    if broadcast is None:
        raise BroadcastError(_("no notice %(id)d", id=broadcast_id))
    if broadcast.status in (BroadcastStatus.DONE, BroadcastStatus.CANCELLED):
        raise BroadcastError(_("the notice has already finished"))
    broadcast.status = BroadcastStatus.CANCELLED
    broadcast.finished_at = utcnow()
    cancelled = session.scalars(
        update(Delivery)
        .where(
            Delivery.broadcast_id == broadcast_id,
            # claimed rows too: a job marks a row sent only while it is still `sending`, so
            # whatever it has not handed over yet is aborted at the server
            Delivery.status.in_(DeliveryStatus.OPEN),
        )
        .values(status=DeliveryStatus.CANCELLED, claim_id=None)
        .returning(Delivery.id)
    ).all()
    callbacks.record_delivery_statuses(session, cancelled)
    return len(cancelled)


@dataclass
class Progress:
    broadcast_id: int
    status: str
    total: int
    by_status: Counter
    by_channel_status: dict[tuple[str, str], int]

    @property
    def open(self) -> int:
        return sum(self.by_status[s] for s in DeliveryStatus.OPEN)

    @property
    def final(self) -> int:
        return self.total - self.open


def progress(session: Session, broadcast_id: int) -> Progress:
    broadcast = session.get(Broadcast, broadcast_id)
    if broadcast is None:
        raise BroadcastError(_("no notice %(id)d", id=broadcast_id))
    rows = session.execute(
        select(Delivery.channel, Delivery.status, func.count())
        .where(Delivery.broadcast_id == broadcast_id)
        .group_by(Delivery.channel, Delivery.status)
    ).all()
    by_status: Counter = Counter()
    by_channel_status = {}
    for channel, status, count in rows:
        by_status[status] += count
        by_channel_status[(channel, status)] = count
    return Progress(
        broadcast_id, broadcast.status, sum(by_status.values()), by_status, by_channel_status
    )


@dataclass(frozen=True)
class FallBack:
    from_channel: str
    to_channel: str
    reason: str
    count: int


def fallbacks(session: Session, broadcast_id: int, limit: int = 10) -> list[FallBack]:
    """What fell back to which channel and why (the first address's error), most common first."""
    tried = aliased(Delivery)
    rows = session.execute(
        select(tried.channel, Delivery.channel, tried.error, func.count())
        .join(tried, tried.id == Delivery.fallback_from_id)
        .where(Delivery.broadcast_id == broadcast_id)
        .group_by(tried.channel, Delivery.channel, tried.error)
        .order_by(func.count().desc())
        .limit(limit)
    ).all()
    return [FallBack(a, b, reason or "", count) for a, b, reason, count in rows]


PUBLISHED = (BroadcastStatus.SENDING, BroadcastStatus.DONE)


def published_notice(session: Session, broadcast_id: int) -> Broadcast | None:
    """A notice that has gone out (the link in a push message or SMS leads here); drafts,
    scheduled and cancelled-before-sending notices are not published."""
    broadcast = session.get(Broadcast, broadcast_id)
    if broadcast is None or broadcast.status not in PUBLISHED:
        return None
    return broadcast


def deferred_count(session: Session, broadcast_id: int, now: datetime | None = None) -> int:
    """Open deliveries waiting for a later time (quiet hours or a retry back-off)."""
    now = now or utcnow()
    return session.scalar(
        select(func.count()).where(
            Delivery.broadcast_id == broadcast_id,
            Delivery.status.in_((DeliveryStatus.PENDING, DeliveryStatus.RETRY)),
            Delivery.not_before > now,
        )
    )


def recent_broadcasts(session: Session, limit: int = 50) -> list[tuple[Broadcast, Counter]]:
    """The newest notices with their delivery counts by status (the staff home page)."""
    broadcasts = list(session.scalars(select(Broadcast).order_by(Broadcast.id.desc()).limit(limit)))
    counts: dict[int, Counter] = {b.id: Counter() for b in broadcasts}
    if broadcasts:
        rows = session.execute(
            select(Delivery.broadcast_id, Delivery.status, func.count())
            .where(Delivery.broadcast_id.in_(counts))
            .group_by(Delivery.broadcast_id, Delivery.status)
        )
        for broadcast_id, status, count in rows:
            counts[broadcast_id][status] = count
    return [(b, counts[b.id]) for b in broadcasts]


@dataclass(frozen=True)
class Actor:
    """Who acts on a notice: a staff member's e-mail (or an API key's name) and their role."""

    name: str
    role: str


# Who may write and start notices at all; starting an emergency also needs APPROVERS.
WRITERS = (Role.ADMIN, Role.BROADCASTER, Role.APPROVER)
APPROVERS = (Role.ADMIN, Role.APPROVER)


def save_draft(rt: Runtime, draft: NoticeDraft, *, actor: Actor) -> int:
    """Store a notice as a draft for someone to start (an emergency: a second person)."""
    if actor.role not in WRITERS:
        raise BroadcastError(_("your role cannot write notices"))
    with rt.session() as session:
        broadcast = create_broadcast(
            session, draft, created_by=actor.name, default_locale=rt.settings.default_locale
        )
        audit(
            session,
            actor.name,
            "broadcast.draft",
            f"broadcast:{broadcast.id}",
            priority=broadcast.priority,
            topic=draft.topic,
        )
        return broadcast.id


def approval_refusal(
    broadcast: Broadcast, actor: Actor, *, four_eyes: bool, authors: Collection[str] = ()
) -> str | None:
    """Why `actor` may not start this draft, or None when they may. `authors`: who edited
    it besides its creator (draft_authors); none of them is a second pair of eyes."""
    if broadcast.status != BroadcastStatus.DRAFT:
        return _("only a draft can be sent")
    if actor.role not in WRITERS:
        return _("your role cannot start notices")
    if broadcast.priority == Priority.EMERGENCY and four_eyes:
        if actor.role not in APPROVERS:
            return _("an emergency must be approved by someone with the approver role")
        if actor.name == broadcast.created_by or actor.name in authors:
            return _("an emergency must be approved by a second person, not its author")
    return None


def _content(broadcast: Broadcast) -> dict:
    """Everything about a notice that decides what residents get, as plain data."""
    return {
        "title": broadcast.title,
        "topic": broadcast.topic.slug,
        "areas": sorted(area.slug for area in broadcast.areas),
        "priority": broadcast.priority,
        "channel_policy": broadcast.channel_policy,
        "scheduled_at": broadcast.scheduled_at.isoformat() if broadcast.scheduled_at else None,
        "sms_transliterate": broadcast.sms_transliterate,
        "texts": {c.locale: [c.title, c.body] for c in broadcast.contents},
    }


def content_fingerprint(broadcast: Broadcast) -> str:
    """A hash of what the notice will send. The draft page puts it in its approve form, and
    start_draft refuses when the draft has changed since: an approver approves exactly what
    they read, never an edit made while the page was open."""
    canonical = json.dumps(_content(broadcast), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def draft_authors(session: Session, broadcast_id: int) -> frozenset[str]:
    """Who edited a draft (from the audit log, written with each edit)."""
    return frozenset(
        session.scalars(
            select(AuditEntry.actor).where(
                AuditEntry.action == "broadcast.edit",
                AuditEntry.target == f"broadcast:{broadcast_id}",
            )
        )
    )


def _locked(session: Session, broadcast_id: int) -> Broadcast:
    """The notice, read after taking its row's lock when it is a draft (a no-op UPDATE: the
    row lock on PostgreSQL, the write lock on SQLite), so an edit and an approval of one draft
    happen one after the other, never interleaved. The caller checks the status."""
    session.execute(
        update(Broadcast)
        .where(Broadcast.id == broadcast_id, Broadcast.status == BroadcastStatus.DRAFT)
        .values(status=BroadcastStatus.DRAFT)
        .execution_options(synchronize_session=False)
    )
    broadcast = session.get(Broadcast, broadcast_id, populate_existing=True)
    if broadcast is None:
        raise BroadcastError(_("no notice %(id)d", id=broadcast_id))
    return broadcast


def start_draft(
    rt: Runtime, broadcast_id: int, *, actor: Actor, fingerprint: str | None = None
) -> None:
    """Approve a draft and start it (now, or at its time); raises BroadcastError, and
    SavedNotQueued when the approval is stored but Redis could not take the planning job.
    `fingerprint`: the content_fingerprint the approver saw; refused if the draft changed."""
    with rt.session() as session:
        # Locked: of two people approving at once, one starts it and the other is told.
        broadcast = _locked(session, broadcast_id)
        refusal = approval_refusal(
            broadcast,
            actor,
            four_eyes=rt.settings.emergency_four_eyes,
            authors=draft_authors(session, broadcast_id),
        )
        if refusal:
            raise BroadcastError(refusal)
        if fingerprint is not None and fingerprint != content_fingerprint(broadcast):
            raise BroadcastError(_("the draft was changed after you opened it: read it again"))
        broadcast.status = BroadcastStatus.SCHEDULED
        broadcast.approved_by = actor.name
        audit(session, actor.name, "broadcast.approve", f"broadcast:{broadcast_id}")
        priority, at = broadcast.priority, broadcast.scheduled_at
    _enqueue_planning(rt, broadcast_id, priority, at)


def _editable(session: Session, broadcast_id: int, actor: Actor) -> Broadcast:
    if actor.role not in WRITERS:
        raise BroadcastError(_("your role cannot write notices"))
    broadcast = _locked(session, broadcast_id)
    if broadcast.status != BroadcastStatus.DRAFT:
        raise NotADraft(_("only a draft can be changed or deleted"))
    return broadcast


def edit_draft(rt: Runtime, broadcast_id: int, draft: NoticeDraft, *, actor: Actor) -> bool:
    """Replace a draft's content with `draft` (validated as a new notice is); raises
    NotADraft once it has been approved. An edit makes its author one of the draft's authors
    (an emergency then needs yet another approver), and any approve page opened before it
    stale (content_fingerprint). Returns False when nothing changed (nothing audited)."""
    with rt.session() as session:
        broadcast = _editable(session, broadcast_id, actor)
        before = _content(broadcast)
        _fill(session, broadcast, draft, default_locale=rt.settings.default_locale, now=utcnow())
        session.flush()
        after = _content(broadcast)
        changed = sorted(key for key in after if after[key] != before[key])
        if changed:
            audit(
                session,
                actor.name,
                "broadcast.edit",
                f"broadcast:{broadcast_id}",
                changed=changed,
                priority=broadcast.priority,
            )
        return bool(changed)


def delete_draft(rt: Runtime, broadcast_id: int, *, actor: Actor) -> str:
    """Delete a draft nobody approved; returns its title. Raises NotADraft once approved."""
    with rt.session() as session:
        broadcast = _editable(session, broadcast_id, actor)
        title = broadcast.title
        session.delete(broadcast)
        audit(session, actor.name, "broadcast.delete", f"broadcast:{broadcast_id}", title=title)
        return title


def drafts(session: Session, limit: int = 100) -> list[Broadcast]:
    """Drafts waiting to be finished or approved, the most recently written first."""
    return list(
        session.scalars(
            select(Broadcast)
            .where(Broadcast.status == BroadcastStatus.DRAFT)
            .order_by(Broadcast.id.desc())
            .limit(limit)
        )
    )


def send_notice(rt: Runtime, draft: NoticeDraft, *, actor: str) -> int:
    """Create a notice and start it (now, or at its time): the planning job does the rest.
    For operators and tests (the CLI); staff and API clients go through save_draft and
    start_draft, which apply the roles and the four-eyes rule."""
    with rt.session() as session:
        broadcast = create_broadcast(
            session, draft, created_by=actor, default_locale=rt.settings.default_locale
        )
        mark_scheduled(session, broadcast, approved_by=actor)
        audit(
            session,
            actor,
            "broadcast.send",
            f"broadcast:{broadcast.id}",
            priority=broadcast.priority,
            topic=draft.topic,
            areas=list(draft.areas),
        )
        broadcast_id, priority, at = broadcast.id, broadcast.priority, broadcast.scheduled_at
    _enqueue_planning(rt, broadcast_id, priority, at)
    return broadcast_id


def _enqueue_planning(rt: Runtime, broadcast_id: int, priority: str, at: datetime | None) -> None:
    try:
        queues.enqueue_plan(rt.redis, priority, broadcast_id, at)
    except redis.RedisError:
        raise SavedNotQueued(broadcast_id) from None
