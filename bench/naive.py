"""The naive baseline: one RQ job per message, run by RQ's default forking worker. Each job opens
its own SMTP connection, sends its one message with aiosmtplib and marks its delivery row sent,
with a database connection of its own (a fresh work-horse process has no pool to reuse).

The worker itself is bench/naive_worker.py.
"""

from __future__ import annotations

import asyncio

import aiosmtplib
from redis import Redis
from rq import Queue
from sqlalchemy import update

from channels.email import OutgoingEmail, build_message
from hub.clock import utcnow
from hub.db import make_engine
from hub.models import Delivery, DeliveryStatus

NAIVE_QUEUE = "bench-naive"


def send_one(
    database_url: str, port: int, delivery_id: int, mail: OutgoingEmail, from_header: str
) -> str:
    """The job: build, connect, send one message, record it."""
    message = build_message(mail, from_header)
    asyncio.run(
        aiosmtplib.send(
            message,
            sender=mail.envelope_from,
            recipients=[mail.to],
            hostname="127.0.0.1",
            port=port,
            start_tls=False,
        )
    )
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id)
                .values(
                    status=DeliveryStatus.SENT,
                    sent_at=utcnow(),
                    attempts=Delivery.attempts + 1,
                    provider_id=mail.message_id,
                )
            )
    finally:
        engine.dispose()
    return mail.message_id


def enqueue(connection: Redis, jobs: list[tuple]) -> None:
    """One job per message (the args of send_one), in one pipeline."""
    queue = Queue(NAIVE_QUEUE, connection=connection)
    prepared = [Queue.prepare_data(send_one, args=args) for args in jobs]
    with connection.pipeline() as pipe:
        queue.enqueue_many(prepared, pipeline=pipe)
        pipe.execute()
