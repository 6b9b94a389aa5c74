"""What a misbehaving mail server, a bad address or a bad title must not do: skip a resident,
record a notice as sent that nobody got, stop a whole chunk, or leak a password."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, select

from channels.sandbox.smtp import free_port
from hub import clock, db
from hub.broadcasts import BroadcastError, NoticeDraft, cancel_broadcast, create_broadcast
from hub.delivery import ChunkJob, announce_emergency
from hub.models import ContactPoint
from hub.planning import plan_broadcast
from hub.sweeper import sweep
from tests.helpers import work
from tests.scripted_smtp import Script, ScriptedSmtp
from tests.test_delivery import _deliveries, _residents, _send


def _real_smtp(rt, port: int, **extra) -> None:
    """Point the hub at a 'real' SMTP server (the scripted one) instead of the stand-in."""
    rt.settings.smtp_host = "127.0.0.1"
    rt.settings.smtp_port = port
    rt.settings.smtp_starttls = False
    for name, value in extra.items():
        setattr(rt.settings, name, value)


def test_connection_lost_before_the_dot_is_retried_not_recorded_as_sent(seeded):
    rt = seeded
    port = free_port()
    _real_smtp(rt, port)
    _residents(rt, ["cut@example.org", "fine@example.org"])
    broadcast_id = _send(rt)
    with ScriptedSmtp(port, Script(drop_before_dot={"cut@example.org"})) as server:
        work(rt)
        assert server.delivered == ["fine@example.org"]
    rows = {r.contact_point_id: r for r in _deliveries(rt, broadcast_id)}
    cut = rows[min(rows)]
    assert cut.status == "retry" and ("lost" in cut.error or "no reply" in cut.error)
    assert cut.attempts == 0  # the relay's fault, not the address's

    clock.advance_to(cut.not_before + timedelta(seconds=rt.settings.sweep_grace_s + 1))
    with ScriptedSmtp(port, Script()) as server:
        sweep(rt)
        work(rt)
        assert server.delivered == ["cut@example.org"]


def test_rejection_after_the_dot_is_not_left_as_sent(seeded):
    rt = seeded
    port = free_port()
    _real_smtp(rt, port)
    _residents(rt, ["later@example.org", "never@example.org"])
    broadcast_id = _send(rt)
    script = Script(
        reply_after_dot={
            "later@example.org": "451 4.3.0 try later",
            "never@example.org": "554 5.6.0 content rejected",
        }
    )
    with ScriptedSmtp(port, script):
        work(rt)
    statuses = sorted((r.status, r.error.split(":")[0]) for r in _deliveries(rt, broadcast_id))
    assert statuses == [("failed", "DATA"), ("retry", "DATA")]


def test_a_server_taking_fewer_connections_still_gets_everyone(seeded):
    rt = seeded
    port = free_port()
    _real_smtp(rt, port, email_concurrency=10)
    addresses = [f"r{i}@example.org" for i in range(60)]
    _residents(rt, addresses)
    broadcast_id = _send(rt)
    with ScriptedSmtp(port, Script(max_connections=3)) as server:
        work(rt)
        assert sorted(server.delivered) == sorted(addresses)
    assert {r.status for r in _deliveries(rt, broadcast_id)} == {"sent"}


def test_a_mail_server_outage_does_not_use_up_attempts(seeded):
    rt = seeded
    _real_smtp(rt, free_port())  # nothing listens there
    _residents(rt, ["ana@example.org"])
    broadcast_id = _send(rt)
    work(rt)
    [row] = _deliveries(rt, broadcast_id)
    assert row.status == "retry" and "cannot connect" in row.error
    assert row.attempts == 0


def test_starttls_is_required_so_a_password_never_goes_out_in_clear(seeded):
    rt = seeded
    port = free_port()
    _real_smtp(
        rt,
        port,
        smtp_starttls=True,
        smtp_username="obvestila@kranj.si",
        smtp_password="S3cret-relay-pw",
    )
    _residents(rt, ["ana@example.org"])
    broadcast_id = _send(rt)
    with ScriptedSmtp(port, Script(starttls=False)) as server:
        work(rt)
        assert not any(c.upper().startswith("AUTH") for c in server.commands)
        assert server.delivered == []
    [row] = _deliveries(rt, broadcast_id)
    assert row.status == "retry"


def test_an_unusable_address_fails_alone_and_the_chunk_goes_on(seeded, smtp):
    rt = seeded
    _residents(rt, ["ana@example.org", "bor@example.org"])
    with rt.session() as session:  # written by hand, past the import's checks
        row = session.scalar(select(ContactPoint).where(ContactPoint.address == "bor@example.org"))
        row.address = "žiga@example.org"
    broadcast_id = _send(rt)
    work(rt)
    assert [m["to"] for m in smtp.messages()] == ["ana@example.org"]
    statuses = sorted(r.status for r in _deliveries(rt, broadcast_id))
    assert statuses == ["failed", "sent"]


@pytest.mark.parametrize("title", ["Zapora\nBcc: everyone@evil.example", "Dva\r\nreda", "Nič\0"])
def test_titles_that_would_break_an_email_header_are_refused(seeded, title):
    with seeded.session() as session, pytest.raises(BroadcastError):
        create_broadcast(
            session,
            NoticeDraft(title, "events", (), "normal", "preferred", {"sl": "Besedilo."}),
            created_by="test",
            default_locale="sl",
        )


def test_cancel_also_stops_rows_a_job_has_claimed(seeded, smtp):
    rt = seeded
    _residents(rt, [f"r{i}@example.org" for i in range(5)])
    broadcast_id = _send(rt)
    plan_broadcast(rt, broadcast_id)
    job = ChunkJob(rt, broadcast_id, 0)
    job.priority, job.policy = "normal", "preferred"
    rows = job.claim()
    assert len(rows) == 5
    with rt.session() as session:
        assert cancel_broadcast(session, broadcast_id) == 5
    # The job comes to commit its first messages: it owns none of them any more.
    assert job.commit_sent({r.id: f"<{r.id}@x>" for r in rows}) == set()
    assert {r.status for r in _deliveries(rt, broadcast_id)} == {"cancelled"}


def test_a_bulk_job_gives_its_worker_up_for_an_emergency(seeded, smtp):
    rt = seeded
    rt.settings.email_rate_per_s = 20
    _residents(rt, [f"r{i}@example.org" for i in range(200)])
    broadcast_id = _send(rt, priority="bulk")
    plan_broadcast(rt, broadcast_id)
    announce_emergency(rt)
    started = time.monotonic()
    result = ChunkJob(rt, broadcast_id, 0).run()
    assert time.monotonic() - started < 3
    assert result["claimed"] == 200 and smtp.count() < 30
    waiting = [r for r in _deliveries(rt, broadcast_id) if r.status == "pending"]
    assert len(waiting) == 200 - smtp.count()


def test_a_send_job_stops_within_its_time_budget(seeded, smtp):
    rt = seeded
    rt.settings.email_rate_per_s = 10
    rt.settings.job_budget_s = 1
    _residents(rt, [f"r{i}@example.org" for i in range(100)])
    broadcast_id = _send(rt)
    plan_broadcast(rt, broadcast_id)
    started = time.monotonic()
    ChunkJob(rt, broadcast_id, 0).run()
    assert time.monotonic() - started < 4
    rows = _deliveries(rt, broadcast_id)
    assert 0 < sum(r.status == "sent" for r in rows) < 100
    assert sum(r.status == "pending" for r in rows) == 100 - smtp.count()
    # and it comes back for the rest
    work(rt)
    assert smtp.count() == 100


@pytest.mark.skipif(
    not os.environ.get("HUB_TEST_DATABASE_URL"),
    reason="PostgreSQL's connections (SQLite has none to drop)",
)
def test_a_pooled_connection_the_database_dropped_is_replaced_unseen(rt, monkeypatch):
    """A restarted database (or a firewall) drops the connections idling in the pool: the
    next request checks an idle one first and gets a new one instead of an error."""
    monkeypatch.setattr(db, "IDLE_BEFORE_PING_S", 0.05)
    with rt.engine.connect() as connection:
        dropped = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    admin = create_engine(rt.settings.database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"SELECT pg_terminate_backend({int(dropped)})")
    admin.dispose()
    time.sleep(0.1)
    with rt.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar() != dropped
