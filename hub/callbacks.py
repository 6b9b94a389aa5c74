"""Callbacks to other city systems: signed JSON POSTs of delivery statuses and inbound messages.

The database is the truth. An event is written to the callback outbox in the same transaction
as the change that caused it, one row per endpoint that wants it; after the commit each row gets
an RQ job that POSTs it. A job that Redis lost, or a worker that died mid-POST, leaves the row
due in the outbox, and the sweeper queues it again (so an endpoint may see an event twice: the
X-Hub-Delivery id tells it so). 2xx is done; 5xx, 429, timeouts and connection errors are tried
again with exponential back-off and jitter; any other answer fails at once."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import secrets
import time
import uuid
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx
import redis
from flask_babel import gettext as _
from rq import Queue
from rq.job import Job
from sqlalchemy import Connection, Engine, event, func, insert, select, update
from sqlalchemy.orm import Session

from hub import queues, runtime
from hub.clock import utcnow
from hub.config import Settings
from hub.models import (
    CallbackAttempt,
    CallbackEndpoint,
    CallbackEvent,
    CallbackOutbox,
    CallbackStatus,
    Delivery,
    DeliveryStatus,
    Message,
)
from hub.sealing import seal, unseal
from hub.staff import audit

log = logging.getLogger("hub.callbacks")

SEND_JOB = "hub.callbacks.send"
QUEUE = "default"
# Back-off after the n-th failed attempt (then the last one again), each with +-20 % jitter so
# that many events failing together do not come back together.
RETRY_DELAYS_S = (10, 60, 300, 1800, 7200)
MAX_ATTEMPTS = 8  # about 6.5 hours of trying
MAX_RETRY_AFTER_S = 7200  # a Retry-After longer than this is not waited for in full
# A claimed row is left alone this much longer than a POST can take; a worker that dies
# mid-POST leaves it due again after that.
LEASE_MARGIN_S = 30
# The RQ scheduler and the database may disagree on the time by a little: a job that comes a
# moment early still runs.
EARLY_TOLERANCE_S = 5
# How long a process trusts its answer to "does any endpoint want this event?"; an endpoint
# added in another process gets events from at most this long after it was added.
WANTED_CACHE_S = 5.0
ID_CHUNK = 1000  # deliveries looked up in one query
SIGNATURE_HEADER = "X-Hub-Signature"
TIMESTAMP_HEADER = "X-Hub-Timestamp"


class CallbackError(ValueError):
    """Bad input from an admin (a URL that is not http(s), an unknown event); says which."""


# -- registering endpoints ------------------------------------------------------------------


def parse_events(text: str) -> list[str]:
    """`delivery-status,inbound-message` -> the list; raises CallbackError on an unknown one."""
    events = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [e for e in events if e not in CallbackEvent.ALL]
    if unknown or not events:
        raise CallbackError(
            _(
                "unknown event %(events)s; choose from: %(known)s",
                events=", ".join(unknown) or "-",
                known=", ".join(CallbackEvent.ALL),
            )
        )
    return list(dict.fromkeys(events))


def check_url(url: str) -> str:
    """An absolute http(s) URL with a host and no credentials in it."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackError(_("the URL must start with https:// or http://, not %(url)s", url=url))
    if parts.username or parts.password:
        raise CallbackError(_("the URL must not contain a user name or password"))
    if len(url) > 2000:
        raise CallbackError(_("the URL is longer than 2000 characters"))
    return url


def add_endpoint(
    session: Session, *, name: str, url: str, events: list[str], actor: str, secret_key: str
) -> tuple[CallbackEndpoint, str]:
    """Register an endpoint; returns it and its signing secret (show it once; it is stored
    sealed with `secret_key`, HUB_SECRET_KEY)."""
    name = name.strip()
    if not name or len(name) > 120:
        raise CallbackError(_("the name must have 1 to 120 characters"))
    secret = secrets.token_hex(32)
    endpoint = CallbackEndpoint(
        name=name,
        url=check_url(url),
        events=parse_events(",".join(events)),
        secret=seal(secret_key, secret),
        active=True,
        created_by=actor,
        created_at=utcnow(),
    )
    session.add(endpoint)
    session.flush()
    audit(session, actor, "callbacks.add", f"callback:{endpoint.id}", url=endpoint.url)
    _forget_wanted(session.get_bind())
    return endpoint, secret


