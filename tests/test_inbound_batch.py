"""Replies are processed in batches ("drains"): a burst takes a few jobs, not one per reply,
and still every reply lands exactly once, in order per sender, even with two workers draining
at once, a worker dying mid-batch, or one reply that cannot be processed."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from rq.registry import FailedJobRegistry
from sqlalchemy import bindparam, event, func, select, text

from hub import clock, inbound, queues
from hub.models import Area, ContactPoint, Conversation, InboundEvent, Message, Topic
from hub.residents import ResidentRow, import_rows
from hub.sweeper import sweep
from tests.helpers import work
from tests.test_inbox import _notice, _sms_webhook

ON_POSTGRES = pytest.mark.skipif(
    not os.environ.get("HUB_TEST_DATABASE_URL"),
    reason="row locks between two drains: PostgreSQL (SQLite has one writer at a time)",
)


def _phones(rt, count: int) -> list[str]:
    """`count` residents with an SMS number each."""
    numbers = [f"+3864099{i:04d}" for i in range(count)]
    with rt.session() as session:
        area_id = session.scalar(select(Area.id).where(Area.slug == "center"))
        topic_id = session.scalar(select(Topic.id).where(Topic.slug == "road-works"))
        import_rows(
            session,
            [
                ResidentRow(f"R {i}", "sl", area_id, [topic_id], {"sms": n}, ["sms"])
                for i, n in enumerate(numbers)
            ],
        )
    return numbers


def _sms(rt, sid: str, sender: str, body: str) -> bool:
    """What the Twilio webhook hands over once the signature is checked."""
    payload = urlencode({"MessageSid": sid, "From": sender, "Body": body}).encode()
    return inbound.accept(rt, "sms", sid, payload)


def _bodies(rt) -> list[str]:
    with rt.session() as session:
        return list(session.scalars(select(Message.body).order_by(Message.id)))


def _in_order(rt, sender: str) -> list[str]:
    """One sender's messages as the conversation shows them (by time, then id)."""
    with rt.session() as session:
        return list(
            session.scalars(
                select(Message.body)
                .where(Message.address == sender)
                .order_by(Message.created_at, Message.id)
            )
        )


def _unprocessed(rt) -> int:
    with rt.session() as session:
        return session.scalar(select(func.count()).where(InboundEvent.processed_at.is_(None)))


def _high(rt):
    return queues.queue(rt.redis, "high")


def _after_grace(rt) -> None:
    clock.advance_to(clock.utcnow() + timedelta(seconds=rt.settings.sweep_grace_s + 1))


def test_a_burst_takes_one_job_and_every_reply_lands_once(seeded, standin, client):
    rt = seeded
    phones = _phones(rt, 5)
    for i in range(30):
        response = _sms_webhook(client, rt, f"Luknja {i}", sid=f"SM{i:032d}", sender=phones[i % 5])
        assert response.status_code == 200
    assert _high(rt).count == 1  # one drain waits for all 30, not 30 jobs
    work(rt)
    assert sorted(_bodies(rt)) == sorted(f"Luknja {i}" for i in range(30))
    with rt.session() as session:
        assert session.scalar(select(func.count()).select_from(Conversation)) == 5
    assert _unprocessed(rt) == 0
    assert _high(rt).count == 0


def test_a_lone_reply_is_processed_at_once(seeded, standin, client):
    rt = seeded
    [phone] = _phones(rt, 1)
    _sms_webhook(client, rt, "Halo?", sender=phone)
    assert _high(rt).count == 1
    work(rt)
    assert _bodies(rt) == ["Halo?"]
    _sms_webhook(client, rt, "Še kdo tam?", sid="SM" + "2" * 32, sender=phone)
    assert _high(rt).count == 1  # the next reply queues a drain of its own
    work(rt)
    assert _bodies(rt) == ["Halo?", "Še kdo tam?"]


def test_a_redelivered_webhook_is_still_one_message(seeded, standin, client):
    rt = seeded
    [phone] = _phones(rt, 1)
    sid = "SM" + "7" * 32
    for _ in range(3):  # before the drain ran
        assert _sms_webhook(client, rt, "Kdaj?", sid=sid, sender=phone).status_code == 200
    work(rt)
    assert _sms_webhook(client, rt, "Kdaj?", sid=sid, sender=phone).status_code == 200  # after
    work(rt)
    assert _bodies(rt) == ["Kdaj?"]


def test_one_senders_burst_keeps_its_order(seeded):
    rt = seeded
    phones = _phones(rt, 3)
    for i in range(60):
        _sms(rt, f"SMo{i}", phones[i % 3], f"{phones[i % 3]} #{i:02d}")
    work(rt)
    for phone in phones:
        shown = _in_order(rt, phone)
        assert len(shown) == 20
        assert shown == sorted(shown)


