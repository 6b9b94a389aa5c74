"""Per-topic channel overrides: a resident's own channel order for one topic decides which
address a notice on that topic reaches first and where it falls back to, over the real
stand-ins; emergencies still reach them; the portal form, the export and account deletion."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from hub.broadcasts import NoticeDraft, send_notice
from hub.models import Area, ContactPoint, Delivery, Resident, ResidentTopicChannel, Topic
from hub.preferences import save_topic_channels
from hub.residents import ResidentRow, import_rows
from tests.helpers import work
from tests.test_portal import (  # noqa: F401 (english: the pages are read in English here)
    _choose,
    _ids,
    _post,
    _sign_up,
    english,
)

ADDRESSES = {"email": "ana@example.org", "sms": "+38640111222", "telegram": "5000"}


def _resident(rt, channels, unverified=(), topics=("road-works", "events"), sms=None) -> int:
    """A resident in Center following `topics`, with addresses in `channels`' order."""
    addresses = {**ADDRESSES, **({"sms": sms} if sms else {})}
    (area_id,) = _ids(rt, Area, "center")
    topic_ids = _ids(rt, Topic, *topics)
    with rt.session() as session:
        import_rows(session, [ResidentRow("Ana", "sl", area_id, topic_ids)])
        resident_id = session.scalar(select(Resident.id).order_by(Resident.id.desc()))
        for rank, channel in enumerate(channels, 1):
            session.add(
                ContactPoint(
                    resident_id=resident_id,
                    channel=channel,
                    address=addresses[channel],
                    rank=rank,
                    verified=channel not in unverified,
                )
            )
    return resident_id


def _own_order(rt, resident_id: int, topic: str, channels: list[str]) -> None:
    """Stored as is, bypassing the portal's checks (an address may stop working later)."""
    (topic_id,) = _ids(rt, Topic, topic)
    with rt.session() as session:
        session.add_all(
            ResidentTopicChannel(resident_id=resident_id, topic_id=topic_id, channel=c, rank=r)
            for r, c in enumerate(channels, 1)
        )


def _send(rt, topic: str, priority="normal", policy="preferred") -> int:
    draft = NoticeDraft(
        "Obvestilo", topic, ("center",), priority, policy, {"sl": "Besedilo obvestila."}
    )
    broadcast_id = send_notice(rt, draft, actor="test")
    work(rt)
    return broadcast_id


def _sent(rt, broadcast_id: int) -> list[tuple[str, str, bool]]:
    """(channel, status, is a fall-back) of each delivery, in order."""
    with rt.session() as session:
        rows = session.execute(
            select(Delivery.channel, Delivery.status, Delivery.fallback_from_id)
            .where(Delivery.broadcast_id == broadcast_id)
            .order_by(Delivery.id)
        ).all()
    return [(channel, status, moved is not None) for channel, status, moved in rows]


def _stored(rt, resident_id: int) -> list[tuple[int, str, int]]:
    with rt.session() as session:
        return session.execute(
            select(
                ResidentTopicChannel.topic_id,
                ResidentTopicChannel.channel,
                ResidentTopicChannel.rank,
            )
            .where(ResidentTopicChannel.resident_id == resident_id)
            .order_by(ResidentTopicChannel.topic_id, ResidentTopicChannel.rank)
        ).all()


# -- planning and fall-back ---------------------------------------------------------------------


def test_the_topics_own_order_decides_and_other_topics_keep_the_usual_one(seeded, smtp, standin):
    rt = seeded
    resident_id = _resident(rt, ["email", "sms"])
    with rt.session() as session:
        (roads,) = _ids(rt, Topic, "road-works")
        save_topic_channels(session, resident_id, roads, ["sms"])
    assert _sent(rt, _send(rt, "road-works")) == [("sms", "sent", False)]
    assert _sent(rt, _send(rt, "events")) == [("email", "sent", False)]
    [text] = standin.store.messages(channel="sms", to=ADDRESSES["sms"])
    assert "Besedilo obvestila." in text["body"]
    assert [m["to"] for m in smtp.messages(channel="email")] == [ADDRESSES["email"]]


def test_the_fall_back_follows_the_topics_own_order(seeded, standin):
    rt = seeded
    resident_id = _resident(rt, ["email", "telegram", "sms"])
    standin.telegram.control_block(ADDRESSES["telegram"])
    _own_order(rt, resident_id, "events", ["telegram", "sms"])
    # Telegram is dead: the next in the topic's order is SMS, not the usual next (e-mail).
    assert _sent(rt, _send(rt, "events")) == [("telegram", "gone", False), ("sms", "sent", True)]
    assert standin.store.count("sms") == 1


