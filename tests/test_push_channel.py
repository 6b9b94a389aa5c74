"""Web Push end to end: the real pywebpush (through PushSender) against the push stand-in on a
free port, which checks the VAPID signature and decrypts each message as a browser would. The
tests look at what a resident or an operator would notice: what arrives, and what the hub is
told when it does not."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from email.utils import formatdate

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02
from pywebpush import WebPusher

from channels.base import FAILED, GONE, RETRY, SENT, Outcome, send_each
from channels.sandbox.http import StandinServer
from channels.sandbox.push import PushStandin, create_subscription
from channels.sandbox.smtp import free_port
from channels.sandbox.store import SandboxStore
from channels.webpush import (
    OutgoingPush,
    PushSender,
    build_payload,
    generate_vapid_keys,
    public_key_of,
    retry_after_s,
)

SUBJECT = "mailto:obvestila@ljubljana.example"
NOTICE_URL = "https://obvestila.ljubljana.example/n/123"


@pytest.fixture(scope="module")
def vapid() -> tuple[str, str]:
    return generate_vapid_keys()


@pytest.fixture
def store(tmp_path) -> SandboxStore:
    return SandboxStore(tmp_path / "sandbox.db")


def _start(store: SandboxStore) -> StandinServer:
    return StandinServer({"push": PushStandin(store)}, free_port()).start()


@pytest.fixture
def server(store) -> Iterator[StandinServer]:
    server = _start(store)
    yield server
    server.stop()


@pytest.fixture
def subscription(server, vapid) -> dict:
    """A browser subscribed with the city's applicationServerKey."""
    return server.push.subscribe(server.url, application_server_key=vapid[1])


def push(subscription: dict, key: int = 1, **fields) -> OutgoingPush:
    values = {
        "title": "Zapora Čopove ulice",
        "body": "Jutri od 8. do 14. ure bo Čopova ulica zaprta zaradi popravil vodovoda.",
        "url": NOTICE_URL,
        "ttl_s": 3600,
        "urgency": "high",
        "topic": "n123",
        **fields,
    }
    keys = subscription["keys"]
    return OutgoingPush(key, subscription["endpoint"], keys["p256dh"], keys["auth"], **values)


def send(private_key: str, *messages: OutgoingPush, **options) -> list[Outcome]:
    """Send with one sender, one after the other, and close it."""

    async def run() -> list[Outcome]:
        async with PushSender(private_key, SUBJECT, concurrency=4, **options) as sender:
            return [await sender.send_one(message) for message in messages]

    return asyncio.run(run())