def remove_endpoint(session: Session, endpoint_id: int, *, actor: str) -> int:
    """Stop an endpoint; its waiting events fail. Returns how many were waiting. Its history
    stays for the admins."""
    endpoint = session.get(CallbackEndpoint, endpoint_id)
    if endpoint is None or not endpoint.active:
        raise CallbackError(_("no active callback endpoint %(id)d", id=endpoint_id))
    endpoint.active = False
    dropped = session.execute(
        update(CallbackOutbox)
        .where(
            CallbackOutbox.endpoint_id == endpoint_id,
            CallbackOutbox.status == CallbackStatus.PENDING,
        )
        .values(status=CallbackStatus.FAILED, last_error="the endpoint was removed")
    ).rowcount
    audit(session, actor, "callbacks.remove", f"callback:{endpoint_id}", dropped=dropped)
    _forget_wanted(session.get_bind())
    return dropped


def list_endpoints(session: Session) -> list[CallbackEndpoint]:
    return list(session.scalars(select(CallbackEndpoint).order_by(CallbackEndpoint.id)))


@dataclass(frozen=True)
class AttemptView:
    at: datetime
    endpoint_id: int
    endpoint_name: str
    event: str
    public_id: str
    status_code: int | None
    error: str | None
    duration_ms: int
    outbox_status: str


def recent_attempts(
    session: Session, *, endpoint_id: int | None = None, failed_only: bool = False, limit: int = 50
) -> list[AttemptView]:
    """The newest attempts first; `failed_only`: those that got no 2xx."""
    query = (
        select(
            CallbackAttempt.at,
            CallbackAttempt.endpoint_id,
            CallbackEndpoint.name,
            CallbackOutbox.event,
            CallbackOutbox.public_id,
            CallbackAttempt.status_code,
            CallbackAttempt.error,
            CallbackAttempt.duration_ms,
            CallbackOutbox.status,
        )
        .join(CallbackOutbox, CallbackOutbox.id == CallbackAttempt.outbox_id)
        .join(CallbackEndpoint, CallbackEndpoint.id == CallbackAttempt.endpoint_id)
        .order_by(CallbackAttempt.id.desc())
        .limit(limit)
    )
    if endpoint_id is not None:
        query = query.where(CallbackAttempt.endpoint_id == endpoint_id)
    if failed_only:
        query = query.where(CallbackAttempt.error.is_not(None))
    return [AttemptView(*row) for row in session.execute(query)]


@dataclass(frozen=True)
class EndpointOverview:
    endpoint: CallbackEndpoint
    waiting: int  # events not yet delivered that will be tried (again)
    attempts: list[AttemptView]  # the newest first


def overview(session: Session, attempts_each: int = 10) -> list[EndpointOverview]:
    """Every endpoint with how many events wait for it and its last attempts (admin page)."""
    waiting = dict(
        session.execute(
            select(CallbackOutbox.endpoint_id, func.count())
            .where(CallbackOutbox.status == CallbackStatus.PENDING)
            .group_by(CallbackOutbox.endpoint_id)
        ).all()
    )
    return [
        EndpointOverview(
            endpoint,
            waiting.get(endpoint.id, 0),
            recent_attempts(session, endpoint_id=endpoint.id, limit=attempts_each),
        )
        for endpoint in list_endpoints(session)
    ]


# -- writing events (on the hot path: nothing at all when no endpoint wants the event) ---------

_wanted: weakref.WeakKeyDictionary[Engine, tuple[float, frozenset[str]]] = (
    weakref.WeakKeyDictionary()
)


def _engine_of(bind: Session | Connection) -> Engine:
    return bind.get_bind().engine if isinstance(bind, Session) else bind.engine


def _forget_wanted(bind) -> None:
    _wanted.pop(bind.engine, None)


def _wanted_events(bind: Session | Connection) -> frozenset[str]:
    """The events at least one active endpoint wants, cached for WANTED_CACHE_S per database."""
    engine = _engine_of(bind)
    cached = _wanted.get(engine)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    events = frozenset(
        e
        for events in bind.execute(
            select(CallbackEndpoint.events).where(CallbackEndpoint.active.is_(True))
        ).scalars()
        for e in events
    )
    _wanted[engine] = (time.monotonic() + WANTED_CACHE_S, events)
    return events


def _subscribers(bind: Session | Connection, event_name: str) -> list[int]:
    rows = bind.execute(
        select(CallbackEndpoint.id, CallbackEndpoint.events).where(
            CallbackEndpoint.active.is_(True)
        )
    ).all()
    return [endpoint_id for endpoint_id, events in rows if event_name in events]


