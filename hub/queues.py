"""The only module that knows queue names, job ids and job defaults."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import redis
from rq import Queue
from rq.job import Job, JobStatus

from hub.models import Priority

# Workers listen in this order, so an emergency never waits behind a bulk send.
QUEUE_NAMES = ("emergency", "high", "default", "bulk")
PRIORITY_QUEUE = {
    Priority.EMERGENCY: "emergency",
    Priority.NORMAL: "default",
    Priority.BULK: "bulk",
}

EMERGENCY_QUEUE_KEY = Queue.redis_queue_namespace_prefix + "emergency"
SEND_JOB = "hub.delivery.send_chunk"
PLAN_JOB = "hub.planning.plan_job"
STATUS_RETRY_JOB = "hub.status.retry_twilio_status"
JOB_TIMEOUT_S = 600
RESULT_TTL_S = 300
WAITING_STATUSES = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def queue(connection: redis.Redis, name: str) -> Queue:
    return Queue(name, connection=connection, default_timeout=JOB_TIMEOUT_S)


def all_queues(connection: redis.Redis) -> list[Queue]:
    return [queue(connection, name) for name in QUEUE_NAMES]


def send_job_id(broadcast_id: int, bucket: int) -> str:
    return f"send-{broadcast_id}-{bucket}"


def enqueue_send_chunks(
    connection: redis.Redis, priority: str, chunks: Iterable[tuple[int, int]], suffix: str = ""
) -> int:
    """Enqueue one send job per (broadcast, bucket) in one pipeline; returns how many.

    A finished job's record expires (result_ttl), and RQ keeps that expiry when the same id is
    enqueued again, so a job that waited in a long queue could vanish before it ran. Callers
    that may repeat an id either pass a `suffix` or enqueue only ids known not to be live; the
    stale record of such an id is deleted first."""
    q = queue(connection, PRIORITY_QUEUE[priority])
    prepared = [
        Queue.prepare_data(
            SEND_JOB,
            args=(broadcast_id, bucket),
            job_id=send_job_id(broadcast_id, bucket) + suffix,
            result_ttl=RESULT_TTL_S,
            timeout=JOB_TIMEOUT_S,
        )
        for broadcast_id, bucket in chunks
    ]
    for start in range(0, len(prepared), 1000):
        with connection.pipeline() as pipe:
            batch = prepared[start : start + 1000]
            pipe.delete(*(Job.key_for(data.job_id) for data in batch))
            q.enqueue_many(batch, pipeline=pipe)
            pipe.execute()
    return len(prepared)


def schedule_send_chunk(
    connection: redis.Redis, priority: str, broadcast_id: int, bucket: int, at: datetime
) -> None:
    """Run a chunk's job again at `at` (UTC): rows deferred by quiet hours, back-off or rate.

    The id differs from the chunk's own job id: the job that schedules this is still running
    under that id, and RQ would mark the shared record finished when it ends."""
    q = queue(connection, PRIORITY_QUEUE[priority])
    moment = at.replace(tzinfo=UTC)
    options = {
        "job_id": f"{send_job_id(broadcast_id, bucket)}-at{int(moment.timestamp())}",
        "result_ttl": RESULT_TTL_S,
        "job_timeout": JOB_TIMEOUT_S,
    }
    if moment <= datetime.now(UTC):
        q.enqueue(SEND_JOB, broadcast_id, bucket, **options)  # at the back of its queue
    else:
        q.enqueue_at(moment, SEND_JOB, broadcast_id, bucket, **options)


RUNNING_KEY = "hub:running:{}"


def mark_running(connection: redis.Redis, job_id: str, ttl_s: int) -> None:
    """A heartbeat: while it lives, the job with this id is really running somewhere."""
    connection.set(RUNNING_KEY.format(job_id), 1, ex=ttl_s)


def clear_running(connection: redis.Redis, job_id: str) -> None:
    connection.delete(RUNNING_KEY.format(job_id))


def live_jobs(connection: redis.Redis, job_ids: list[str]) -> list[bool]:
    """For each id: is that job waiting (queued, scheduled, deferred) or heart-beating?

    RQ's own "started" is not enough: a worker killed with SIGKILL leaves its job "started"
    until RQ's maintenance notices, minutes later."""
    jobs = Job.fetch_many(job_ids, connection=connection)
    with connection.pipeline() as pipe:
        for job_id in job_ids:
            pipe.exists(RUNNING_KEY.format(job_id))
        running = pipe.execute()
    return [
        bool(beat) or (job is not None and job.get_status(refresh=False) in WAITING_STATUSES)
        for job, beat in zip(jobs, running, strict=True)
    ]


