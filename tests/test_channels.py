"""Telegram and Web Push through the hub's send path, fall-back between channels, and an
emergency overtaking a bulk send: the real libraries over sockets to the stand-ins."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from channels.sandbox.push import create_subscription
from channels.sandbox.smtp import free_port
from hub import providers
from hub.broadcasts import NoticeDraft, fallbacks, progress, send_notice
from hub.models import Area, ContactPoint, Delivery, Resident, Topic
from hub.residents import ResidentRow, import_rows
from tests.helpers import work
from tests.processes import WorkerProcesses, wait_until, worker_env

TOPIC = "events"


def _resident(rt, standin, channels: list[str], n: int = 0, area: str = "center") -> int:
    """A resident following TOPIC in `area` with contact points in `channels`' order."""
    addresses = [_address(rt, standin, channel, n) for channel in channels]
    with rt.session() as session:
        area_id = session.scalar(select(Area.id).where(Area.slug == area))
        topic_id = session.scalar(select(Topic.id).where(Topic.slug == TOPIC))
        import_rows(session, [ResidentRow(f"R{n}", "sl", area_id, [topic_id])])
        resident_id = session.scalar(select(Resident.id).order_by(Resident.id.desc()))
        for rank, (channel, (address, details)) in enumerate(
            zip(channels, addresses, strict=True), 1
        ):
            session.add(
                ContactPoint(
                    resident_id=resident_id,
                    channel=channel,
                    address=address,
                    details=details,
                    rank=rank,
                    verified=True,
                )
            )
    return resident_id


def _address(rt, standin, channel: str, n: int) -> tuple[str, dict | None]:
    if channel == "push":
        public_key = providers.vapid_keys(rt)[1]
        subscription = create_subscription(standin.store, standin.url, public_key)
        return subscription["endpoint"], subscription["keys"]
    return {
        "telegram": (str(5000 + n), None),
        "sms": (f"+3864000{n:04d}", None),
        "email": (f"r{n}@example.org", None),
    }[channel]


def _send(rt, title="Koncert na Glavnem trgu", body="Nocoj ob 20h & brezplačno.", **options):
    draft = NoticeDraft(
        title,
        TOPIC,
        options.pop("areas", ("center",)),
        options.pop("priority", "normal"),
        options.pop("policy", "preferred"),
        {"sl": body, "en": "Tonight at 8 pm & free."},
        **options,
    )
    return send_notice(rt, draft, actor="test")


def _deliveries(rt, broadcast_id: int) -> list[Delivery]:
    with rt.session() as session:
        query = select(Delivery).where(Delivery.broadcast_id == broadcast_id)
        return list(session.scalars(query.order_by(Delivery.id)))


def test_a_telegram_message_is_escaped_html(seeded, standin):
    rt = seeded
    _resident(rt, standin, ["telegram"])
    broadcast_id = _send(rt, title="<Koncert> & ples")
    work(rt)
    [message] = standin.store.messages(channel="telegram")
    assert message["to"] == "5000"
    assert message["meta"]["parse_mode"] == "HTML"
    assert message["body"].startswith("<b>&lt;Koncert&gt; &amp; ples</b>")
    assert "20h &amp; brezplačno" in message["body"]
    [row] = _deliveries(rt, broadcast_id)
    assert row.status == "sent"
    assert row.provider_id == f"5000:{message['meta']['message_id']}"


def test_a_blocked_chat_falls_back_to_push(seeded, standin):
    rt = seeded
    _resident(rt, standin, ["telegram", "push"])
    standin.telegram.control_block("5000")
    broadcast_id = _send(rt)
    work(rt)
    telegram, push = _deliveries(rt, broadcast_id)
    assert (telegram.status, push.status, push.fallback_from_id) == ("gone", "sent", telegram.id)
    assert "blocked" in telegram.error
    [notification] = standin.store.messages(channel="push")
    assert notification["subject"] == "Koncert na Glavnem trgu"
    assert "brezplačno" in notification["body"]
    with rt.session() as session:
        chat = session.scalar(select(ContactPoint).where(ContactPoint.channel == "telegram"))
        assert not chat.active
        [move] = fallbacks(session, broadcast_id)
    assert (move.from_channel, move.to_channel, move.count) == ("telegram", "push", 1)
    assert "blocked" in move.reason


def test_an_expired_push_subscription_falls_back_to_sms(seeded, standin):
    rt = seeded
    _resident(rt, standin, ["push", "sms"])
    with rt.session() as session:
        endpoint = session.scalar(
            select(ContactPoint.address).where(ContactPoint.channel == "push")
        )
    standin.push.control_expire(endpoint.rsplit("/", 1)[1])
    broadcast_id = _send(rt)
    work(rt)
    push, sms = _deliveries(rt, broadcast_id)
    assert (push.status, sms.status, sms.channel) == ("gone", "sent", "sms")
    assert standin.store.count("sms") == 1 and standin.store.count("push") == 0


def test_a_migrated_chat_is_followed_and_remembered(seeded, standin):
    rt = seeded
    _resident(rt, standin, ["telegram"])
    standin.telegram.control_migrate("5000", "-1005000")
    broadcast_id = _send(rt)
    work(rt)
    [row] = _deliveries(rt, broadcast_id)
    assert row.status == "sent"
    assert [m["to"] for m in standin.store.messages(channel="telegram")] == ["-1005000"]
    with rt.session() as session:
        assert session.scalar(select(ContactPoint.address)) == "-1005000"


