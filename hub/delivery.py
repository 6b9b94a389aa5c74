"""Send jobs: claim a chunk of the outbox, send it through its channel within the provider's rate,
record every outcome, retry with back-off, and fall back to the next channel when an address is
dead. Idempotent: rows are claimed with a conditional UPDATE, so a job run twice sends nothing
twice."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parseaddr
from itertools import groupby

from sqlalchemy import and_, exists, func, insert, select, update
from sqlalchemy.orm import Session

from channels import base as outcome
from channels.email import OutgoingEmail, SmtpSession, SmtpSettings
from hub import queues, runtime
from hub.clock import utcnow
from hub.models import (
    Broadcast,
    BroadcastStatus,
    ChannelPolicy,
    ContactPoint,
    Delivery,
    DeliveryStatus,
)
from hub.ratelimit import TokenBucket
from hub.rendering import UNSUBSCRIBE_MARK, ensure_renderings, renderings_of
from hub.tokens import make_token

# A job that would wait longer than this for rate tokens gives its rows back and comes back
# later, so a throttled channel never holds a worker (and the emergencies behind it) hostage.
MAX_TOKEN_WAIT_S = 2.0
CLAIM_KEY = "hub:claim:{}"


@dataclass(frozen=True)
class ClaimedRow:
    id: int
    resident_id: int
    contact_point_id: int
    channel: str
    locale: str
    attempts: int
    address: str


class EmailAdapter:
    """Turns claimed rows into e-mails for channels.email and back."""

    channel = "email"

    def __init__(self, rt: runtime.Runtime, broadcast_id: int, renderings: dict):
        self.settings = rt.settings
        self.broadcast_id = broadcast_id
        self.renderings = renderings
        self.domain = parseaddr(self.settings.mail_from)[1].rpartition("@")[2] or "localhost"
        self.concurrency = max(1, self.settings.email_concurrency)
        self.rate_per_s = self.settings.email_rate_per_s

    def session(self) -> SmtpSession:
        s = self.settings
        if s.email_uses_sandbox:
            smtp = SmtpSettings("127.0.0.1", s.sandbox_smtp_port, starttls=False)
        else:
            smtp = SmtpSettings(
                s.smtp_host, s.smtp_port, s.smtp_username, s.smtp_password, s.smtp_starttls
            )
        return SmtpSession(smtp, s.mail_from, s.email_concurrency)

    def outgoing(self, row: ClaimedRow) -> OutgoingEmail:
        rendering = self.renderings[(row.locale, "email")]
        secret = self.settings.secret_key
        unsubscribe = f"{self.settings.base_url}/unsubscribe/{make_token(secret, 'unsub', row.id)}"
        return OutgoingEmail(
            key=row.id,
            to=row.address,
            subject=rendering.subject,
            text=rendering.text.replace(UNSUBSCRIBE_MARK, unsubscribe),
            html=rendering.html.replace(UNSUBSCRIBE_MARK, unsubscribe),
            message_id=f"<n{self.broadcast_id}.d{row.id}@{self.domain}>",
            envelope_from=f"bounce+{row.id}@{self.domain}",
            reply_to=f"reply+{make_token(secret, 'reply', row.id)}@{self.domain}",
            unsubscribe_url=unsubscribe,
        )

    async def send_round(self, session: SmtpSession, rows, commit) -> list[outcome.Outcome]:
        mails = [self.outgoing(row) for row in rows]
        message_ids = {m.key: m.message_id for m in mails}
        return await session.send_round(
            mails, lambda keys: commit({k: message_ids[k] for k in keys})
        )


CHANNEL_ADAPTERS = {"email": EmailAdapter}


def send_chunk(broadcast_id: int, bucket: int) -> dict:
    """RQ entry point: send the due deliveries of one chunk of one notice."""
    return ChunkJob(runtime.current(), broadcast_id, bucket).run()


class ChunkJob:
    def __init__(self, rt: runtime.Runtime, broadcast_id: int, bucket: int):
        self.rt = rt
        self.settings = rt.settings
        self.broadcast_id = broadcast_id
        self.bucket = bucket
        size = self.settings.chunk_size
        self.lo, self.hi = bucket * size, bucket * size + size - 1
        self.claim_id = uuid.uuid4().hex
        self.job_id = queues.send_job_id(broadcast_id, bucket)
        self.counts: dict[str, int] = {}
        self.fallback_ids: list[int] = []

    def run(self) -> dict:
        with self.rt.session() as session:
            broadcast = session.get(Broadcast, self.broadcast_id)
            if broadcast is None or broadcast.status == BroadcastStatus.CANCELLED:
                return {"claimed": 0}
            self.priority, self.policy = broadcast.priority, broadcast.channel_policy
        rows = self.claim()
        if rows:
            with self.rt.session() as session:
                renderings = renderings_of(session, self.broadcast_id)
            for channel, group in groupby(rows, key=lambda r: r.channel):
                adapter = CHANNEL_ADAPTERS[channel](self.rt, self.broadcast_id, renderings)
                asyncio.run(self.send_channel(adapter, list(group)))
            self.rt.redis.delete(CLAIM_KEY.format(self.claim_id))
        self.enqueue_follow_ups()
        queues.clear_running(self.rt.redis, self.job_id)
        finish_if_done(self.rt, self.broadcast_id)
        return {"claimed": len(rows), **self.counts}

    # -- claiming --------------------------------------------------------------------------

    def heartbeat(self) -> None:
        """While these keys live, the sweeper leaves this chunk and its claimed rows alone."""
        ttl = self.settings.claim_ttl_s
        self.rt.redis.set(CLAIM_KEY.format(self.claim_id), 1, ex=ttl)
        queues.mark_running(self.rt.redis, self.job_id, ttl)

    def _in_chunk(self):
        return and_(
            Delivery.broadcast_id == self.broadcast_id,
            Delivery.id >= self.lo,
            Delivery.id <= self.hi,
        )

    def claim(self) -> list[ClaimedRow]:
        now = utcnow()
        self.heartbeat()
        with self.rt.session() as session:
            session.execute(
                update(Delivery)
                .where(
                    self._in_chunk(),
                    Delivery.status.in_((DeliveryStatus.PENDING, DeliveryStatus.RETRY)),
                    (Delivery.not_before.is_(None)) | (Delivery.not_before <= now),
                )
                .values(status=DeliveryStatus.SENDING, claim_id=self.claim_id, claimed_at=now)
            )
            rows = session.execute(
                select(
                    Delivery.id,
                    Delivery.resident_id,
                    Delivery.contact_point_id,
                    Delivery.channel,
                    Delivery.locale,
                    Delivery.attempts,
                    ContactPoint.address,
                )
                .join(ContactPoint, ContactPoint.id == Delivery.contact_point_id)
                .where(self._in_chunk(), Delivery.claim_id == self.claim_id)
                .order_by(Delivery.channel, Delivery.id)
            ).all()
        return [ClaimedRow(*row) for row in rows]

    # -- sending ---------------------------------------------------------------------------

    async def send_channel(self, adapter, rows: list[ClaimedRow]) -> None:
        bucket = TokenBucket(self.rt.redis, adapter.channel, adapter.rate_per_s)
        concurrency = adapter.concurrency
        async with adapter.session() as smtp:
            position = 0
            while position < len(rows):
                grant = bucket.take(min(concurrency, len(rows) - position))
                if not grant.granted:
                    if grant.wait_s > MAX_TOKEN_WAIT_S:
                        self.release(rows[position:], grant.wait_s)
                        return
                    await asyncio.sleep(grant.wait_s)
                    continue
                batch = rows[position : position + grant.granted]
                position += len(batch)
                self.heartbeat()
                results = await adapter.send_round(smtp, batch, self.commit_sent)
                self.record(results, {r.id: r for r in batch})

    def commit_sent(self, provider_ids: dict[int, str]) -> set[int]:
        """Mark staged messages sent before they are completed at the provider (see
        channels/email.py); returns the ids this job still owns."""
        now = utcnow()
        with self.rt.session() as session:
            owned = set(
                session.scalars(
                    update(Delivery)
                    .where(
                        Delivery.id.in_(list(provider_ids)),
                        Delivery.claim_id == self.claim_id,
                        Delivery.status == DeliveryStatus.SENDING,
                    )
                    .values(
                        status=DeliveryStatus.SENT,
                        sent_at=now,
                        attempts=Delivery.attempts + 1,
                        error=None,
                    )
                    .returning(Delivery.id)
                )
            )
            if owned:
                session.execute(
                    update(Delivery),
                    [{"id": i, "provider_id": provider_ids[i]} for i in owned],
                )
        self._count(DeliveryStatus.SENT, len(owned))
        return owned

    def _count(self, status: str, n: int = 1) -> None:
        self.counts[status] = self.counts.get(status, 0) + n

    def release(self, rows: list[ClaimedRow], wait_s: float) -> None:
        """Give rows back for later (rate limit), so the worker is free for other work."""
        later = utcnow() + timedelta(seconds=wait_s)
        with self.rt.session() as session:
            session.execute(
                update(Delivery)
                .where(
                    Delivery.id.in_([r.id for r in rows]),
                    Delivery.claim_id == self.claim_id,
                    Delivery.status == DeliveryStatus.SENDING,
                )
                .values(status=DeliveryStatus.PENDING, claim_id=None, not_before=later)
            )

    # -- outcomes --------------------------------------------------------------------------

    def record(self, results: list[outcome.Outcome], rows: dict[int, ClaimedRow]) -> None:
        unhappy = [o for o in results if o.status != outcome.SENT or o.error]
        if not unhappy:
            return
        now = utcnow()
        with self.rt.session() as session:
            for result in unhappy:
                row = rows[result.key]
                if result.status == outcome.SENT:
                    self._update(session, row, error=result.error)
                elif result.status == outcome.RETRY:
                    self._retry_or_fail(session, row, result, now)
                elif result.status == outcome.GONE:
                    self._gone(session, row, result.error)
                else:
                    self._update(session, row, status=DeliveryStatus.FAILED, error=result.error)
                    self._blame_address(session, row)
                    self._count(DeliveryStatus.FAILED)

    def _update(self, session: Session, row: ClaimedRow, **values) -> None:
        session.execute(
            update(Delivery)
            .where(Delivery.id == row.id, Delivery.claim_id == self.claim_id)
            .values(**values)
        )

    def _retry_or_fail(self, session, row: ClaimedRow, result: outcome.Outcome, now) -> None:
        attempts = row.attempts + 1
        if attempts >= self.settings.max_attempts:
            error = f"gave up after {attempts} attempts: {result.error}"
            self._update(
                session, row, status=DeliveryStatus.FAILED, attempts=attempts, error=error[:1000]
            )
            self._count(DeliveryStatus.FAILED)
            return
        delay = queues.retry_delay(attempts)
        if result.retry_after_s:
            delay = max(delay, timedelta(seconds=result.retry_after_s))
        self._update(
            session,
            row,
            status=DeliveryStatus.RETRY,
            attempts=attempts,
            not_before=now + delay,
            claim_id=None,
            error=result.error,
        )
        self._count(DeliveryStatus.RETRY)

    def _blame_address(self, session: Session, row: ClaimedRow) -> None:
        session.execute(
            update(ContactPoint)
            .where(ContactPoint.id == row.contact_point_id)
            .values(failure_count=ContactPoint.failure_count + 1)
        )

    def _gone(self, session: Session, row: ClaimedRow, error: str | None) -> None:
        """The address is dead: stop using it, and under `preferred` try the next channel."""
        self._update(session, row, status=DeliveryStatus.GONE, error=error)
        session.execute(
            update(ContactPoint)
            .where(ContactPoint.id == row.contact_point_id)
            .values(
                active=False,
                deactivated_reason=(error or "")[:500],
                failure_count=ContactPoint.failure_count + 1,
            )
        )
        self._count(DeliveryStatus.GONE)
        if self.policy == ChannelPolicy.PREFERRED:
            new_id = add_fallback(
                session,
                self.broadcast_id,
                row.id,
                row.resident_id,
                row.locale,
                self.settings.default_locale,
            )
            if new_id is not None:
                self.fallback_ids.append(new_id)

    # -- afterwards ------------------------------------------------------------------------

    def enqueue_follow_ups(self) -> None:
        """Come back for rows that wait (quiet hours, back-off, rate), and start fall-backs."""
        redis, size = self.rt.redis, self.settings.chunk_size
        if self.fallback_ids:
            buckets = {(self.broadcast_id, i // size) for i in self.fallback_ids}
            queues.enqueue_send_chunks(redis, self.priority, sorted(buckets))
        with self.rt.session() as session:
            next_time = session.scalar(
                select(func.min(Delivery.not_before)).where(
                    self._in_chunk(),
                    Delivery.status.in_((DeliveryStatus.PENDING, DeliveryStatus.RETRY)),
                )
            )
        if next_time is not None:
            queues.schedule_send_chunk(
                redis, self.priority, self.broadcast_id, self.bucket, max(next_time, utcnow())
            )


def add_fallback(
    session: Session,
    broadcast_id: int,
    from_id: int,
    resident_id: int,
    locale: str,
    default_locale: str,
) -> int | None:
    """A delivery on the resident's next usable contact point not yet tried for this notice."""
    already = exists().where(
        Delivery.broadcast_id == broadcast_id, Delivery.contact_point_id == ContactPoint.id
    )
    candidate = session.execute(
        select(ContactPoint.id, ContactPoint.channel)
        .where(
            ContactPoint.resident_id == resident_id,
            ContactPoint.verified.is_(True),
            ContactPoint.active.is_(True),
            ContactPoint.opted_out_at.is_(None),
            ContactPoint.channel.in_(tuple(CHANNEL_ADAPTERS)),
            ~already,
        )
        .order_by(ContactPoint.rank, ContactPoint.id)
        .limit(1)
    ).first()
    if candidate is None:
        return None
    broadcast = session.get(Broadcast, broadcast_id)
    ensure_renderings(session, broadcast, {(locale, candidate.channel)}, default_locale)
    return session.scalar(
        insert(Delivery)
        .values(
            broadcast_id=broadcast_id,
            resident_id=resident_id,
            contact_point_id=candidate.id,
            channel=candidate.channel,
            locale=locale,
            status=DeliveryStatus.PENDING,
            attempts=0,
            fallback_from_id=from_id,
            created_at=utcnow(),
        )
        .returning(Delivery.id)
    )


def finish_if_done(rt: runtime.Runtime, broadcast_id: int, now: datetime | None = None) -> bool:
    """Mark a sending notice done once none of its deliveries is open."""
    with rt.session() as session:
        still_open = session.scalar(
            select(Delivery.id)
            .where(
                Delivery.broadcast_id == broadcast_id,
                Delivery.status.in_(DeliveryStatus.OPEN),
            )
            .limit(1)
        )
        if still_open is not None:
            return False
        result = session.execute(
            update(Broadcast)
            .where(Broadcast.id == broadcast_id, Broadcast.status == BroadcastStatus.SENDING)
            .values(status=BroadcastStatus.DONE, finished_at=now or utcnow())
        )
        return bool(result.rowcount)