def record_delivery_statuses(bind: Session | Connection, delivery_ids) -> list[str]:
    """Write a delivery-status event for each of these deliveries that is now in a final
    status, for every endpoint that wants one. Call it in the transaction that changed the
    statuses. With a Session the events are queued when it commits; with a Connection the
    caller queues the returned outbox ids (enqueue) after its commit."""
    if not delivery_ids or CallbackEvent.DELIVERY_STATUS not in _wanted_events(bind):
        return []
    ids = list(delivery_ids)
    rows = [
        row
        # In chunks: a cancelled notice can have 100,000 (SQLite allows 32,766 parameters).
        for start in range(0, len(ids), ID_CHUNK)
        for row in bind.execute(
            select(
                Delivery.id,
                Delivery.broadcast_id,
                Delivery.resident_id,
                Delivery.channel,
                Delivery.status,
                Delivery.error,
                Delivery.provider_id,
                Delivery.sent_at,
                Delivery.fallback_from_id,
            ).where(
                Delivery.id.in_(ids[start : start + ID_CHUNK]),
                Delivery.status.in_(DeliveryStatus.FINAL),
            )
        )
    ]
    now = utcnow()
    payloads = [
        {
            "delivery_id": row.id,
            "notice_id": row.broadcast_id,
            "resident_id": row.resident_id,
            "channel": row.channel,
            "status": row.status,
            "error": row.error,
            "provider_id": row.provider_id,
            "sent_at": iso(row.sent_at),
            "status_at": iso(now),
            "fallback_from_delivery_id": row.fallback_from_id,
        }
        for row in rows
    ]
    public_ids = _write(bind, CallbackEvent.DELIVERY_STATUS, payloads, now)
    if isinstance(bind, Session):
        enqueue_after_commit(bind, public_ids)
        return []
    return public_ids


def record_inbound_message(
    session: Session, message: Message, resident_id: int | None, keyword: str | None
) -> None:
    """Write an inbound-message event for a resident's message; it is queued to be sent when
    the session commits."""
    if CallbackEvent.INBOUND_MESSAGE not in _wanted_events(session):
        return
    if message.id is None:  # a batch's message, not flushed yet: the event needs its id
        session.flush()
    payload = {
        "message_id": message.id,
        "conversation_id": message.conversation_id,
        "resident_id": resident_id,
        "channel": message.channel,
        "from": message.address,
        "text": message.body,
        "keyword": keyword,
        "notice_id": message.broadcast_id,
        "received_at": iso(message.created_at),
    }
    enqueue_after_commit(session, _write(session, CallbackEvent.INBOUND_MESSAGE, [payload]))