def test_a_throttled_bot_retries_later_without_using_up_attempts(seeded, standin):
    rt = seeded
    standin.telegram.control_set_rate(per_bot=1)
    for n in range(3):
        _resident(rt, standin, ["telegram"], n=n)
    broadcast_id = _send(rt)
    work(rt)
    rows = _deliveries(rt, broadcast_id)
    retried = [r for r in rows if r.status == "retry"]
    assert retried and all(r.attempts == 0 and r.not_before is not None for r in retried)
    assert standin.telegram.control_stats()["throttled"] >= 1


def test_push_carries_ttl_urgency_topic_and_a_link(seeded, standin):
    rt = seeded
    _resident(rt, standin, ["push"])
    normal = _send(rt)
    emergency = _send(rt, title="Poplava", body="Umaknite vozila iz garaž.", priority="emergency")
    work(rt)
    by_title = {m["subject"]: m["meta"] for m in standin.store.messages(channel="push")}
    assert by_title["Koncert na Glavnem trgu"]["urgency"] == "normal"
    urgent = next(meta for title, meta in by_title.items() if "Poplava" in title)
    assert urgent["urgency"] == "high"
    assert urgent["topic"] == f"n{emergency}"
    assert int(urgent["ttl"]) == rt.settings.push_ttl_s
    assert urgent["url"] == f"{rt.settings.base_url}/notices/{emergency}"
    assert by_title["Koncert na Glavnem trgu"]["url"].endswith(f"/notices/{normal}")


def test_a_long_notice_is_cut_to_fit_a_push_message(seeded, standin):
    rt = seeded
    _resident(rt, standin, ["push"])
    broadcast_id = _send(rt, body="Dolgo besedilo o prireditvi. " * 300)  # 8.7 KB
    work(rt)
    [notification] = standin.store.messages(channel="push")
    assert notification["meta"]["payload_bytes"] <= 3000
    assert notification["body"].endswith("…")
    assert notification["meta"]["url"].endswith(f"/notices/{broadcast_id}")
    [row] = _deliveries(rt, broadcast_id)
    assert row.status == "sent"


def test_policy_all_reaches_every_verified_channel(seeded, standin, smtp):
    rt = seeded
    _resident(rt, standin, ["email", "sms", "telegram", "push"])
    broadcast_id = _send(rt, policy="all")
    work(rt)
    assert {m["channel"] for m in standin.store.messages()} == {"email", "sms", "telegram", "push"}
    with rt.session() as session:
        assert progress(session, broadcast_id).by_status["sent"] == 4


@pytest.fixture
def workers(settings, tmp_path):
    processes = WorkerProcesses(settings, tmp_path)
    yield processes
    processes.stop_all()


def test_an_emergency_overtakes_a_bulk_send(seeded, standin, workers):
    """A bulk notice is sending (held to 50 pushes/s, so each of its jobs would hold the
    worker for 10 s); an emergency approved meanwhile reaches its resident within 3 s (the
    bulk job gives the worker up) and is done long before the bulk one."""
    rt = seeded
    for n in range(1500):
        _resident(rt, standin, ["push"], n=n)
    bulk = _send(rt, priority="bulk")
    workers.start(HUB_PUSH_RATE="50", HUB_SMS_RATE="1000")
    wait_until(lambda: standin.store.count("push") >= 60, 30, "the bulk send to start")
    _resident(rt, standin, ["sms"], n=9999, area="planina")
    approved = datetime.now(UTC)
    emergency = _send(
        rt, title="Poplava", body="Umaknite vozila.", priority="emergency", areas=("planina",)
    )
    wait_until(lambda: standin.store.count("sms") == 1, 30, "the emergency SMS")
    [sms] = standin.store.messages(channel="sms")
    latency = datetime.fromisoformat(sms["received_at"]) - approved
    assert latency.total_seconds() < 3, latency

    def status(broadcast_id: int) -> str:
        with rt.session() as session:
            return progress(session, broadcast_id).status

    wait_until(lambda: status(emergency) == "done", 10, "the emergency to be recorded done")
    assert status(bulk) == "sending"


def test_the_status_summary_says_what_fell_back(seeded, standin, settings, tmp_path):
    rt = seeded
    _resident(rt, standin, ["telegram", "push"])
    standin.telegram.control_block("5000")
    broadcast_id = _send(rt)
    work(rt)
    result = subprocess.run(
        [sys.executable, "-m", "hub.cli", "broadcast", "status", str(broadcast_id)],
        env=worker_env(settings, LANG="en_US.UTF-8"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "fell back to the next channel" in result.stdout
    assert "telegram -> push" in result.stdout and "blocked" in result.stdout


def test_stand_in_ports_are_free_and_below_the_ephemeral_range():
    """A port the kernel could give an outgoing connection (as its source port) can be taken
    between the check and the stand-in's bind: CI once failed with "address in use"."""
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range")
    if not ephemeral.is_file():
        pytest.skip("no Linux port range to compare with")
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert max(ports) < int(ephemeral.read_text().split()[0])
    with socket.socket() as listening:  # the next port in this process's walk, taken
        listening.bind(("127.0.0.1", ports[-1] + 1))
        listening.listen()
        assert free_port() != ports[-1] + 1
