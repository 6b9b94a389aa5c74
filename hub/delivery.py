"""Send jobs: claim a chunk of the outbox, send it through its channel within the provider's rate,
record every outcome, retry with back-off, and fall back to the next channel when an address is
dead. Idempotent: rows are claimed with a conditional UPDATE, so a job run twice sends nothing
twice. A job never holds its worker long: it stops after HUB_JOB_BUDGET seconds, when the rate
limit would keep it waiting, or when an emergency is sending, gives its remaining rows back and
comes back later, so an emergency never waits behind a bulk send."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import cache
from itertools import groupby

from sqlalchemy import (
    JSON,
    BigInteger,
    Connection,
    and_,
    bindparam,
    cast,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, aliased

from channels import base as outcome
from hub import callbacks, queues, runtime
from hub.adapters import CHANNEL_ADAPTERS, Adapter, ClaimedRow, SendContext
from hub.channel_order import ranked_contact_points
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
TAKE_AHEAD_S = 0.1  # rate tokens are taken for up to this long ahead (see send_channel)
CLAIM_KEY = "hub:claim:{}"
EMERGENCY_KEY = "hub:emergency-sending"  # while it lives, other jobs yield their worker
EMERGENCY_CHECK_S = 0.5
OPEN_WAITING = (DeliveryStatus.PENDING, DeliveryStatus.RETRY)


_loop: asyncio.AbstractEventLoop | None = None
# A loop runs one coroutine at a time, and web processes call this from several threads
# (portal codes, /v2 sends, the admin pages): they take turns.
_loop_lock = threading.Lock()


def run_in_loop(coroutine):
    """Run a job's coroutine in this process's one event loop: unlike asyncio.run's fresh loop
    per job, it keeps the SMTP connections open from one job to the next."""
    global _loop
    with _loop_lock:
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
        self.connection: Connection | None = None  # a send's group commits (group_connection)

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

        # Tokens for this many messages at a time: one Redis call per `concurrency` messages
        # at most, per TAKE_AHEAD_S of the rate when that is more (a burst caps the grant).
        ahead_n = max(adapter.concurrency, int(adapter.rate_per_s * TAKE_AHEAD_S))

        async def paced():
            tokens, position = 0, 0
            while position < len(rows):
                if self.should_stop():
                    self.release(rows[position:], 0)
                    return
                cost = adapter.cost(rows[position])
                if tokens < cost:
                    ahead = rows[position : position + ahead_n]
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

        # HTTP channels: the provider has the message already; record it at once.
        commit = self.stage_sent if adapter.commit_tells_ownership else self.commit_sent
        with self.group_connection():
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

    @contextmanager
    def group_connection(self) -> Iterator[None]:
        """One connection for all the group commits of a send: a group then costs no pool
        checkout and no pre-ping round trip. On PostgreSQL its commits do not wait for the
        WAL flush (synchronous_commit off, on this connection while it sends): every message
        of a group waits for its COMMIT. A PostgreSQL crash may then forget the last few ms of
        groups: those rows go back to `sending` and are sent again (at least once, never
        lost); e-mail's dots are written before the COMMIT either way (see stage_sent)."""
        if self.connection is not None:  # within a send already
            yield
            return
        with self.rt.engine.connect() as connection:
            unflushed = connection.dialect.name == "postgresql"
            if unflushed:
                connection.exec_driver_sql("SET synchronous_commit TO OFF")
                connection.commit()
            self.connection = connection
            try:
                yield
            finally:
                self.connection = None
                if unflushed:
                    _reset_synchronous_commit(connection)

    @contextmanager
    def stage_sent(self, provider_ids: dict[int, str]) -> Iterator[set[int]]:
        """Mark messages waiting for their final dot as sent, in one transaction with the
        outcomes reported since the last commit; yields the ids this job still owns, and
        commits when the block ends: the caller writes those messages' dots inside it, so the
        database never says `sent` for a message whose dot was not written (the dots wait
        for the UPDATE's answer, not for the COMMIT's)."""
        now = utcnow()
        if time.monotonic() - self.last_beat > 1.0:
            self.heartbeat()  # before, not after, the UPDATE: nothing may delay the dots
        if self.outcomes:
            self.flush_outcomes()
        connection = self.connection
        with connection.begin():
            owned = set(
                connection.scalars(
                    _mark_sent(connection.dialect.name),
                    {"provider_ids": provider_ids, "claim": self.claim_id, "now": now},
                )
            )
            events = callbacks.record_delivery_statuses(connection, owned)
            yield owned  # the row locks keep them ours until the COMMIT
        callbacks.enqueue(self.rt, events)
        self._count(DeliveryStatus.SENT, len(owned))

    def commit_sent(self, provider_ids: dict[int, str]) -> set[int]:
        """stage_sent with nothing to write in between (messages a provider has accepted
        already); returns the ids this job still owns."""
        with self.group_connection(), self.stage_sent(provider_ids) as owned:
            return owned

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


@cache
def _mark_sent(dialect_name: str):
    """UPDATE … FROM the pairs of one JSON parameter {delivery id: provider id}: the rows of
    a group this job still owns become `sent`, and come back. One statement whatever the
    group's size, so nothing is built or compiled per group (PostgreSQL even prepares it);
    building an IN list and a CASE per group cost more CPU than the rest of the commit."""
    pairs_of = func.json_each_text if dialect_name == "postgresql" else func.json_each
    pairs = pairs_of(bindparam("provider_ids", type_=JSON)).table_valued("key", "value")
    return (
        update(Delivery)
        .where(
            Delivery.id == cast(pairs.c.key, BigInteger),
            Delivery.claim_id == bindparam("claim"),
            Delivery.status == DeliveryStatus.SENDING,
        )
        .values(
            status=DeliveryStatus.SENT,
            sent_at=bindparam("now"),
            attempts=Delivery.attempts + 1,
            error=None,
            provider_id=pairs.c.value,
        )
        .returning(Delivery.id)
    )


def _reset_synchronous_commit(connection: Connection) -> None:
    """Back to the server's default before the connection returns to the pool."""
    try:
        connection.rollback()
        connection.exec_driver_sql("RESET synchronous_commit")
        connection.commit()
    except DBAPIError:
        connection.invalidate()  # broken anyway: the pool drops it


def add_fallback(
    session: Session,
    broadcast_id: int,
    from_id: int,
    resident_id: int,
    locale: str,
    default_locale: str,
) -> int | None:
    """A delivery on the resident's next usable contact point not yet tried for this notice,
    in the order planning chose the first one by (hub.channel_order)."""
    broadcast = session.get(Broadcast, broadcast_id)
    ranked = ranked_contact_points(
        broadcast.topic_id,
        emergency=broadcast.priority == Priority.EMERGENCY,
        residents=lambda column: column == resident_id,
    ).subquery()
    already = exists().where(
        Delivery.broadcast_id == broadcast_id, Delivery.contact_point_id == ranked.c.id
    )
    candidate = session.execute(
        select(ranked.c.id, ranked.c.channel).where(~already).order_by(ranked.c.rn).limit(1)
    ).first()
    if candidate is None:
        return None
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
