"""A notice to 1,000 residents with mixed preferences, locales, quiet hours and opt-outs."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from sqlalchemy import select

from hub import clock
from hub.broadcasts import NoticeDraft, progress, send_notice
from hub.models import ContactPoint
from hub.sweeper import sweep
from tests import population
from tests.helpers import work

# 23:30 in Ljubljana (CET): inside 22:00-07:00 quiet hours; they end at 06:00 UTC next day.
LATE_EVENING_UTC = datetime(2026, 12, 1, 22, 30)
QUIET_ENDS_UTC = datetime(2026, 12, 2, 6, 0)


def _notice(priority="normal", policy="preferred"):
    return NoticeDraft(
        title="Odvoz odpadkov",
        topic=population.TOPIC,
        areas=population.TARGET_AREAS,
        priority=priority,
        channel_policy=policy,
        bodies=population.BODY,
    )


def _received(smtp) -> Counter:
    """Every message the stand-ins received (e-mail and SMS share the sandbox store)."""
    return Counter(m["to"] for m in smtp.messages(limit=100_000))


def test_thousand_residents_each_get_exactly_one_in_their_language(seeded, smtp, standin):
    rt = seeded
    clock.advance_to(LATE_EVENING_UTC)
    with rt.session() as session:
        expected = population.build(session, 1000)
    now_due = {e.address for e in expected.values() if not e.quiet}
    deferred = {e.address for e in expected.values() if e.quiet}
    assert len(now_due) > 300 and len(deferred) > 50  # the population really is mixed

    broadcast_id = send_notice(rt, _notice(), actor="test")
    work(rt)

    received = _received(smtp)
    assert set(received) == now_due  # nobody else, and nobody in quiet hours yet
    assert max(received.values()) == 1
    for message in smtp.messages(limit=100_000):
        resident = expected[population.index_of(message["to"])]
        assert population.BODY[resident.locale] in message["body"]
    with rt.session() as session:
        midway = progress(session, broadcast_id)
    assert midway.status == "sending"
    assert midway.by_status["pending"] == len(deferred)

    clock.advance_to(QUIET_ENDS_UTC + timedelta(minutes=1))
    report = sweep(rt)
    assert report.requeued_chunks >= 1
    work(rt)

    received = _received(smtp)
    assert set(received) == now_due | deferred
    assert max(received.values()) == 1
    with rt.session() as session:
        final = progress(session, broadcast_id)
        dead = session.scalars(
            select(ContactPoint.address).where(ContactPoint.active.is_(False))
        ).all()
    bounced = {e.bounced for e in expected.values() if e.bounced}
    assert set(dead) == bounced
    assert final.status == "done"
    assert final.by_status["sent"] == len(expected)
    assert final.by_status["gone"] == len(bounced)
    assert final.total == len(expected) + len(bounced)


def test_emergency_ignores_quiet_hours_and_topic_choice(seeded, smtp, standin):
    rt = seeded
    clock.advance_to(LATE_EVENING_UTC)
    with rt.session() as session:
        population.build(session, 120)
    send_notice(rt, _notice(priority="emergency"), actor="test")
    work(rt)
    received = _received(smtp)
    rules = {i: population.resident_rules(i) for i in range(120)}
    expected = {
        population.reachable_address(i)
        for i, r in rules.items()
        if (
            r["area"] in population.TARGET_AREAS
            or (r["follows_center_from_away"] and r["area"] == "bitnje")
        )
        and not r["opted_out"]
        and not r["unverified"]
    }
    assert set(received) == expected
    assert any(rules[i]["quiet"] for i in rules if f"r{i}@example.org" in received)
    assert any(m["channel"] == "sms" for m in smtp.messages(limit=1000))
    assert all(
        "EMERGENCY" in (m["subject"] or m["body"]) or "NUJNO" in (m["subject"] or m["body"])
        for m in smtp.messages(limit=1000)
    )


def test_policy_all_sends_to_every_verified_address(seeded, smtp, standin):
    rt = seeded
    with rt.session() as session:
        population.build(session, 60)
    send_notice(rt, _notice(policy="all"), actor="test")
    work(rt)
    received = _received(smtp)
    # Under "all" there is no fall-back: a resident with a dead first address also gets the
    # notice on the second one, because it is sent to both at once.
    assert "r17-alt@example.org" not in received or received["r17-alt@example.org"] == 1
    assert max(received.values()) == 1
