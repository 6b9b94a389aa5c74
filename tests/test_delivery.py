"""The send path in detail: retries and back-off, dead addresses, idempotency, priorities,
the shared rate limit, and the e-mail a resident actually gets."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from rq.registry import ScheduledJobRegistry
from sqlalchemy import select, update

from channels.email import classify
from hub import clock, queues
from hub.broadcasts import NoticeDraft, progress, send_notice
from hub.delivery import send_chunk
from hub.models import Area, Broadcast, BroadcastStatus, Delivery, Topic
from hub.planning import plan_broadcast
from hub.ratelimit import TokenBucket
from hub.residents import ResidentRow, import_rows
from hub.sweeper import sweep
from tests.helpers import work


def _residents(rt, addresses, area="center", topic="waste-collection", locale="sl"):
    with rt.session() as session:
        area_id = session.scalar(select(Area.id).where(Area.slug == area))
        topic_id = session.scalar(select(Topic.id).where(Topic.slug == topic))
        rows = [
            ResidentRow(f"R{i}", locale, area_id, [topic_id], {"email": a}, ["email"])
            for i, a in enumerate(addresses)
        ]
        import_rows(session, rows)


def _send(rt, priority="normal", topic="waste-collection", title="Odvoz"):
    draft = NoticeDraft(title, topic, ("center",), priority, "preferred", {"sl": f"{title}."})
    return send_notice(rt, draft, actor="test")


def _deliveries(rt, broadcast_id):
    with rt.session() as session:
        return list(session.scalars(select(Delivery).where(Delivery.broadcast_id == broadcast_id)))


@pytest.mark.parametrize(
    "code, message, phase, status",
    [
        (550, "5.1.1 User unknown", "RCPT", "gone"),
        (553, "5.1.3 Bad address syntax", "RCPT", "gone"),
        (550, "5.7.1 Rejected by policy", "RCPT", "failed"),
        (451, "4.2.1 Mailbox busy", "RCPT", "retry"),
        (421, "Service not available", "MAIL", "retry"),
        (552, "5.3.4 Message too big", "DATA", "failed"),
    ],
)
def test_smtp_replies_map_to_outcomes(code, message, phase, status):
    assert classify(code, message, phase)[0] == status


def test_the_email_a_resident_gets(seeded, smtp):
    rt = seeded
    _residents(rt, ["ana@example.org"])
    broadcast_id = _send(rt)
    work(rt)
    [message] = smtp.messages()
    [delivery] = _deliveries(rt, broadcast_id)
    meta = message["meta"]
    assert meta["message_id"] == delivery.provider_id  # the stored Message-ID
    assert meta["envelope_from"] == f"bounce+{delivery.id}@mestni-glas.example"
    assert meta["reply_to"].startswith("reply+") and meta["reply_to"].endswith(
        "@mestni-glas.example"
    )
    assert meta["list_unsubscribe"].startswith("<http://hub.test/unsubscribe/")
    raw = smtp.raw(message["id"]).decode()
    assert "Content-Type: multipart/alternative" in raw and "text/html" in raw
    assert "Date: " in raw


def test_temporary_failures_back_off_then_give_up(seeded, smtp):
    rt = seeded
    _residents(rt, ["busy@tempfail.example"])
    broadcast_id = _send(rt)
    start = clock.utcnow()
    clock.advance_to(start)
    work(rt)
    delays = []
    for attempt in range(1, rt.settings.max_attempts):
        [row] = _deliveries(rt, broadcast_id)
        assert (row.status, row.attempts) == ("retry", attempt)
        assert "451" in row.error
        delays.append(row.not_before - clock.utcnow())
        clock.advance_to(row.not_before + timedelta(seconds=rt.settings.sweep_grace_s + 1))
        sweep(rt)
        work(rt)
    [row] = _deliveries(rt, broadcast_id)
    assert row.status == "failed"
    assert row.error.startswith(f"gave up after {rt.settings.max_attempts} attempts")
    # 30 s, 2 min, 8 min, 32 min (a little less: the clock runs on while the job works)
    for delay, expected in zip(delays, (30, 120, 480, 1920), strict=True):
        assert expected - 5 < delay.total_seconds() <= expected
    assert smtp.count() == 0


def test_smtp_server_down_means_retry_not_failure(seeded):
    rt = seeded  # no smtp fixture: nothing listens on the stand-in's port
    _residents(rt, ["ana@example.org"])
    broadcast_id = _send(rt)
    work(rt)
    [row] = _deliveries(rt, broadcast_id)
    assert row.status == "retry"
    assert "cannot connect to SMTP server" in row.error


def test_a_job_run_twice_sends_nothing_twice(seeded, smtp):
    rt = seeded
    _residents(rt, [f"r{i}@example.org" for i in range(30)])
    broadcast_id = _send(rt)
    work(rt)
    assert smtp.count() == 30
    for bucket in {d.id // rt.settings.chunk_size for d in _deliveries(rt, broadcast_id)}:
        send_chunk(broadcast_id, bucket)
        queues.enqueue_send_chunks(rt.redis, "normal", [(broadcast_id, bucket)])
    work(rt)
    assert smtp.count() == 30


def test_planning_resumes_after_a_crash_without_duplicates(seeded, smtp):
    rt = seeded
    _residents(rt, [f"r{i}@example.org" for i in range(50)])
    broadcast_id = _send(rt)
    work(rt)
    with rt.session() as session:
        session.execute(
            update(Broadcast)
            .where(Broadcast.id == broadcast_id)
            .values(status=BroadcastStatus.PLANNING)
        )
    assert plan_broadcast(rt, broadcast_id) == {"planned": 0}
    assert len(_deliveries(rt, broadcast_id)) == 50
    work(rt)
    assert smtp.count() == 50


def test_emergency_jumps_the_queue(seeded, smtp):
    rt = seeded
    rt.settings.chunk_size = 50
    _residents(rt, [f"r{i}@example.org" for i in range(400)])
    _send(rt, priority="bulk", title="Obvestilo o prireditvah")
    _send(rt, priority="emergency", title="Poplava")
    work(rt)
    arrival = [m["subject"] for m in reversed(smtp.messages(limit=1000))]
    assert len(arrival) == 800
    emergency = [i for i, subject in enumerate(arrival) if "Poplava" in subject]
    assert emergency == list(range(400)), "every emergency e-mail arrives before any bulk one"


def test_token_bucket_never_grants_more_than_rate_plus_burst(rt):
    bucket = TokenBucket(rt.redis, "test", rate_per_s=50, burst=10)
    granted = 0
    started = time.monotonic()
    while time.monotonic() - started < 1.0:
        granted += bucket.take(5).granted
    elapsed = time.monotonic() - started
    assert granted <= 10 + 50 * elapsed + 1
    assert granted >= 40  # and it does hand tokens out


def test_a_throttled_channel_gives_its_rows_back_instead_of_blocking(seeded, smtp):
    rt = seeded
    rt.settings.email_rate_per_s = 0.2  # one token every 5 s: longer than a job may wait
    _residents(rt, [f"r{i}@example.org" for i in range(5)])
    broadcast_id = _send(rt)
    started = time.monotonic()
    work(rt)
    assert time.monotonic() - started < 5, "the worker was held hostage by the rate limit"
    rows = _deliveries(rt, broadcast_id)
    assert smtp.count() == 1  # the one token in the bucket
    waiting = [r for r in rows if r.status == "pending"]
    assert len(waiting) == 4
    assert all(r.not_before > clock.utcnow() for r in waiting)
    assert ScheduledJobRegistry(queue=queues.queue(rt.redis, "default")).count == 1
    with rt.session() as session:
        assert progress(session, broadcast_id).status == "sending"


def test_cancel_stops_what_has_not_gone(seeded, smtp):
    from hub.broadcasts import BroadcastError, cancel_broadcast

    rt = seeded
    _residents(rt, [f"r{i}@example.org" for i in range(20)])
    broadcast_id = _send(rt)
    with rt.session() as session:  # planned, not yet sent
        plan_broadcast(rt, broadcast_id)
        assert cancel_broadcast(session, broadcast_id) == 20
    work(rt)
    assert smtp.count() == 0
    with rt.session() as session:
        final = progress(session, broadcast_id)
        assert final.status == "cancelled" and final.by_status["cancelled"] == 20
        with pytest.raises(BroadcastError):
            cancel_broadcast(session, broadcast_id)


def test_bulk_jobs_stop_yielding_as_soon_as_the_last_emergency_is_done(seeded, smtp):
    from hub.delivery import EMERGENCY_KEY

    rt = seeded
    _residents(rt, ["ana@example.org"])
    _send(rt, priority="emergency", title="Poplava")
    work(rt)
    assert smtp.count() == 1
    assert not rt.redis.exists(EMERGENCY_KEY), "bulk jobs would keep giving their rows back"