def test_a_reply_that_fails_spoils_nothing_else_and_is_retried_by_the_sweeper(seeded):
    rt = seeded
    phones = _phones(rt, 2)
    _sms(rt, "SMa", phones[0], "Prvo")
    inbound.accept(rt, "sms", "SMbad", b"\xff\xfe not a form")  # cannot be decoded
    _sms(rt, "SMc", phones[1], "Tretje")
    work(rt)
    assert sorted(_bodies(rt)) == ["Prvo", "Tretje"]
    with rt.session() as session:
        bad = session.scalar(select(InboundEvent).where(InboundEvent.provider_event_id == "SMbad"))
    assert bad.processed_at is None and bad.outcome.startswith("failed: UnicodeDecodeError")
    assert _high(rt).count == 0  # no drain spins on it
    _sms(rt, "SMd", phones[0], "Četrto")  # later replies are not held back by it
    work(rt)
    assert "Četrto" in _bodies(rt)
    _after_grace(rt)
    assert sweep(rt).requeued_inbound == 1  # a job of its own, which fails where RQ shows it
    work(rt)
    assert FailedJobRegistry(queue=_high(rt)).get_job_ids() == [inbound.job_id(bad.id)]
    assert _unprocessed(rt) == 1


def test_a_drain_that_died_leaves_its_events_for_the_sweeper(seeded):
    rt = seeded
    phones = _phones(rt, 4)
    for i in range(12):
        _sms(rt, f"SMk{i}", phones[i % 4], f"Sporočilo {i}")
    rt.redis.flushdb()  # the drain job died with its worker, and Redis forgot it
    work(rt)
    assert _bodies(rt) == []
    assert sweep(rt).requeued_inbound == 0  # within the grace: a drain may still be coming
    _after_grace(rt)
    assert sweep(rt).requeued_inbound == 12  # one drain for all of them
    assert _high(rt).count == 1
    assert sweep(rt).requeued_inbound == 0  # that drain is waiting: nothing more to do
    work(rt)
    assert sorted(_bodies(rt)) == sorted(f"Sporočilo {i}" for i in range(12))


def _hold_then_release(rt, event_ids: list[int], until, seen: list) -> threading.Thread:
    """Another drain at work: its transaction holds these events until `until()` is true
    (or 10 s passed), notes what the inbox showed meanwhile in `seen`, and then ends without
    committing, as when its worker is killed."""
    held = threading.Event()

    def hold() -> None:
        with rt.engine.connect() as connection:
            connection.execute(
                text("SELECT id FROM inbound_events WHERE id IN :ids FOR UPDATE").bindparams(
                    bindparam("ids", expanding=True)
                ),
                {"ids": event_ids},
            )
            held.set()
            deadline = time.monotonic() + 10
            while not until() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)  # the drain really waits, it does not just come back later
            seen.extend(_bodies(rt))

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    return thread


def _event_ids(rt, count: int) -> list[int]:
    with rt.session() as session:
        return list(session.scalars(select(InboundEvent.id).order_by(InboundEvent.id).limit(count)))


@ON_POSTGRES
def test_a_worker_killed_mid_batch_loses_nothing_and_doubles_nothing(seeded):
    rt = seeded
    phones = _phones(rt, 10)
    for i in range(40):
        _sms(rt, f"SMx{i}", phones[i % 10], f"Sporočilo {i}")
    rt.redis.flushdb()
    # A worker mid-batch holds the oldest ten; the drain here skips them, and their senders'
    # later replies (every sender has one among the ten) wait for them.
    seen: list[str] = []
    released_at = time.monotonic() + 1.5
    dying = _hold_then_release(rt, _event_ids(rt, 10), lambda: time.monotonic() > released_at, seen)
    inbound.request_drain(rt)
    work(rt)
    dying.join()
    assert seen == []  # nothing overtook the held replies
    assert sorted(_bodies(rt)) == sorted(f"Sporočilo {i}" for i in range(40))
    with rt.session() as session:
        per_event = Counter(session.scalars(select(Message.inbound_event_id)))
    assert len(per_event) == 40 and set(per_event.values()) == {1}