def _write(bind, event_name: str, payloads: list[dict], now: datetime | None = None) -> list[str]:
    endpoint_ids = _subscribers(bind, event_name) if payloads else []
    if not endpoint_ids:
        return []
    now = now or utcnow()
    rows = [
        {
            "public_id": str(uuid.uuid4()),
            "endpoint_id": endpoint_id,
            "event": event_name,
            "payload": payload,
            "status": CallbackStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for payload in payloads
        for endpoint_id in endpoint_ids
    ]
    bind.execute(insert(CallbackOutbox), rows)
    return [row["public_id"] for row in rows]


def iso(moment: datetime | None) -> str | None:
    """Naive UTC (as stored) -> ISO 8601 with a Z."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- queueing ----------------------------------------------------------------------------------

_PENDING_KEY = "hub.callbacks.after_commit"


def enqueue_after_commit(session: Session, public_ids: list[str]) -> None:
    """Queue these outbox rows once the session's transaction commits (not before: a job
    could run before the rows are visible; not on rollback: there are no rows then)."""
    if not public_ids:
        return
    if _PENDING_KEY not in session.info:
        session.info[_PENDING_KEY] = []
        event.listen(session, "after_commit", _enqueue_pending)
        event.listen(session, "after_rollback", _forget_pending)
    session.info[_PENDING_KEY].extend(public_ids)


def _enqueue_pending(session: Session) -> None:
    pending, session.info[_PENDING_KEY] = session.info[_PENDING_KEY], []
    enqueue(runtime.current(), pending)


def _forget_pending(session: Session) -> None:
    session.info[_PENDING_KEY] = []


def job_id(public_id: str, attempts: int) -> str:
    """One id per attempt: a retry is scheduled while the job of the attempt before runs."""
    return f"callback-{public_id}-{attempts}"


def enqueue(rt: runtime.Runtime, public_ids: list[str], attempts: int = 0) -> None:
    """One send job per outbox row, in one pipeline. Redis being down loses nothing: the rows
    are in the outbox, and the sweeper queues them once Redis is back."""
    if not public_ids:
        return
    q = queues.queue(rt.redis, QUEUE)
    prepared = [
        Queue.prepare_data(
            SEND_JOB,
            args=(public_id,),
            job_id=job_id(public_id, attempts),
            result_ttl=queues.RESULT_TTL_S,
            timeout=queues.JOB_TIMEOUT_S,
        )
        for public_id in public_ids
    ]
    try:
        with rt.redis.pipeline() as pipe:
            pipe.delete(*(Job.key_for(data.job_id) for data in prepared))
            q.enqueue_many(prepared, pipeline=pipe)
            pipe.execute()
    except redis.RedisError as exc:
        log.warning("callbacks: %d left for the sweeper, Redis failed: %s", len(prepared), exc)


def requeue_lost(rt: runtime.Runtime, limit: int = 5000) -> int:
    """Sweeper: due outbox rows whose job is gone (Redis lost it, was down, or the worker died
    mid-POST and the row's lease ran out) get a job again."""
    before = utcnow() - timedelta(seconds=rt.settings.sweep_grace_s)
    with rt.session() as session:
        due = session.execute(
            select(CallbackOutbox.public_id, CallbackOutbox.attempts)
            .where(
                CallbackOutbox.status == CallbackStatus.PENDING,
                CallbackOutbox.next_attempt_at < before,
            )
            .order_by(CallbackOutbox.next_attempt_at)
            .limit(limit)
        ).all()
    if not due:
        return 0
    live = queues.live_jobs(rt.redis, [job_id(p, a) for p, a in due])
    lost = [(p, a) for (p, a), is_live in zip(due, live, strict=True) if not is_live]
    for attempts in {a for _p, a in lost}:
        enqueue(rt, [p for p, a in lost if a == attempts], attempts)
    return len(lost)


# -- sending -----------------------------------------------------------------------------------


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Hub-Signature value: HMAC-SHA256 of "{timestamp}.{body}" under the secret."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


@dataclass(frozen=True)
class Claimed:
    outbox_id: int
    public_id: str
    endpoint_id: int
    url: str
    secret: str
    event: str
    payload: dict
    attempts: int
    created_at: datetime


@dataclass(frozen=True)
class Answer:
    """What one POST came to."""

    retry: bool  # worth trying again
    delivered: bool = False
    status_code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None


def send(public_id: str) -> str:
    """RQ job: POST one outbox event, record the attempt, schedule the next one if any."""
    rt = runtime.current()
    with rt.session() as session:
        claimed = _claim(session, public_id, rt.settings)
    if claimed is None:
        return "not due"
    started = time.monotonic()
    answer = post(claimed, rt.settings.callback_timeout_s)
    duration_ms = int((time.monotonic() - started) * 1000)
    with rt.session() as session:
        delay = _record(session, claimed, answer, duration_ms)
    if delay is not None:
        queues.queue(rt.redis, QUEUE).enqueue_in(
            delay,
            SEND_JOB,
            public_id,
            job_id=job_id(public_id, claimed.attempts + 1),
            result_ttl=queues.RESULT_TTL_S,
        )
    return "delivered" if answer.delivered else (answer.error or "failed")


def _claim(session: Session, public_id: str, settings: Settings) -> Claimed | None:
    """Take a due row for one POST: its next_attempt_at moves past the POST's end, so no
    other job sends it meanwhile."""
    row = session.execute(
        select(CallbackOutbox, CallbackEndpoint)
        .join(CallbackEndpoint, CallbackEndpoint.id == CallbackOutbox.endpoint_id)
        .where(CallbackOutbox.public_id == public_id)
    ).first()
    if row is None or row[0].status != CallbackStatus.PENDING:
        return None
    outbox, endpoint = row
    now = utcnow()
    if not endpoint.active:
        outbox.status, outbox.last_error = CallbackStatus.FAILED, "the endpoint was removed"
        return None
    secret = unseal(settings.secret_key, endpoint.secret)
    if secret is None:
        outbox.status = CallbackStatus.FAILED
        outbox.last_error = "HUB_SECRET_KEY changed since the endpoint was added: add it again"
        return None
    taken = session.execute(
        update(CallbackOutbox)
        .where(
            CallbackOutbox.id == outbox.id,
            CallbackOutbox.status == CallbackStatus.PENDING,
            CallbackOutbox.attempts == outbox.attempts,
            CallbackOutbox.next_attempt_at == outbox.next_attempt_at,
            CallbackOutbox.next_attempt_at <= now + timedelta(seconds=EARLY_TOLERANCE_S),
        )
        .values(
            next_attempt_at=now + timedelta(seconds=settings.callback_timeout_s + LEASE_MARGIN_S)
        )
    ).rowcount
    if not taken:
        return None
    return Claimed(
        outbox.id,
        outbox.public_id,
        endpoint.id,
        endpoint.url,
        secret,
        outbox.event,
        outbox.payload,
        outbox.attempts,
        outbox.created_at,
    )


def body_of(claimed: Claimed) -> bytes:
    envelope = {
        "id": claimed.public_id,
        "event": claimed.event,
        "created_at": iso(claimed.created_at),
        "data": claimed.payload,
    }
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()


def post(claimed: Claimed, timeout_s: float) -> Answer:
    """One signed POST. Redirects are never followed: a 3xx names where the endpoint moved,
    which may be another host, and the signed event must not go there."""
    body = body_of(claimed)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "MestniGlas-Callbacks/1",
        "X-Hub-Event": claimed.event,
        "X-Hub-Delivery": claimed.public_id,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(claimed.secret, timestamp, body),
    }
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
            response = client.post(claimed.url, content=body, headers=headers)
    except httpx.TimeoutException:
        return Answer(retry=True, error=f"no answer within {timeout_s:g} s")
    except httpx.TransportError as exc:
        return Answer(retry=True, error=f"could not connect: {exc or type(exc).__name__}"[:500])
    return classify(response)