def control(server: StandinServer, action: str, **arguments) -> dict:
    """What another process does: POST /control/push/<action>."""
    request = urllib.request.Request(
        f"{server.url}/control/push/{action}",
        data=json.dumps(arguments).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


# -- what arrives ----------------------------------------------------------------------------


def test_a_notification_arrives_decrypted_with_its_headers(server, store, subscription, vapid):
    [outcome] = send(vapid[0], push(subscription, key=7))

    assert outcome.status == SENT and outcome.key == 7 and outcome.error is None
    assert outcome.provider_id.startswith(f"{server.url}/m/")
    [received] = store.messages(channel="push")
    assert received["to"] == subscription["endpoint"]
    assert received["subject"] == "Zapora Čopove ulice"
    assert received["body"].startswith("Jutri od 8. do 14. ure bo Čopova ulica zaprta")
    meta = received["meta"]
    assert meta["url"] == NOTICE_URL
    assert (meta["ttl"], meta["urgency"], meta["topic"]) == (3600, "high", "n123")
    assert meta["payload_bytes"] == len(build_payload(*_texts(push(subscription))))
    assert outcome.provider_id.endswith(meta["message_id"])
    assert control(server, "stats") == {"accepted": 1, "rejected": {}}


def _texts(message: OutgoingPush) -> tuple[str, str, str]:
    return message.title, message.body, message.url


def test_without_a_topic_no_topic_is_sent(server, store, subscription, vapid):
    [outcome] = send(vapid[0], push(subscription, topic=None, urgency="low", ttl_s=0))

    assert outcome.status == SENT
    meta = store.messages(channel="push")[0]["meta"]
    assert (meta["ttl"], meta["urgency"], meta["topic"]) == (0, "low", None)


def test_one_sender_signs_for_each_push_service_separately(store, vapid):
    """pywebpush writes `aud` into the claims it is given: with one shared dict the second
    service would get a JWT for the first one's origin and refuse it."""
    first, second = _start(store), _start(store)
    try:
        a = first.push.subscribe(first.url, vapid[1])
        b = second.push.subscribe(second.url, vapid[1])
        outcomes = send(vapid[0], push(a, 1), push(b, 2), push(a, 3), push(b, 4))
    finally:
        first.stop()
        second.stop()

    assert [o.status for o in outcomes] == [SENT] * 4, outcomes
    assert first.push.control_stats()["accepted"] == 2
    assert second.push.control_stats()["accepted"] == 2


def test_many_pushes_through_send_each_all_arrive(server, store, vapid):
    subscriptions = [server.push.subscribe(server.url, vapid[1]) for _ in range(20)]
    messages = [push(subscriptions[i % 20], key=i, topic=f"n{i}") for i in range(200)]
    committed: dict[int, str] = {}
    reported: list[Outcome] = []

    async def run() -> None:
        async def source():
            for message in messages:
                yield message

        def commit(accepted: dict[int, str]) -> set[int]:
            committed.update(accepted)
            return set(accepted)

        async with PushSender(vapid[0], SUBJECT, concurrency=10) as sender:
            await send_each(source(), sender.send_one, 10, commit, reported.append)

    asyncio.run(run())

    assert reported == []
    assert sorted(committed) == list(range(200))
    assert len(set(committed.values())) == 200  # one Location each
    assert store.count("push") == 200


# -- long notices ----------------------------------------------------------------------------


def test_a_long_notice_is_cut_to_fit_and_keeps_its_link(server, store, subscription, vapid):
    body = "Zaradi del na vodovodu bo ulica zaprta; obvoz je označen. " * 110  # about 6.5 KB
    assert len(body.encode()) > 6000

    [outcome] = send(vapid[0], push(subscription, body=body))

    assert outcome.status == SENT
    received = store.messages(channel="push")[0]
    assert received["meta"]["payload_bytes"] <= 3000
    assert received["meta"]["url"] == NOTICE_URL
    assert received["subject"] == "Zapora Čopove ulice"
    assert received["body"].endswith("…")
    assert body.startswith(received["body"][:-1])


def test_build_payload_cuts_between_characters_to_the_byte_budget():
    body = "čšž" * 2000
    payload = build_payload("Naslov", body, NOTICE_URL, max_bytes=1000)

    data = json.loads(payload.decode("utf-8"))  # valid UTF-8: no character split
    assert len(payload) <= 1000
    assert len(payload) > 990  # as much of the body as fits
    assert data["title"] == "Naslov" and data["url"] == NOTICE_URL
    assert data["body"].endswith("…") and body.startswith(data["body"][:-1])


def test_build_payload_leaves_a_short_notice_alone():
    payload = build_payload("Naslov", 'Telo "s" narekovaji\nin vrstico', NOTICE_URL)

    assert json.loads(payload) == {
        "title": "Naslov",
        "body": 'Telo "s" narekovaji\nin vrstico',
        "url": NOTICE_URL,
    }


def test_build_payload_refuses_when_the_title_alone_is_too_long():
    with pytest.raises(ValueError):
        build_payload("x" * 200, "body", NOTICE_URL, max_bytes=100)


def test_payload_too_large_is_shrunk_and_sent_again(server, store, subscription, vapid):
    server.push.control_limit(max_body_bytes=1200)  # a stricter service than RFC 8291 asks
    body = "Obvestilo o zapori ceste. " * 200

    [outcome] = send(vapid[0], push(subscription, body=body))

    assert outcome.status == SENT
    assert server.push.control_stats()["rejected"] == {"413": 2}  # 3000, then 1500 bytes
    received = store.messages(channel="push")[0]
    assert received["meta"]["payload_bytes"] <= 750
    assert received["body"].endswith("…") and received["meta"]["url"] == NOTICE_URL


def test_payload_too_large_three_times_fails(server, subscription, vapid):
    server.push.control_fail(count=3, status=413)

    [outcome] = send(vapid[0], push(subscription, body="x" * 5000))

    assert outcome.status == FAILED and "413" in outcome.error


# -- dead subscriptions ----------------------------------------------------------------------


def test_an_expired_subscription_is_gone(server, subscription, vapid):
    subscription_id = subscription["endpoint"].rsplit("/", 1)[1]
    assert control(server, "expire", subscription_id=subscription_id) == {"expired": True}

    [outcome] = send(vapid[0], push(subscription))

    assert outcome.status == GONE and "410" in outcome.error
    assert not outcome.provider_down


def test_an_unknown_subscription_is_gone(server, subscription, vapid):
    unknown = {**subscription, "endpoint": f"{server.url}/push/nobody"}

    [outcome] = send(vapid[0], push(unknown))

    assert outcome.status == GONE and "404" in outcome.error


# -- a busy or broken push service -----------------------------------------------------------


def test_throttled_is_retried_after_the_time_the_service_asks(server, subscription, vapid):
    control(server, "throttle", count=1, retry_after=42)

    first, second = send(vapid[0], push(subscription, 1), push(subscription, 2))

    assert first.status == RETRY and first.retry_after_s == 42 and first.provider_down
    assert "429" in first.error
    assert second.status == SENT


def test_retry_after_as_an_http_date(server, subscription, vapid):
    server.push.control_throttle(count=1, retry_after=formatdate(time.time() + 120, usegmt=True))

    [outcome] = send(vapid[0], push(subscription))

    assert outcome.status == RETRY and outcome.provider_down
    assert 100 <= outcome.retry_after_s <= 121


def test_retry_after_parsing():
    assert retry_after_s("30") == 30.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 60) == 60.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 + 60) == 0.0


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_server_error_is_retried_and_not_held_against_the_resident(
    server, subscription, vapid, status
):
    control(server, "fail", count=1, status=status)

    first, second = send(vapid[0], push(subscription, 1), push(subscription, 2))

    assert first.status == RETRY and first.provider_down and str(status) in first.error
    assert second.status == SENT
    assert control(server, "stats") == {"accepted": 1, "rejected": {str(status): 1}}