def test_two_drains_at_once_never_process_an_event_twice(seeded):
    """PostgreSQL: row locks, both at work; SQLite: the second waits for the first."""
    rt = seeded
    phones = _phones(rt, 50)
    for i in range(400):
        _sms(rt, f"SMt{i}", phones[i % 50], f"{phones[i % 50]} #{i:03d}")
    rt.redis.flushdb()
    batches: list[tuple[int, inbound.Batch]] = []

    def drain_all(drain: int) -> None:
        while True:
            batch = inbound.process_batch(rt, 20)
            batches.append((drain, batch))
            if not batch.claimed:
                return

    threads = [threading.Thread(target=drain_all, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    processed = Counter(event_id for _, b in batches for event_id, _ in b.processed)
    assert len(processed) == 400 and set(processed.values()) == {1}
    if rt.engine.dialect.name == "postgresql":  # really more than one drain at work
        assert len({drain for drain, b in batches if b.processed}) > 1
    with rt.session() as session:
        per_event = Counter(session.scalars(select(Message.inbound_event_id)))
    assert len(per_event) == 400 and set(per_event.values()) == {1}
    for phone in phones:
        shown = _in_order(rt, phone)
        assert len(shown) == 8 and shown == sorted(shown)


@ON_POSTGRES
def test_a_senders_later_reply_waits_for_the_one_another_drain_holds(seeded):
    rt = seeded
    first, other = _phones(rt, 2)
    _sms(rt, "SMw1", first, "Prvo")
    _sms(rt, "SMw2", other, "Drug pošiljatelj")
    _sms(rt, "SMw3", first, "Drugo")
    rt.redis.flushdb()
    seen: list[str] = []
    busy = _hold_then_release(  # another drain, working on "Prvo"
        rt, _event_ids(rt, 1), lambda: "Drug pošiljatelj" in _bodies(rt), seen
    )
    inbound.request_drain(rt)
    work(rt)
    busy.join()
    assert seen == ["Drug pošiljatelj"]  # the other sender went ahead; "Drugo" waited
    assert _in_order(rt, first) == ["Prvo", "Drugo"]


def _statements_of_one_batch(rt) -> int:
    """Run one drain batch and count the SQL statements it sent (an executemany is one)."""
    sent = []

    def count(*_args):
        sent.append(1)

    event.listen(rt.engine, "before_cursor_execute", count)
    try:
        inbound.process_batch(rt, inbound.BATCH)
    finally:
        event.remove(rt.engine, "before_cursor_execute", count)
    return len(sent)


def test_a_batch_costs_about_the_same_for_one_reply_or_twenty(seeded):
    """A drain reads its senders' contacts, conversations and last notices for the whole
    batch and writes its messages together: not four statements a reply."""
    rt = seeded
    phones = _phones(rt, 21)
    for i, phone in enumerate(phones):  # everyone has a conversation already
        _sms(rt, f"SMfirst{i}", phone, "Prvič")
    inbound.process_batch(rt, inbound.BATCH)
    _sms(rt, "SMone", phones[0], "Drugič")
    one = _statements_of_one_batch(rt)
    for i, phone in enumerate(phones[1:]):
        _sms(rt, f"SMtwenty{i}", phone, "Drugič")
    twenty = _statements_of_one_batch(rt)
    # SQLite gets an INSERT a message (SQLAlchemy batches RETURNING only on PostgreSQL);
    # those run in-process, without a round trip
    per_message = 1 if rt.engine.dialect.name == "sqlite" else 0
    assert twenty <= one + 2 + 19 * per_message, (one, twenty)
    assert _bodies(rt).count("Drugič") == 21
    with rt.session() as session:
        assert session.scalar(select(func.count()).select_from(Conversation)) == 21


def test_batched_replies_thread_new_known_unknown_and_stopping_senders(seeded, standin):
    rt = seeded
    known, new, stopping = _phones(rt, 3)
    notice_id = _notice(rt)  # to all three, by SMS
    work(rt)
    _sms(rt, "SMk0", known, "Od prej")
    work(rt)
    stranger = "+38641000999"
    for sid, sender, body in [
        ("SMb1", new, "Ena"),
        ("SMb2", stranger, "Kdo ste?"),
        ("SMb3", known, "Spet jaz"),
        ("SMb4", new, "Dve"),
        ("SMb5", stopping, "STOP"),
        ("SMb6", stranger, "Halo?"),
        ("SMb7", new, "Tri"),
    ]:
        _sms(rt, sid, sender, body)
    processed = []
    while len(processed) < 7:  # one batch, unless its time budget runs out (a cold start)
        batch = inbound.process_batch(rt, inbound.BATCH)
        assert batch.processed and not batch.failed
        processed += batch.processed
    with rt.session() as session:
        threads = {
            address: session.scalars(
                select(Conversation.id).where(Conversation.address == address)
            ).all()
            for address in (known, new, stopping, stranger)
        }
        assert all(len(ids) == 1 for ids in threads.values()), threads
        by_sender = {
            address: session.execute(
                select(Message.body, Message.broadcast_id)
                .where(Message.conversation_id == ids[0], Message.direction == "in")
                .order_by(Message.id)
            ).all()
            for address, ids in threads.items()
        }
        stopped = session.scalar(select(ContactPoint).where(ContactPoint.address == stopping))
        stranger_thread = session.get(Conversation, threads[stranger][0])
    assert by_sender[known] == [("Od prej", notice_id), ("Spet jaz", notice_id)]
    assert by_sender[new] == [("Ena", notice_id), ("Dve", notice_id), ("Tri", notice_id)]
    assert by_sender[stranger] == [("Kdo ste?", None), ("Halo?", None)]
    assert stranger_thread.resident_id is None
    assert stopped.opted_out_at is not None
    work(rt)  # the STOP confirmation goes out
    [confirmation, _notice_sms] = standin.store.messages(channel="sms", to=stopping)
    assert confirmation["body"].startswith("Mestni glas")