def retry_delay(attempt: int) -> timedelta:
    """Back-off after the n-th failed attempt: 30 s, 2 min, 8 min, 32 min, then hourly."""
    return timedelta(seconds=min(30 * 4 ** (attempt - 1), 3600))


def emergency_pending(connection: redis.Redis, sending_key: str) -> bool:
    """Is an emergency sending (its jobs keep `sending_key` alive) or waiting in its queue
    (just approved, or brought in by the scheduler) for a worker?"""
    with connection.pipeline(transaction=False) as pipe:
        pipe.exists(sending_key)
        pipe.llen(EMERGENCY_QUEUE_KEY)
        sending, waiting = pipe.execute()
    return bool(sending or waiting)


def queue_depths(connection: redis.Redis) -> dict[str, int]:
    return {q.name: q.count for q in all_queues(connection)}


def plan_job_id(broadcast_id: int) -> str:
    return f"plan-{broadcast_id}"


def enqueue_plan(
    connection: redis.Redis, priority: str, broadcast_id: int, at: datetime | None = None
) -> None:
    """Queue the planning job of a notice, now or at its scheduled time (naive UTC)."""
    q = queue(connection, PRIORITY_QUEUE[priority])
    options = {
        "job_id": plan_job_id(broadcast_id),
        "result_ttl": RESULT_TTL_S,
        "job_timeout": JOB_TIMEOUT_S * 6,
    }
    if at is None:
        q.enqueue(PLAN_JOB, broadcast_id, **options)
    else:
        q.enqueue_at(at.replace(tzinfo=UTC), PLAN_JOB, broadcast_id, **options)


def schedule_status_retry(connection: redis.Redis, args: tuple, delay_s: float) -> None:
    """Apply a provider's status callback again in a while (it came before its delivery)."""
    queue(connection, "high").enqueue_in(
        timedelta(seconds=delay_s), STATUS_RETRY_JOB, *args, result_ttl=RESULT_TTL_S
    )


def enqueue_once(
    connection: redis.Redis, queue_name: str, function: str, args: tuple, job_id: str, **options
) -> None:
    """Enqueue a job under a fixed id (so the sweeper can tell whether it is still live),
    dropping a finished job's stale record of that id first (see enqueue_send_chunks)."""
    connection.delete(Job.key_for(job_id))
    queue(connection, queue_name).enqueue_call(
        function, args=args, job_id=job_id, result_ttl=RESULT_TTL_S, **options
    )


def enqueue_single(
    connection: redis.Redis, queue_name: str, function: str, key: str, ttl_s: int
) -> bool:
    """Enqueue `function` unless such a job is already waiting in the queue; True if this call
    enqueued it. `key` holds the waiting job's id until the job starts (single_started), so at
    most one waits while others run; the TTL frees the key if Redis loses the job."""
    job_id = f"{key.rpartition(':')[2]}-{uuid.uuid4().hex[:16]}"
    if not connection.set(key, job_id, nx=True, ex=ttl_s):
        return False
    queue(connection, queue_name).enqueue_call(function, job_id=job_id, result_ttl=0)
    return True


def single_started(connection: redis.Redis, key: str) -> None:
    """The waiting job of `key` has started: the next request queues a new one."""
    connection.delete(key)


def single_live(connection: redis.Redis, key: str, running_id: str) -> bool:
    """Is a job of `key` waiting in its queue, or one heart-beating under `running_id`? A key
    naming a job that is no longer waiting (Redis lost it) is dropped, so a request can
    queue another at once."""
    waiting = connection.get(key)
    if waiting is not None:
        [live] = live_jobs(connection, [waiting.decode()])
        if live:
            return True
        connection.delete(key)
    return bool(connection.exists(RUNNING_KEY.format(running_id)))