def test_a_push_service_that_is_down_is_retried(subscription, vapid):
    dead = {**subscription, "endpoint": f"http://127.0.0.1:{free_port()}/push/x"}

    [outcome] = send(vapid[0], push(dead))

    assert outcome.status == RETRY and outcome.provider_down
    assert "unreachable" in outcome.error


def test_a_push_service_that_does_not_answer_times_out_and_is_retried(subscription, vapid):
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        stuck = {**subscription, "endpoint": f"http://127.0.0.1:{port}/push/x"}
        started = time.monotonic()
        [outcome] = send(vapid[0], push(stuck), timeout_s=0.3)

    assert outcome.status == RETRY and outcome.provider_down
    assert time.monotonic() - started < 5


# -- VAPID -----------------------------------------------------------------------------------


def test_a_different_vapid_key_than_the_subscriptions_fails_saying_vapid(subscription):
    other_private, _ = generate_vapid_keys()

    [outcome] = send(other_private, push(subscription))

    assert outcome.status == FAILED and "403" in outcome.error and "VAPID" in outcome.error
    assert other_private not in outcome.error


def test_an_unauthorised_answer_fails_saying_vapid(server, subscription, vapid):
    server.push.control_fail(count=1, status=401)

    [outcome] = send(vapid[0], push(subscription))

    assert outcome.status == FAILED and "401" in outcome.error and "VAPID" in outcome.error


def test_a_pem_vapid_key_works_too(server, store):
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    subscription = server.push.subscribe(server.url, public_key_of(pem))

    [outcome] = send(pem, push(subscription))

    assert outcome.status == SENT


def test_generated_keys_are_what_a_browser_and_pywebpush_take(vapid):
    private, public = vapid
    point = base64.urlsafe_b64decode(public + "=" * (-len(public) % 4))
    assert len(point) == 65 and point[0] == 4  # uncompressed P-256 point
    assert len(base64.urlsafe_b64decode(private + "=" * (-len(private) % 4))) == 32
    assert "=" not in private + public
    assert public_key_of(private) == public
    assert (
        Vapid02.from_string(private).public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        == point
    )


def test_a_bad_private_key_or_subject_is_refused_without_showing_the_key():
    not_a_key = "c2VjcmV0LWJ1dC1ub3QtYS1rZXk"
    with pytest.raises(ValueError) as error:
        PushSender(not_a_key, SUBJECT, concurrency=1)
    assert not_a_key not in str(error.value)
    with pytest.raises(ValueError, match="subject"):
        PushSender(generate_vapid_keys()[0], "ops@city.example", concurrency=1)


