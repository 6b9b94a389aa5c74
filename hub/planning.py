"""Planning a notice: resolve the audience with set-based SQL, insert the outbox in chunks, and
enqueue one send job per chunk of deliveries on the queue of the notice's priority."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import (
    DateTime,
    Integer,
    and_,
    case,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, object_session

from hub import queues, runtime
from hub.channel_order import ranked_contact_points
from hub.clock import utcnow
from hub.delivery import announce_emergency, finish_if_done
from hub.models import (
    Broadcast,
    BroadcastStatus,
    ChannelPolicy,
    Delivery,
    DeliveryStatus,
    Priority,
    Resident,
    Subscription,
    broadcast_areas,
)
from hub.rendering import ensure_renderings

RESIDENTS_PER_STEP = 50_000


def plan_job(broadcast_id: int) -> dict:
    """RQ entry point: plan the notice (resumable; a second run does nothing more)."""
    rt = runtime.current()
    return plan_broadcast(rt, broadcast_id)


def plan_broadcast(rt: runtime.Runtime, broadcast_id: int, now: datetime | None = None) -> dict:
    now = now or utcnow()
    with rt.session() as session:
        broadcast = _take_for_planning(session, broadcast_id, now)
        if broadcast is None:
            return {"planned": 0}
        priority = broadcast.priority
        ids = session.execute(select(func.min(Resident.id), func.max(Resident.id))).one()
    if priority == Priority.EMERGENCY:
        announce_emergency(rt)  # bulk jobs give their workers up now, not after their chunk
    planned = 0
    job_id = queues.plan_job_id(broadcast_id)
    held: int | None = None  # the last chunk of the step before: the next step may add to it
    if ids[0] is not None:
        start = max(ids[0], _cursor(rt, broadcast_id))
        for lo in range(start, ids[1] + 1, RESIDENTS_PER_STEP):
            queues.mark_running(rt.redis, job_id, rt.settings.claim_ttl_s)
            if _cancelled(rt, broadcast_id):
                break
            hi = min(lo + RESIDENTS_PER_STEP, ids[1] + 1)
            count, buckets = _plan_step(rt, broadcast_id, lo, hi, now)
            planned += count
            if buckets:
                # Enqueue each chunk once, when no later step can add rows to it.
                ready = sorted({held, *buckets} - {None, buckets[-1]})
                queues.enqueue_send_chunks(rt.redis, priority, [(broadcast_id, b) for b in ready])
                held = buckets[-1]
    if held is not None:
        queues.enqueue_send_chunks(rt.redis, priority, [(broadcast_id, held)])
    with rt.session() as session:
        _finish_planning(session, broadcast_id, now)
    queues.clear_running(rt.redis, job_id)
    finish_if_done(rt, broadcast_id)
    return {"planned": planned}


def _cancelled(rt: runtime.Runtime, broadcast_id: int) -> bool:
    with rt.session() as session:
        status = session.scalar(select(Broadcast.status).where(Broadcast.id == broadcast_id))
    return status == BroadcastStatus.CANCELLED


def _take_for_planning(session: Session, broadcast_id: int, now: datetime) -> Broadcast | None:
    broadcast = session.get(Broadcast, broadcast_id)
    if broadcast is None or broadcast.status not in (
        BroadcastStatus.SCHEDULED,
        BroadcastStatus.PLANNING,
    ):
        return None
    if broadcast.scheduled_at and broadcast.scheduled_at > now:
        return None  # too early: the scheduled job or the sweeper will come back
    broadcast.status = BroadcastStatus.PLANNING
    return broadcast


def _cursor(rt: runtime.Runtime, broadcast_id: int) -> int:
    """Planning goes by resident id; resume after the last resident already planned."""
    with rt.session() as session:
        last = session.scalar(
            select(func.max(Delivery.resident_id)).where(
                Delivery.broadcast_id == broadcast_id, Delivery.fallback_from_id.is_(None)
            )
        )
    return (last or 0) + 1


def _plan_step(
    rt: runtime.Runtime, broadcast_id: int, lo: int, hi: int, now: datetime
) -> tuple[int, list[int]]:
    """Insert the deliveries for residents lo <= id < hi and commit; returns how many, and the
    chunks (buckets of delivery ids) they fall in."""
    settings = rt.settings
    with rt.session() as session:
        broadcast = session.get(Broadcast, broadcast_id)
        locales = sorted(c.locale for c in broadcast.contents)
        quiet_ends = session.scalars(
            select(Resident.quiet_end)
            .where(Resident.id >= lo, Resident.id < hi, Resident.quiet_end.is_not(None))
            .distinct()
        ).all()
        session.execute(audience_insert(broadcast, lo, hi, now, locales, quiet_ends, settings))
        first, last, count = session.execute(
            select(func.min(Delivery.id), func.max(Delivery.id), func.count()).where(
                Delivery.broadcast_id == broadcast_id,
                Delivery.resident_id >= lo,
                Delivery.resident_id < hi,
            )
        ).one()
        pairs = session.execute(
            select(Delivery.locale, Delivery.channel)
            .where(
                Delivery.broadcast_id == broadcast_id,
                Delivery.resident_id >= lo,
                Delivery.resident_id < hi,
            )
            .distinct()
        ).all()
        ensure_renderings(session, broadcast, set(pairs), settings.default_locale)
    if not count:
        return 0, []
    size = settings.chunk_size
    return count, list(range(first // size, last // size + 1))


def audience_insert(
    broadcast: Broadcast, lo: int, hi: int, now: datetime, locales, quiet_ends, settings
):
    """INSERT ... SELECT of one delivery per (resident, chosen contact point)."""
    return _insert_ignoring_duplicates(broadcast).from_select(
        [
            "broadcast_id",
            "resident_id",
            "contact_point_id",
            "channel",
            "locale",
            "status",
            "attempts",
            "not_before",
            "created_at",
        ],
        audience_rows(broadcast, lo, hi, now, locales, quiet_ends, settings),
    )


def audience_rows(
    broadcast: Broadcast, lo: int, hi: int, now: datetime, locales, quiet_ends, settings
):
    """SELECT of the deliveries planning would insert for residents lo <= id < hi; also what
    the staff console counts before sending (hub.audience). Which addresses, in which order:
    hub.channel_order (the resident's own order for the notice's topic, if any)."""
    usable = ranked_contact_points(
        broadcast.topic_id,
        emergency=broadcast.priority == Priority.EMERGENCY,
        residents=lambda resident_id: and_(resident_id >= lo, resident_id < hi),
        per_channel=broadcast.channel_policy != ChannelPolicy.PREFERRED,
    ).subquery()
    r = Resident
    locale = case((r.locale.in_(locales), r.locale), else_=literal(settings.default_locale))
    not_before = (
        literal(None, DateTime)
        if broadcast.priority == Priority.EMERGENCY
        else quiet_hours_end(now, settings.timezone, quiet_ends)
    )
    return (
        select(
            literal(broadcast.id, Integer),
            r.id,
            usable.c.id,
            usable.c.channel.label("channel"),
            locale.label("locale"),
            literal(DeliveryStatus.PENDING),
            literal(0, Integer),
            not_before.label("not_before"),
            literal(now, DateTime),
        )
        .join(usable, and_(usable.c.resident_id == r.id, usable.c.rn == 1))
        .where(r.id >= lo, r.id < hi, audience_filter(broadcast))
    )


def _insert_ignoring_duplicates(broadcast: Broadcast):
    """INSERT ... ON CONFLICT DO NOTHING: a second planner of the same notice (a re-run after a
    crash racing the first) adds nothing instead of failing on UNIQUE(notice, address)."""
    dialect = object_session(broadcast).get_bind().dialect.name
    module = {"postgresql": postgresql, "sqlite": sqlite}.get(dialect)
    if module is None:
        return insert(Delivery)
    return module.insert(Delivery).on_conflict_do_nothing()


def audience_filter(broadcast: Broadcast):
    """Who the notice is for. Normal and bulk notices: residents who follow the topic in one of
    the areas (any area, for a city-wide notice). Emergencies reach everyone who lives in or
    follows any topic in the areas, whatever topics they chose."""
    r, s = Resident, Subscription
    area_ids = select(broadcast_areas.c.area_id).where(
        broadcast_areas.c.broadcast_id == broadcast.id
    )
    city_wide = not broadcast.areas
    if broadcast.priority == Priority.EMERGENCY:
        if city_wide:
            return literal(True)
        return or_(
            r.area_id.in_(area_ids),
            exists().where(s.resident_id == r.id, s.area_id.in_(area_ids)),
        )
    follows = exists().where(s.resident_id == r.id, s.topic_id == broadcast.topic_id)
    if not city_wide:
        follows = follows.where(s.area_id.in_(area_ids))
    return follows


def quiet_hours_end(now: datetime, timezone: str, quiet_ends: list[int]):
    """SQL for when a resident's quiet hours end if they are in them now, else NULL.

    All residents share the city's time zone, so the current local minute is one constant and
    each distinct quiet_end (a handful in practice) maps to one instant: a CASE over them.
    """
    zone = ZoneInfo(timezone)
    local_now = now.replace(tzinfo=ZoneInfo("UTC")).astimezone(zone)
    minute = local_now.hour * 60 + local_now.minute
    r = Resident
    in_quiet = case(
        (r.quiet_start < r.quiet_end, and_(r.quiet_start <= minute, minute < r.quiet_end)),
        else_=or_(minute >= r.quiet_start, minute < r.quiet_end),
    )
    if not quiet_ends:
        return literal(None, DateTime)
    ends = [
        (r.quiet_end == end, literal(_next_local_minute(local_now, end), DateTime))
        for end in quiet_ends
    ]
    return case(
        (and_(r.quiet_start.is_not(None), r.quiet_end.is_not(None), in_quiet), case(*ends)),
        else_=literal(None, DateTime),
    )


def _next_local_minute(local_now: datetime, minute_of_day: int) -> datetime:
    """The next instant (naive UTC) the city's clock shows minute_of_day, DST included."""
    day = local_now.replace(second=0, microsecond=0, hour=0, minute=0)
    for offset in (0, 1):
        candidate = (day + timedelta(days=offset)).replace(
            hour=minute_of_day // 60, minute=minute_of_day % 60
        )
        if candidate > local_now:
            return candidate.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)
    raise AssertionError("unreachable: a minute of the day recurs within 24 hours")


def _finish_planning(session: Session, broadcast_id: int, now: datetime) -> None:
    session.execute(
        update(Broadcast)
        .where(Broadcast.id == broadcast_id, Broadcast.status == BroadcastStatus.PLANNING)
        .values(status=BroadcastStatus.SENDING, planned_at=now)
    )