def test_policy_all_sends_on_the_topics_channels_only(seeded, smtp, standin):
    rt = seeded
    resident_id = _resident(rt, ["email", "sms", "telegram"])
    _own_order(rt, resident_id, "road-works", ["telegram", "sms"])
    sent = _sent(rt, _send(rt, "road-works", policy="all"))
    assert sorted(sent) == [("sms", "sent", False), ("telegram", "sent", False)]
    assert smtp.count("email") == 0


def test_an_unverified_channel_in_the_own_order_is_skipped(seeded, smtp):
    rt = seeded
    resident_id = _resident(rt, ["sms", "email"], unverified={"sms"})
    _own_order(rt, resident_id, "road-works", ["sms", "email"])
    assert _sent(rt, _send(rt, "road-works")) == [("email", "sent", False)]


def test_an_emergency_reaches_them_when_their_own_order_cannot(seeded, smtp, standin):
    rt = seeded
    unreachable = _resident(rt, ["email", "sms"], unverified={"sms"})
    _own_order(rt, unreachable, "road-works", ["sms"])
    assert _sent(rt, _send(rt, "road-works")) == []  # their choice: nothing but SMS, none usable
    emergency = _send(rt, "road-works", priority="emergency")
    assert _sent(rt, emergency) == [("email", "sent", False)]  # the usual order instead
    assert [m["to"] for m in smtp.messages(channel="email")] == [ADDRESSES["email"]]


def test_an_emergency_falls_back_to_the_usual_order_when_the_own_order_is_dead(
    seeded, smtp, standin
):
    rt = seeded
    resident_id = _resident(rt, ["email", "sms"], sms="+15005550004")  # Twilio: opted out
    _own_order(rt, resident_id, "road-works", ["sms"])
    emergency = _send(rt, "road-works", priority="emergency")
    assert _sent(rt, emergency) == [("sms", "gone", False), ("email", "sent", True)]
    assert _sent(rt, _send(rt, "road-works")) == []  # a normal notice keeps to their choice


# -- the portal -------------------------------------------------------------------------------


def _with_phone(rt, resident_id: int, verified: bool = True) -> None:
    """A confirmed phone, as if added by code (tests/test_portal.py covers that flow)."""
    with rt.session() as session:
        session.add(
            ContactPoint(
                resident_id=resident_id,
                channel="sms",
                address=ADDRESSES["sms"],
                rank=2,
                verified=verified,
            )
        )


def _set(client, topic_id: int, csrf: bool = True, **fields):
    page = "/me/preferences/channels"
    path = f"{page}/{topic_id}"
    if csrf:
        return _post(client, path, fields, page)
    return client.post(path, data=fields)


def _portal_resident(rt, smtp, client) -> tuple[int, int, int]:
    resident_id = _sign_up(client, rt, smtp)
    _with_phone(rt, resident_id)
    (center,) = _ids(rt, Area, "center")
    roads, events = _ids(rt, Topic, "road-works", "events")
    assert _choose(client, area=center, topics=[roads, events], locale="en").status_code == 302
    return resident_id, roads, events


