"""Send jobs: claim a chunk of the outbox, send it through its channel within the provider's rate,
record every outcome, retry with back-off, and fall back to the next channel when an address is
dead. Idempotent: rows are claimed with a conditional UPDATE, so a job run twice sends nothing
twice. A job never holds its worker long: it stops after HUB_JOB_BUDGET seconds, when the rate
limit would keep it waiting, or when an emergency is sending, gives its remaining rows back and
comes back later, so an emergency never waits behind a bulk send."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta
from itertools import groupby

from sqlalchemy import and_, bindparam, case, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased

from channels import base as outcome
from hub import callbacks, queues, runtime
from hub.adapters import CHANNEL_ADAPTERS, Adapter, ClaimedRow, SendContext
from hub.clock import utcnow
from hub.models import (
    Broadcast,
    BroadcastStatus,
    ChannelPolicy,
    ContactPoint,
    Delivery,
    DeliveryStatus,
    Priority,
)
from hub.ratelimit import TokenBucket
from hub.rendering import ensure_renderings, renderings_of

# A job that would wait longer than this for one rate token gives its rows back and comes back
# when the token is there.
MAX_TOKEN_WAIT_S = 2.0
CLAIM_KEY = "hub:claim:{}"
EMERGENCY_KEY = "hub:emergency-sending"  # while it lives, other jobs yield their worker
EMERGENCY_CHECK_S = 0.5
OPEN_WAITING = (DeliveryStatus.PENDING, DeliveryStatus.RETRY)


_loop: asyncio.AbstractEventLoop | None = None


def run_in_loop(coroutine):
    """Run a job's coroutine in this process's one event loop: unlike asyncio.run's fresh loop
    per job, it keeps the SMTP connections open from one job to the next."""
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    return _loop.run_until_complete(coroutine)


def send_chunk(broadcast_id: int, bucket: int) -> dict:
    """RQ entry point: send the due deliveries of one chunk of one notice."""
    return ChunkJob(runtime.current(), broadcast_id, bucket).run()


def announce_emergency(rt: runtime.Runtime) -> None:
    """Tell every running non-emergency job to give its worker up (see ChunkJob.should_stop)."""
    rt.redis.set(EMERGENCY_KEY, 1, ex=max(5, rt.settings.claim_ttl_s))


def end_emergency_if_none_left(rt: runtime.Runtime) -> None:
    """The last emergency is done: bulk jobs need not wait for the signal to expire (until
    then each would claim its rows and give them straight back, for up to HUB_CLAIM_TTL)."""
    with rt.session() as session:
        still = session.scalar(
            select(Broadcast.id)
            .where(
                Broadcast.priority == Priority.EMERGENCY,
                Broadcast.status.in_((BroadcastStatus.PLANNING, BroadcastStatus.SENDING)),
            )
            .limit(1)
        )
    if still is None:
        rt.redis.delete(EMERGENCY_KEY)


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
        self.outcomes: list[outcome.Outcome] = []
        self.rows: dict[int, ClaimedRow] = {}
        self.started = time.monotonic()
        self.last_beat = 0.0
        self.last_emergency_check = 0.0

    def run(self) -> dict:
        with self.rt.session() as session:
            broadcast = session.get(Broadcast, self.broadcast_id)
            if broadcast is None or broadcast.status == BroadcastStatus.CANCELLED:
                return {"claimed": 0}
            self.priority, self.policy = broadcast.priority, broadcast.channel_policy
        self.heartbeat()
        self.skip_unusable()
        rows = self.claim()
        if rows:
            with self.rt.session() as session:
                renderings = renderings_of(session, self.broadcast_id)
            context = SendContext(self.rt, self.broadcast_id, self.priority, renderings)
            for channel, group in groupby(rows, key=lambda r: r.channel):
                adapter = CHANNEL_ADAPTERS[channel](context)
                run_in_loop(self.send_channel(adapter, list(group)))
            self.flush_outcomes()
            self.rt.redis.delete(CLAIM_KEY.format(self.claim_id))
        self.enqueue_follow_ups()
        queues.clear_running(self.rt.redis, self.job_id)
        if finish_if_done(self.rt, self.broadcast_id) and self.priority == Priority.EMERGENCY:
            end_emergency_if_none_left(self.rt)
        return {"claimed": len(rows), **self.counts}

    # -- claiming --------------------------------------------------------------------------

    def heartbeat(self) -> None:
        """While these keys live, the sweeper leaves this chunk and its claimed rows alone."""
        ttl = self.settings.claim_ttl_s
        with self.rt.redis.pipeline() as pipe:
            pipe.set(CLAIM_KEY.format(self.claim_id), 1, ex=ttl)
            pipe.set(queues.RUNNING_KEY.format(self.job_id), 1, ex=ttl)
            if self.priority == Priority.EMERGENCY:
                pipe.set(EMERGENCY_KEY, 1, ex=max(5, ttl))
            pipe.execute()
        self.last_beat = time.monotonic()

    def _in_chunk(self):
        return and_(
            Delivery.broadcast_id == self.broadcast_id,
            Delivery.id >= self.lo,
            Delivery.id <= self.hi,
        )

    def _due(self, now: datetime):
        return and_(
            Delivery.status.in_(OPEN_WAITING),
            or_(Delivery.not_before.is_(None), Delivery.not_before <= now),
        )

    def skip_unusable(self) -> None:
        """Rows whose address was deactivated or opted out since planning are not sent: an
        opted-out address is cancelled; a dead one falls back like a bounce."""
        now = utcnow()
        unusable = or_(ContactPoint.active.is_(False), ContactPoint.opted_out_at.is_not(None))
        with self.rt.session() as session:
            rows = session.execute(
                select(Delivery.id, Delivery.resident_id, Delivery.locale, ContactPoint.active)
                .join(ContactPoint, ContactPoint.id == Delivery.contact_point_id)
                .where(self._in_chunk(), self._due(now), unusable)
            ).all()
            for delivery_id, resident_id, locale, active in rows:
                if active:
                    reason, status = "the address opted out", DeliveryStatus.CANCELLED
                else:
                    reason, status = "the address was deactivated", DeliveryStatus.GONE
                session.execute(
                    update(Delivery)
                    .where(Delivery.id == delivery_id, Delivery.status.in_(OPEN_WAITING))
                    .values(status=status, error=reason)
                )
                if status == DeliveryStatus.GONE:
                    self._fall_back(session, delivery_id, resident_id, locale)
            callbacks.record_delivery_statuses(session, [row.id for row in rows])

    def claim(self) -> list[ClaimedRow]:
        now = utcnow()
        with self.rt.session() as session:
            session.execute(
                update(Delivery)
                .where(self._in_chunk(), self._due(now))
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
                    Delivery.created_at,
                    ContactPoint.address,
                    ContactPoint.details,
                )
                .join(ContactPoint, ContactPoint.id == Delivery.contact_point_id)
                .where(self._in_chunk(), Delivery.claim_id == self.claim_id)
                .order_by(Delivery.channel, Delivery.id)
            ).all()
        claimed = [ClaimedRow(*row) for row in rows]
        self.rows = {row.id: row for row in claimed}
        return claimed

    # -- sending ---------------------------------------------------------------------------

    async def send_channel(self, adapter: Adapter, rows: list[ClaimedRow]) -> None:
        """Hand rows to the channel as rate tokens allow, until done or told to stop."""
        bucket = TokenBucket(self.rt.redis, adapter.channel, adapter.rate_per_s, adapter.burst)

        async def paced():
            tokens, position = 0, 0
            while position < len(rows):
                cost = adapter.cost(rows[position])
                if tokens < cost:
                    if self.should_stop():
                        self.release(rows[position:], 0)
                        return
                    ahead = rows[position : position + adapter.concurrency]
                    grant = bucket.take(sum(adapter.cost(r) for r in ahead) - tokens)
                    tokens += grant.granted
                    if tokens < cost:
                        if grant.wait_s > MAX_TOKEN_WAIT_S:
                            self.release(rows[position:], grant.wait_s)
                            return
                        await asyncio.sleep(grant.wait_s)
                        continue
                tokens -= cost
                position += 1
                yield rows[position - 1]

        commit = self.commit_sent if adapter.commit_tells_ownership else self.commit_accepted
        await adapter.send(paced(), commit, self.report)

    def report(self, result: outcome.Outcome) -> None:
        """An outcome to write with the next commit (or when the job ends)."""
        self.outcomes.append(result)

    def should_stop(self) -> bool:
        """Give the worker back: the job's time is up, or an emergency needs the workers."""
        if time.monotonic() - self.started > self.settings.job_budget_s:
            return True
        if self.priority == Priority.EMERGENCY:
            return False
        now = time.monotonic()
        if now - self.last_emergency_check < EMERGENCY_CHECK_S:
            return False
        self.last_emergency_check = now
        return queues.emergency_pending(self.rt.redis, EMERGENCY_KEY)

    def commit_sent(self, provider_ids: dict[int, str]) -> set[int]:
        """Mark messages waiting for their final dot as sent, in one transaction with the
        outcomes reported since the last commit; returns the ids this job still owns."""
        now = utcnow()
        if time.monotonic() - self.last_beat > 1.0:
            self.heartbeat()  # before, not after, the commit: nothing may delay the dots
        if self.outcomes:
            self.flush_outcomes()
        # One statement on a plain connection: this runs for every group of messages.
        with self.rt.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Between COMMIT and its answer the rows are sent but the dots are not yet
                # written: a worker killed then leaves messages marked sent that never left.
                # Waiting for the WAL flush made that window milliseconds long (1 kill in 4
                # lost a message); without it the answer comes at once. A PostgreSQL crash
                # may then forget the last few ms of groups: those rows go back to `sending`
                # and are sent again (at least once, never lost).
                connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            owned = set(
                connection.scalars(
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
                        provider_id=case(provider_ids, value=Delivery.id),
                    )
                    .returning(Delivery.id)
                )
            )
            events = callbacks.record_delivery_statuses(connection, owned)
        callbacks.enqueue(self.rt, events)
        self._count(DeliveryStatus.SENT, len(owned))
        return owned

    def commit_accepted(self, provider_ids: dict[int, str]) -> set[int]:
        """Record messages a provider has already accepted (an HTTP channel) as sent. Unlike
        commit_sent nothing waits on which rows are still ours, so this is one prepared
        statement run for each row (executemany): no per-group SQL to build and compile."""
        if time.monotonic() - self.last_beat > 1.0:
            self.heartbeat()
        if self.outcomes:
            self.flush_outcomes()
        now = utcnow()
        statement = (
            update(Delivery.__table__)
            .where(
                Delivery.__table__.c.id == bindparam("delivery_id"),
                Delivery.__table__.c.claim_id == self.claim_id,
                Delivery.__table__.c.status == DeliveryStatus.SENDING,
            )
            .values(
                status=DeliveryStatus.SENT,
                sent_at=now,
                attempts=Delivery.__table__.c.attempts + 1,
                error=None,
                provider_id=bindparam("provider_id"),
            )
        )
        with self.rt.engine.begin() as connection:
            connection.execute(
                statement,
                [{"delivery_id": k, "provider_id": v} for k, v in provider_ids.items()],
            )
            events = callbacks.record_delivery_statuses(connection, provider_ids)
        callbacks.enqueue(self.rt, events)
        self._count(DeliveryStatus.SENT, len(provider_ids))
        return set(provider_ids)

    def _count(self, status: str, n: int = 1) -> None:
        self.counts[status] = self.counts.get(status, 0) + n

    def release(self, rows: list[ClaimedRow], wait_s: float) -> None:
        """Give rows back for later, so the worker is free for other work."""
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

    def flush_outcomes(self) -> None:
        with self.rt.session() as session:
            self._record(session, utcnow())

    def _record(self, session: Session, now: datetime) -> None:
        """Write the outcomes reported so far (plain successes were written by the commit)."""
        results, self.outcomes = self.outcomes, []
        reopened = False
        for result in results:
            row = self.rows[result.key]
            if result.status == outcome.SENT:
                self._update(session, row, error=result.error)
                if result.new_address:
                    self._moved(session, row, result.new_address)
            elif result.status == outcome.RETRY:
                reopened |= self._retry_or_fail(session, row, result, now)
            elif result.status == outcome.GONE:
                self._gone(session, row, result.error)
            else:
                if self._update(session, row, status=DeliveryStatus.FAILED, error=result.error):
                    self._blame_address(session, row)
                    self._count(DeliveryStatus.FAILED)
        callbacks.record_delivery_statuses(
            session, [r.key for r in results if r.status != outcome.SENT]
        )
        if reopened:
            # A row sent earlier came back (rejected after its dot): the notice is not done.
            session.execute(
                update(Broadcast)
                .where(Broadcast.id == self.broadcast_id, Broadcast.status == BroadcastStatus.DONE)
                .values(status=BroadcastStatus.SENDING, finished_at=None)
            )

    def _update(self, session: Session, row: ClaimedRow, **values) -> bool:
        """Change a row this job still owns; False if it is no longer ours."""
        result = session.execute(
            update(Delivery)
            .where(Delivery.id == row.id, Delivery.claim_id == self.claim_id)
            .values(**values)
        )
        return bool(result.rowcount)

    def _retry_or_fail(self, session, row: ClaimedRow, result: outcome.Outcome, now) -> bool:
        """Back off, or give up: after max attempts, or (when the provider is down, which
        does not count against the address) once the notice is older than the give-up age."""
        attempts = row.attempts + (0 if result.provider_down else 1)
        too_old = now - row.created_at > timedelta(seconds=self.settings.give_up_after_s)
        if attempts >= self.settings.max_attempts or (result.provider_down and too_old):
            tried = f"gave up after {max(attempts, 1)} attempts: {result.error}"
            if self._update(
                session, row, status=DeliveryStatus.FAILED, attempts=attempts, error=tried[:1000]
            ):
                self._count(DeliveryStatus.FAILED)
            return False
        delay = queues.retry_delay(max(attempts, 1))
        if result.retry_after_s:
            delay = max(delay, timedelta(seconds=result.retry_after_s))
        if self._update(
            session,
            row,
            status=DeliveryStatus.RETRY,
            attempts=attempts,
            not_before=now + delay,
            claim_id=None,
            error=result.error,
        ):
            self._count(DeliveryStatus.RETRY)
            return True
        return False

    def _blame_address(self, session: Session, row: ClaimedRow) -> None:
        session.execute(
            update(ContactPoint)
            .where(ContactPoint.id == row.contact_point_id)
            .values(failure_count=ContactPoint.failure_count + 1)
        )

    def _moved(self, session: Session, row: ClaimedRow, new_address: str) -> None:
        """The provider moved the address (a Telegram group became a supergroup)."""
        other = aliased(ContactPoint)
        taken = exists().where(other.channel == row.channel, other.address == new_address)
        session.execute(
            update(ContactPoint)
            .where(ContactPoint.id == row.contact_point_id, ~taken)
            .values(address=new_address)
        )

    def _gone(self, session: Session, row: ClaimedRow, error: str | None) -> None:
        """The address is dead: stop using it, and under `preferred` try the next channel."""
        if not self._update(session, row, status=DeliveryStatus.GONE, error=error):
            return
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
        self._fall_back(session, row.id, row.resident_id, row.locale)

    def _fall_back(self, session: Session, from_id: int, resident_id: int, locale: str) -> None:
        if self.policy != ChannelPolicy.PREFERRED:
            return
        new_id = add_fallback(
            session, self.broadcast_id, from_id, resident_id, locale, self.settings.default_locale
        )
        if new_id is not None:
            self.fallback_ids.append(new_id)

    # -- afterwards ------------------------------------------------------------------------

    def enqueue_follow_ups(self) -> None:
        """Come back for rows that wait (quiet hours, back-off, rate, a yielded worker), and
        start fall-backs."""
        redis, size = self.rt.redis, self.settings.chunk_size
        if self.fallback_ids:
            buckets = {(self.broadcast_id, i // size) for i in self.fallback_ids}
            # Its own id: that chunk's job may be running now, under the plain one.
            queues.enqueue_send_chunks(
                redis, self.priority, sorted(buckets), suffix=f"-fb{self.claim_id[:8]}"
            )
        with self.rt.session() as session:
            next_time = session.scalar(
                select(func.min(Delivery.not_before)).where(
                    self._in_chunk(), Delivery.status.in_(OPEN_WAITING)
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
