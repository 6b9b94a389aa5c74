"""The sweeper: the database is the truth, Redis only holds work. It gives back rows claimed by
a worker that died, re-enqueues work Redis lost, starts notices whose time has come, and marks
finished notices done. Every `hub worker` runs it now and then (one at a time, by a Redis lock);
`hub sweep` runs it once."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import and_, func, select, update

from hub import callbacks, inbound, outbound, queues, runtime
from hub.clock import utcnow
from hub.delivery import CLAIM_KEY, finish_if_done
from hub.inbox import wake_snoozed
from hub.models import (
    Broadcast,
    BroadcastStatus,
    Delivery,
    DeliveryStatus,
    InboundEvent,
    Message,
    MessageDirection,
    NotifyNotification,
)
from hub.notify import notifications
from hub.notify import statuses as notify_statuses

LOCK_KEY = "hub:sweeper:lock"


@dataclass
class SweepReport:
    released: int = 0
    requeued_chunks: int = 0
    started: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)
    requeued_inbound: int = 0  # received messages, answers and /v2 sends whose job Redis lost
    woken: int = 0  # snoozed conversations whose time came
    requeued_callbacks: int = 0  # callbacks to other systems whose job Redis lost


def sweep(rt: runtime.Runtime) -> SweepReport:
    report = SweepReport()
    report.released = release_dead_claims(rt)
    report.requeued_chunks = requeue_lost_chunks(rt)
    report.started = start_due_broadcasts(rt)
    report.finished = [b for b in sending_broadcasts(rt) if finish_if_done(rt, b)]
    report.requeued_inbound = requeue_lost_conversation_work(rt)
    report.requeued_callbacks = callbacks.requeue_lost(rt)
    with rt.session() as session:
        report.woken = wake_snoozed(session)
    return report


def sweep_if_free(rt: runtime.Runtime) -> SweepReport | None:
    """Sweep unless another worker holds the lock (it expires if that worker dies)."""
    ttl = max(5, rt.settings.sweep_interval_s)
    if not rt.redis.set(LOCK_KEY, 1, nx=True, ex=ttl):
        return None
    return sweep(rt)


def release_dead_claims(rt: runtime.Runtime) -> int:
    """Rows in `sending` whose job stopped heart-beating go back to `pending`.

    Such rows never reached anyone: a message counts as handed over only after its row is
    marked sent (channels/email.py), and a dropped SMTP connection discards the rest."""
    stale_before = utcnow() - timedelta(seconds=rt.settings.claim_ttl_s)
    with rt.session() as session:
        claims = session.scalars(
            select(Delivery.claim_id)
            .where(Delivery.status == DeliveryStatus.SENDING, Delivery.claimed_at < stale_before)
            .distinct()
        ).all()
        dead = [c for c in claims if c and not rt.redis.exists(CLAIM_KEY.format(c))]
        released = 0
        limit = rt.settings.max_attempts
        for claim in dead:
            of_claim = and_(Delivery.claim_id == claim, Delivery.status == DeliveryStatus.SENDING)
            # Each time counts as an attempt: a message that kills its job every time must end
            # failed, not loop for ever.
            failed = session.scalars(
                update(Delivery)
                .where(of_claim, Delivery.attempts + 1 >= limit)
                .values(
                    status=DeliveryStatus.FAILED,
                    claim_id=None,
                    attempts=Delivery.attempts + 1,
                    error=f"its send job stopped {limit} times before finishing",
                )
                .returning(Delivery.id)
            ).all()
            callbacks.record_delivery_statuses(session, failed)
            released += session.execute(
                update(Delivery)
                .where(of_claim)
                .values(
                    status=DeliveryStatus.PENDING,
                    claim_id=None,
                    not_before=None,
                    attempts=Delivery.attempts + 1,
                    error="its send job stopped before finishing; sent again",
                )
            ).rowcount
    return released


def requeue_lost_chunks(rt: runtime.Runtime) -> int:
    """Chunks with due rows and no queued, running or scheduled job get one again."""
    now = utcnow()
    grace = timedelta(seconds=rt.settings.sweep_grace_s)
    size = rt.settings.chunk_size
    with rt.session() as session:
        rows = session.execute(
            select(Delivery.broadcast_id, (Delivery.id // size).label("bucket"), Broadcast.priority)
            .join(Broadcast, Broadcast.id == Delivery.broadcast_id)
            .where(
                Delivery.status.in_((DeliveryStatus.PENDING, DeliveryStatus.RETRY)),
                Delivery.created_at < now - grace,
                (Delivery.not_before.is_(None)) | (Delivery.not_before < now - grace),
                Broadcast.status == BroadcastStatus.SENDING,
            )
            .distinct()
        ).all()
    if not rows:
        return 0
    live = queues.live_jobs(rt.redis, [queues.send_job_id(b, bucket) for b, bucket, _ in rows])
    lost = [row for row, is_live in zip(rows, live, strict=True) if not is_live]
    for priority in {p for _, _, p in lost}:
        queues.enqueue_send_chunks(
            rt.redis, priority, [(b, bucket) for b, bucket, p in lost if p == priority]
        )
    return len(lost)


def start_due_broadcasts(rt: runtime.Runtime) -> list[int]:
    """Notices scheduled for now (or stuck half-planned) whose planning job is gone."""
    now = utcnow()
    grace = timedelta(seconds=rt.settings.sweep_grace_s)
    with rt.session() as session:
        due = session.execute(
            select(Broadcast.id, Broadcast.priority).where(
                Broadcast.status.in_((BroadcastStatus.SCHEDULED, BroadcastStatus.PLANNING)),
                func.coalesce(Broadcast.scheduled_at, Broadcast.created_at) < now - grace,
            )
        ).all()
    started = []
    live = queues.live_jobs(rt.redis, [queues.plan_job_id(b) for b, _ in due]) if due else []
    for (broadcast_id, priority), is_live in zip(due, live, strict=True):
        if not is_live:
            queues.enqueue_plan(rt.redis, priority, broadcast_id)
            started.append(broadcast_id)
    return started


def sending_broadcasts(rt: runtime.Runtime) -> list[int]:
    with rt.session() as session:
        return list(
            session.scalars(select(Broadcast.id).where(Broadcast.status == BroadcastStatus.SENDING))
        )


def requeue_lost_conversation_work(rt: runtime.Runtime) -> int:
    """Inbound events stored but not processed, and answers and /v2 notifications not yet
    sent, whose job is gone (Redis lost it, or was down when they were stored)."""
    before = utcnow() - timedelta(seconds=rt.settings.sweep_grace_s)
    with rt.session() as session:
        events = session.execute(
            select(InboundEvent.id, InboundEvent.outcome).where(
                InboundEvent.processed_at.is_(None), InboundEvent.received_at < before
            )
        ).all()
        answers = session.scalars(
            select(Message.id).where(
                Message.direction == MessageDirection.OUT,
                Message.status.in_(("pending", "retry")),
                Message.created_at < before,
            )
        ).all()
        api_messages = session.scalars(
            select(NotifyNotification.seq).where(
                NotifyNotification.status == notify_statuses.CREATED,
                NotifyNotification.created_at < before,
            )
        ).all()
    # Waiting events need one drain (unless one is queued or at work); an event whose
    # processing failed in a drain gets a job of its own, as answers do.
    waiting = [i for i, outcome in events if outcome is None]
    failed = [i for i, outcome in events if outcome is not None]
    lost = 0
    if waiting and not inbound.drain_live(rt) and inbound.request_drain(rt):
        lost = len(waiting)
    for ids, job_id, enqueue in (
        (failed, inbound.job_id, inbound.enqueue),
        (answers, outbound.job_id, outbound.enqueue),
        (api_messages, notifications.job_id, notifications.enqueue),
    ):
        if not ids:
            continue
        live = queues.live_jobs(rt.redis, [job_id(i) for i in ids])
        for item_id, is_live in zip(ids, live, strict=True):
            if not is_live:
                enqueue(rt, item_id)
                lost += 1
    return lost