def test_choose_channels_for_a_topic_in_the_portal(seeded, smtp, standin, client):
    rt = seeded
    resident_id, roads, events = _portal_resident(rt, smtp, client)
    page = client.get("/me/preferences/channels").text
    assert "Emergency notices always reach you" in page
    assert page.count('value="usual" checked') == 2
    assert "In effect now: E-mail, then SMS (your usual order)." in page
    assert 'href="/me/preferences/channels"' in client.get("/me/preferences").text

    assert _set(client, roads, mode="own", **{"position-sms": "1"}).status_code == 302
    assert _stored(rt, resident_id) == [(roads, "sms", 1)]
    page = client.get("/me/preferences/channels").text
    assert "In effect now: SMS." in page
    assert f'id="position-{roads}-sms" name="position-sms">' in page
    assert '<option value="1" selected>Choice 1</option>' in page

    broadcast_id = _send(rt, "road-works")
    assert _sent(rt, broadcast_id) == [("sms", "sent", False)]
    assert standin.store.count("sms") == 1 and smtp.count("email") == 1  # the sign-in code only

    order = {"position-email": "2", "position-sms": "1"}
    assert _set(client, events, mode="own", **order).status_code == 302
    assert _stored(rt, resident_id) == [(roads, "sms", 1), (events, "sms", 1), (events, "email", 2)]
    # Back to the usual order; the form's positions are ignored then.
    assert _set(client, roads, mode="usual", **{"position-sms": "1"}).status_code == 302
    assert _stored(rt, resident_id) == [(events, "sms", 1), (events, "email", 2)]
    # A topic no longer followed takes its own order with it.
    (center,) = _ids(rt, Area, "center")
    _choose(client, area=center, topics=[roads], locale="en")
    assert _stored(rt, resident_id) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mode": "own", "position-fax": "1"}, "One of the channels chosen does not exist."),
        ({"mode": "own", "position-telegram": "1"}, "You have no confirmed address for Telegram"),
        ({"mode": "own", "position-sms": "1", "position-email": "1"}, "its own place"),
        ({"mode": "own"}, "Choose at least one channel for this topic"),
        ({"mode": "own", "position-sms": "first"}, "The form was not filled in as expected."),
        ({"mode": "sometimes"}, "The form was not filled in as expected."),
        ({"topic": "waste-collection", "mode": "usual"}, "You do not follow this topic."),
    ],
)
def test_bad_topic_channels_are_refused_and_nothing_changes(seeded, smtp, client, fields, message):
    rt = seeded
    resident_id, roads, _events = _portal_resident(rt, smtp, client)
    _set(client, roads, mode="own", **{"position-email": "1", "position-sms": "2"})
    before = _stored(rt, resident_id)
    topic = fields.pop("topic", None)
    (target,) = _ids(rt, Topic, topic) if topic else (roads,)
    response = _set(client, target, **fields)
    assert response.status_code == 422
    assert message in response.text
    assert _stored(rt, resident_id) == before == [(roads, "email", 1), (roads, "sms", 2)]


def test_a_refused_form_shows_what_was_sent(seeded, smtp, client):
    rt = seeded
    _resident_id, _roads, events = _portal_resident(rt, smtp, client)
    refused = _set(client, events, mode="own", **{"position-sms": "1", "position-email": "1"})
    assert refused.status_code == 422
    assert f'id="own-{events}" name="mode" value="own" checked' in refused.text
    assert refused.text.count('<option value="1" selected>Choice 1</option>') == 2


def test_an_unconfirmed_phone_cannot_be_chosen(seeded, smtp, client):
    rt = seeded
    resident_id = _sign_up(client, rt, smtp)
    _with_phone(rt, resident_id, verified=False)
    (center,) = _ids(rt, Area, "center")
    (roads,) = _ids(rt, Topic, "road-works")
    _choose(client, area=center, topics=[roads], locale="en")
    assert 'name="position-sms"' not in client.get("/me/preferences/channels").text
    refused = _set(client, roads, mode="own", **{"position-sms": "1"})
    assert refused.status_code == 422 and "no confirmed address for SMS" in refused.text
    assert _stored(rt, resident_id) == []


def test_without_csrf_or_signed_out_nothing_changes(seeded, smtp, client):
    rt = seeded
    resident_id, roads, _events = _portal_resident(rt, smtp, client)
    refused = _set(client, roads, csrf=False, mode="own", **{"position-sms": "1"})
    assert refused.status_code == 400
    assert _stored(rt, resident_id) == []
    _post(client, "/me/signout", {}, "/me/")
    assert client.get("/me/preferences/channels").status_code == 302
    signed_out = _post(client, f"/me/preferences/channels/{roads}", {"mode": "own"}, "/me/signin")
    assert signed_out.status_code == 302 and "/me/signin" in signed_out.headers["Location"]
    assert _stored(rt, resident_id) == []


def test_export_holds_the_topics_own_orders_and_deleting_removes_them(seeded, smtp, client):
    rt = seeded
    _resident_id, roads, _events = _portal_resident(rt, smtp, client)
    _set(client, roads, mode="own", **{"position-sms": "1", "position-email": "2"})
    data = json.loads(client.get("/me/data.json").data)
    assert data["topic_channels"] == [{"topic": "road-works", "channels": ["sms", "email"]}]
    assert _post(client, "/me/delete", {"confirm": "yes"}, "/me/data").status_code == 200
    with rt.session() as session:
        left = session.scalar(select(func.count()).select_from(ResidentTopicChannel))
    assert left == 0