def classify(response: httpx.Response) -> Answer:
    code = response.status_code
    if 200 <= code < 300:
        return Answer(retry=False, delivered=True, status_code=code)
    said = " ".join(response.text[:200].split())
    error = f"HTTP {code}" + (f": {said}" if said else "")
    if 300 <= code < 400:
        where = response.headers.get("Location", "?")
        error = f"HTTP {code}: redirected to {where}; redirects are not followed"
        return Answer(retry=False, status_code=code, error=error[:500])
    if code == 429 or code >= 500:
        after = retry_after_s(response.headers.get("Retry-After"))
        return Answer(retry=True, status_code=code, error=error[:500], retry_after_s=after)
    return Answer(retry=False, status_code=code, error=error[:500])


def retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds, or as an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def retry_delay(failed_attempts: int, retry_after: float | None) -> timedelta:
    """Exponential back-off with +-20 % jitter, and at least what Retry-After asked for."""
    base = RETRY_DELAYS_S[min(failed_attempts, len(RETRY_DELAYS_S)) - 1]
    seconds = base * random.uniform(0.8, 1.2)
    if retry_after is not None:
        seconds = max(seconds, min(retry_after, MAX_RETRY_AFTER_S))
    return timedelta(seconds=seconds)


def _record(session: Session, claimed: Claimed, answer: Answer, duration_ms: int):
    """Log the attempt and move the row on; returns the delay of the next attempt, if any."""
    now = utcnow()
    attempts = claimed.attempts + 1
    session.add(
        CallbackAttempt(
            outbox_id=claimed.outbox_id,
            endpoint_id=claimed.endpoint_id,
            at=now,
            status_code=answer.status_code,
            error=answer.error,
            duration_ms=duration_ms,
        )
    )
    values = {
        "attempts": attempts,
        "last_status_code": answer.status_code,
        "last_error": answer.error,
    }
    delay = None
    if answer.delivered:
        values |= {"status": CallbackStatus.DELIVERED, "delivered_at": now}
    elif answer.retry and attempts < MAX_ATTEMPTS:
        delay = retry_delay(attempts, answer.retry_after_s)
        values["next_attempt_at"] = now + delay
    else:
        values["status"] = CallbackStatus.FAILED
        if answer.retry:
            values["last_error"] = f"gave up after {attempts} attempts: {answer.error}"[:500]
    session.execute(
        update(CallbackOutbox).where(CallbackOutbox.id == claimed.outbox_id).values(**values)
    )
    return delay