def test_the_private_key_never_appears_in_an_error(server, subscription, vapid):
    control(server, "throttle", count=1, retry_after=1)  # a throttle answers first
    control(server, "fail", count=1, status=400)
    broken_keys = {**subscription, "keys": {"p256dh": "AAAA", "auth": "AAAA"}}
    gone = {**subscription, "endpoint": f"{server.url}/push/nobody"}
    dead = {**subscription, "endpoint": f"http://127.0.0.1:{free_port()}/push/x"}
    messages = [push(subscription), push(subscription), push(broken_keys), push(gone)]
    messages += [push(dead), push(subscription, topic="not a topic!")]

    outcomes = send(vapid[0], *messages)
    outcomes += send(generate_vapid_keys()[0], push(subscription))  # 403

    assert [o.status for o in outcomes] == [RETRY, FAILED, FAILED, GONE, RETRY, FAILED, FAILED]
    for outcome in outcomes:
        assert outcome.error
        assert vapid[0] not in outcome.error


def test_a_message_the_service_would_refuse_is_not_sent(server, subscription, vapid):
    outcomes = send(
        vapid[0],
        push(subscription, 1, topic="x" * 33),
        push(subscription, 2, urgency="urgent"),
        push(subscription, 3, ttl_s=-1),
    )

    assert [o.status for o in outcomes] == [FAILED] * 3
    assert control(server, "stats") == {"accepted": 0, "rejected": {}}


# -- the stand-in's own checks (what the hub's sandbox relies on) ----------------------------


async def _post(url: str, subscription: dict, vapid: tuple[str, str], **change) -> int:
    """A hand-made push request, one detail at a time made wrong."""
    origin = url.split("/push/")[0]
    claims = {"sub": SUBJECT, "aud": origin, "exp": int(time.time()) + 3600}
    claims.update(change.get("claims", {}))
    signer = Vapid02.from_string(change.get("signing_key", vapid[0]))
    authorization = signer.sign(claims)["Authorization"]
    if "tamper" in change:
        authorization = _tampered(authorization)
    encoded = WebPusher(subscription).encode(b'{"title":"t","body":"b","url":"u"}')
    headers = {"Authorization": authorization, "TTL": "60", "Content-Encoding": "aes128gcm"}
    for name in change.get("drop", ()):
        headers.pop(name)
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=encoded["body"], headers=headers) as response,
    ):
        return response.status


def _tampered(authorization: str) -> str:
    """Same signature, other claims: a JWT that does not verify with its k."""
    token = authorization.split("t=", 1)[1].split(",", 1)[0]
    header, claims, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    data["sub"] = "mailto:mallory@evil.example"
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return authorization.replace(token, f"{header}.{forged}.{signature}")


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({}, 201),
        ({"tamper": True}, 401),
        ({"drop": ["Authorization"]}, 401),
        ({"drop": ["TTL"]}, 400),
        ({"claims": {"aud": "https://push.other.example"}}, 401),
        ({"claims": {"exp": int(time.time()) + 30 * 3600}}, 401),
        ({"claims": {"exp": int(time.time()) - 3600}}, 401),
    ],
)
def test_the_standin_checks_like_a_push_service(server, subscription, vapid, change, status):
    assert asyncio.run(_post(subscription["endpoint"], subscription, vapid, **change)) == status


def test_the_standin_refuses_a_key_other_than_the_subscriptions(server, subscription, vapid):
    other = generate_vapid_keys()
    status = asyncio.run(_post(subscription["endpoint"], subscription, vapid, signing_key=other[0]))

    assert status == 403


def test_a_subscription_made_by_another_process_works(server, store, tmp_path, vapid):
    elsewhere = SandboxStore(tmp_path / "sandbox.db")  # another process's view of the file
    subscription = create_subscription(elsewhere, server.url, vapid[1])
    assert subscription["endpoint"].startswith(f"{server.url}/push/")
    assert set(subscription["keys"]) == {"p256dh", "auth"}

    [outcome] = send(vapid[0], push(subscription))

    assert outcome.status == SENT
    assert elsewhere.messages(channel="push")[0]["to"] == subscription["endpoint"]


def test_a_subscription_made_over_http_works(server, store, vapid):
    subscription = control(
        server, "subscribe", standin_url=server.url, application_server_key=vapid[1]
    )

    [outcome] = send(vapid[0], push(subscription))

    assert outcome.status == SENT
