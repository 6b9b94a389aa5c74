"""The Telegram channel as a resident and an operator would notice it: the real
python-telegram-bot, through TelegramSender, over real sockets to the Bot API stand-in."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from datetime import timedelta

import pytest
from aiohttp import web
from telegram import Update
from telegram.error import BadRequest, RetryAfter
from telegram.warnings import PTBDeprecationWarning

from channels.base import FAILED, GONE, RETRY, SENT, Outcome
from channels.sandbox.http import StandinServer
from channels.sandbox.smtp import free_port
from channels.sandbox.store import SandboxStore
from channels.sandbox.telegram import TelegramStandin, html_plain_text
from channels.telegram import REDACTED, OutgoingTelegram, TelegramSender, outcome_for

TOKEN = "7000000001:AAF-sandbox_token_for_tests_only_x1"
WRONG_TOKEN = "7000000001:AAF-not_the_token_the_stand_in_knows"
SECRET = "s3cret-Webhook_token"


@pytest.fixture
def server(tmp_path) -> Iterator[StandinServer]:
    store = SandboxStore(tmp_path / "sandbox.db")
    server = StandinServer({"telegram": TelegramStandin(store, TOKEN)}, free_port()).start()
    yield server
    server.stop()


def received(server: StandinServer, chat_id: str) -> list[dict]:
    return server.telegram.store.messages(channel="telegram", to=chat_id)


def send(server: StandinServer, *messages: OutgoingTelegram, **options) -> list[Outcome]:
    """Send one after another through a fresh sender, as a resident's notices would go."""

    async def run() -> list[Outcome]:
        token = options.pop("token", TOKEN)
        async with TelegramSender(token, 1, server.url, **options) as sender:
            return [await sender.send_one(message) for message in messages]

    return asyncio.run(run())


def control(server: StandinServer, action: str, **arguments) -> dict:
    """A scenario set from another process: POST /control/telegram/<action>."""
    request = urllib.request.Request(
        f"{server.url}/control/telegram/{action}",
        data=json.dumps(arguments).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


# -- what a resident notices -------------------------------------------------------------------


def test_a_message_arrives_with_its_html(server):
    html = '<b>Voda</b> &amp; elektrika: <a href="https://ljubljana.si/?a=1&amp;b=2">več</a>'
    [outcome] = send(server, OutgoingTelegram(1, "1001", html))

    assert outcome.status == SENT and outcome.error is None
    [message] = received(server, "1001")
    assert message["body"] == html
    assert message["meta"]["parse_mode"] == "HTML"
    assert outcome.provider_id == f"1001:{message['meta']['message_id']}"


def test_a_chat_that_blocked_the_bot_is_gone(server):
    server.telegram.control_block("1002")

    [outcome] = send(server, OutgoingTelegram(1, "1002", "Obvestilo"))

    assert outcome.status == GONE
    assert "blocked by the user" in outcome.error
    assert received(server, "1002") == []
    assert server.telegram.control_stats()["blocked"] == 1


def test_a_chat_telegram_does_not_know_is_gone(server):
    [outcome] = send(server, OutgoingTelegram(1, "@nobody_here", "Obvestilo"))

    assert outcome.status == GONE
    assert "chat not found" in outcome.error.lower()


def test_a_migrated_group_gets_the_message_at_its_new_id(server):
    server.telegram.control_migrate("-1003", "-1001000000003")

    [outcome] = send(server, OutgoingTelegram(1, "-1003", "Sestanek krajevne skupnosti"))

    assert outcome.status == SENT
    assert outcome.new_address == "-1001000000003"
    assert outcome.provider_id.startswith("-1001000000003:")
    assert [m["body"] for m in received(server, "-1001000000003")] == [
        "Sestanek krajevne skupnosti"
    ]
    assert received(server, "-1003") == []


def test_a_second_message_to_a_chat_within_a_second_waits(server):
    first, second = send(
        server, OutgoingTelegram(1, "1004", "Prvo"), OutgoingTelegram(2, "1004", "Drugo")
    )

    assert first.status == SENT
    assert second.status == RETRY
    assert second.retry_after_s >= 1
    assert second.provider_down  # a throttle is not the resident's fault
    assert [m["body"] for m in received(server, "1004")] == ["Prvo"]


def test_more_than_30_messages_a_second_per_bot_are_throttled(server):
    committed: dict[int, str] = {}
    reported: list[Outcome] = []

    async def run() -> None:
        async def messages():
            for key in range(40):
                yield OutgoingTelegram(key, str(2000 + key), f"Obvestilo {key}")

        def commit(accepted: dict[int, str]) -> set[int]:
            committed.update(accepted)
            return set(accepted)

        async with TelegramSender(TOKEN, 10, server.url) as sender:
            await sender.bot()  # getMe before the clock starts
            await sender.send(messages(), commit, reported.append)

    started = time.monotonic()
    asyncio.run(run())
    elapsed = time.monotonic() - started

    stats = server.telegram.control_stats()
    assert reported and all(o.status == RETRY for o in reported)
    assert all(o.provider_down and o.retry_after_s >= 1 for o in reported)
    assert len(reported) == stats["throttled"]
    assert set(committed) | {o.key for o in reported} == set(range(40))
    assert len(committed) == stats["sent"]
    if elapsed < 1:  # all 40 in one sliding second: exactly the cap went through
        assert stats["sent"] == 30


@pytest.mark.parametrize(
    "html, detail",
    [
        ("<b>Pozor</i>", "unmatched end tag"),
        ("<b>Pozor", "can't find end tag"),
        ("<div>Pozor</div>", 'unsupported start tag "div"'),
        ("Vrstica<br>vrstica", 'unsupported start tag "br"'),
        ("1 < 2", "unsupported start tag"),
        ("<span>skrito</span>", "tg-spoiler"),
    ],
)
def test_malformed_html_fails_with_telegrams_parse_error(server, html, detail):
    [outcome] = send(server, OutgoingTelegram(1, "1005", html))

    assert outcome.status == FAILED
    assert "can't parse entities" in outcome.error.lower()
    assert detail in outcome.error.lower()
    assert received(server, "1005") == []


def test_a_wrong_token_fails_with_a_clear_text_that_does_not_contain_it(server):
    [outcome] = send(server, OutgoingTelegram(1, "1006", "Obvestilo"), token=WRONG_TOKEN)

    assert outcome.status == FAILED
    assert "bot token" in outcome.error
    assert WRONG_TOKEN not in outcome.error and TOKEN not in outcome.error
    assert server.telegram.control_stats()["unauthorized"] >= 1


def test_a_stand_in_that_is_down_means_retry_later(server):
    async def run() -> tuple[Outcome, Outcome]:
        async with TelegramSender(TOKEN, 2, server.url) as sender:
            before = await sender.send_one(OutgoingTelegram(1, "1007", "Prej"))
            server.stop()
            after = await sender.send_one(OutgoingTelegram(2, "1008", "Potem"))
            return before, after

    before, after = asyncio.run(run())

    assert before.status == SENT
    assert after.status == RETRY and after.provider_down
    assert TOKEN not in after.error


def test_a_fresh_sender_against_a_down_stand_in_retries(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there

    async def run() -> Outcome:
        async with TelegramSender(TOKEN, 1, url) as sender:
            return await sender.send_one(OutgoingTelegram(1, "1009", "Obvestilo"))

    outcome = asyncio.run(run())

    assert outcome.status == RETRY and outcome.provider_down
    assert TOKEN not in outcome.error


def test_an_answer_slower_than_the_timeout_means_retry_later(server):
    server.telegram.control_slow(0.5)

    [outcome] = send(server, OutgoingTelegram(1, "1010", "Obvestilo"), timeout_s=0.1)

    assert outcome.status == RETRY and outcome.provider_down
    assert "timed out" in outcome.error.lower()


def test_concurrent_sends_really_overlap(server):
    """200 messages on 10 lanes against a measured one-lane baseline. The stand-in answers after
    20 ms, a network round trip: on loopback with both ends in this process there would be
    nothing to overlap, only the same CPU work shared by two threads."""
    server.telegram.control_set_rate(per_bot=100_000)
    server.telegram.control_slow(0.02)

    async def run() -> tuple[float, float, list[Outcome]]:
        reported: list[Outcome] = []
        async with TelegramSender(TOKEN, 1, server.url) as one_lane:
            await one_lane.bot()
            started = time.perf_counter()
            for key in range(20):
                await one_lane.send_one(OutgoingTelegram(key, str(3000 + key), "Zaporedno"))
            per_message = (time.perf_counter() - started) / 20

        async def messages():
            for key in range(200):
                yield OutgoingTelegram(key, str(4000 + key), "Vzporedno")

        async with TelegramSender(TOKEN, 10, server.url) as ten_lanes:
            await ten_lanes.bot()
            started = time.perf_counter()
            await ten_lanes.send(messages(), set, reported.append)
            return per_message * 200, time.perf_counter() - started, reported

    sequential, concurrent, reported = asyncio.run(run())

    assert reported == []
    assert server.telegram.store.count("telegram") == 220
    assert concurrent * 3 <= sequential, f"{concurrent:.2f}s on 10 lanes, {sequential:.2f}s on 1"


def test_the_bot_token_never_reaches_the_logs(server, caplog):
    caplog.set_level(logging.DEBUG)

    send(server, OutgoingTelegram(1, "1011", "Obvestilo"))
    send(server, OutgoingTelegram(2, "1012", "Obvestilo"), token=WRONG_TOKEN)

    assert "HTTP Request" in caplog.text  # httpx logged its URLs, scrubbed
    assert REDACTED in caplog.text
    assert TOKEN not in caplog.text and WRONG_TOKEN not in caplog.text


# -- the webhook -------------------------------------------------------------------------------


def test_set_get_and_delete_the_webhook_through_ptb(server):
    async def run():
        async with TelegramSender(TOKEN, 1, server.url) as sender:
            bot = await sender.bot()
            assert bot.username == "MestniGlasBot"
            assert await bot.set_webhook(
                "https://hub.example/webhooks/telegram",
                secret_token=SECRET,
                allowed_updates=["message", "my_chat_member"],
                drop_pending_updates=True,
            )
            info = await bot.get_webhook_info()
            with pytest.raises(BadRequest, match=r"(?i)secret token"):
                await bot.set_webhook("https://hub.example/x", secret_token="not allowed!")
            assert await bot.delete_webhook()
            return info, await bot.get_webhook_info()

    info, after = asyncio.run(run())

    assert info.url == "https://hub.example/webhooks/telegram"
    assert info.allowed_updates == ("message", "my_chat_member")
    assert info.pending_update_count == 0 and info.last_error_date is None
    assert not info.has_custom_certificate
    assert after.url == ""


class Receiver:
    """A tiny webhook endpoint in the test's loop: records what Telegram posts."""

    def __init__(self) -> None:
        self.updates: list[tuple[str | None, dict]] = []
        self.arrived = asyncio.Event()
        self.status = 200
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/webhooks/telegram"

    async def handle(self, request: web.Request) -> web.Response:
        secret = request.headers.get("X-Telegram-Bot-Api-Secret-Token")
        self.updates.append((secret, await request.json()))
        self.arrived.set()
        return web.Response(status=self.status)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.add_routes([web.post("/webhooks/telegram", self.handle)])
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.runner.cleanup()


def test_updates_reach_the_webhook_with_the_secret_header(server):
    telegram = server.telegram

    async def run():
        async with Receiver() as receiver, TelegramSender(TOKEN, 1, server.url) as sender:
            bot = await sender.bot()
            await bot.set_webhook(receiver.url, secret_token=SECRET)

            direct = await telegram.post_update(telegram.message_update("/start abc123", 1013))
            receiver.arrived.clear()
            queued = control(server, "send_update", text="Hvala!", chat_id=1014)
            await asyncio.wait_for(receiver.arrived.wait(), 5)

            receiver.status = 500
            failed = await telegram.post_update(telegram.message_update("Halo?", 1015))
            info = await bot.get_webhook_info()
            return direct, queued, failed, receiver.updates, info, bot

    direct, queued, failed, updates, info, bot = asyncio.run(run())

    assert direct == {"delivered": True}
    assert queued["queued"] and failed["delivered"] is False
    assert [secret for secret, _ in updates] == [SECRET] * 3
    start = Update.de_json(updates[0][1], bot)
    assert start.message.text == "/start abc123" and start.message.chat.id == 1013
    assert start.message.entities[0].type == "bot_command"
    assert updates[1][1]["update_id"] == queued["update_id"]
    assert info.last_error_message == "Wrong response from the webhook: 500 Internal Server Error"
    assert info.pending_update_count == 1 and info.last_error_date is not None


# -- the stand-in itself -----------------------------------------------------------------------


def test_scenarios_can_be_set_from_another_process(server):
    control(server, "block", chat_id=1016)
    control(server, "set_rate", per_chat=0)

    blocked, first, second = send(
        server,
        OutgoingTelegram(1, "1016", "Obvestilo"),
        OutgoingTelegram(2, "1017", "Eno"),
        OutgoingTelegram(3, "1017", "Drugo"),
    )

    assert (blocked.status, first.status, second.status) == (GONE, SENT, SENT)
    assert control(server, "stats")["blocked"] == 1


def test_the_stand_in_answers_in_telegrams_shape(server):
    def call(token: str, method: str, body: dict) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"{server.url}/bot{token}/{method}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    assert call(WRONG_TOKEN, "getMe", {}) == (
        401,
        {"ok": False, "error_code": 401, "description": "Unauthorized"},
    )
    status, sent = call(TOKEN, "sendMessage", {"chat_id": 1018, "text": "<i>Json</i>"})
    assert status == 200 and sent["result"]["chat"] == {
        "id": 1018,
        "type": "private",
        "first_name": "Ana",
    }
    assert call(TOKEN, "sendMessage", {"chat_id": 1018, "text": "Spet"}) == (
        429,
        {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 1",
            "parameters": {"retry_after": 1},
        },
    )
    assert call(TOKEN, "sendMessage", {"chat_id": 1019})[0] == 400


@pytest.mark.parametrize(
    "html, shown",
    [
        ("a &lt; b &amp;&amp; c &gt; d &quot;x&quot;", 'a < b && c > d "x"'),
        ("AT&T &nbsp; &#269;&#x17E;", "AT&T &nbsp; čž"),
        ("<tg-spoiler>a</tg-spoiler><span class='tg-spoiler'>b</span>", "ab"),
        ('<pre><code class="language-python">x = 1</code></pre>', "x = 1"),
        ("<B>a</B><blockquote expandable>b</blockquote><s><u>c</u></s>", "abc"),
    ],
)
def test_html_telegram_accepts(html, shown):
    assert html_plain_text(html) == shown


@pytest.mark.parametrize("ptb_timedelta", ["true", "false"])
def test_retry_after_in_either_form_ptb_22_gives_it(monkeypatch, ptb_timedelta):
    monkeypatch.setenv("PTB_TIMEDELTA", ptb_timedelta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)  # the int form is deprecated
        outcome = outcome_for(7, RetryAfter(timedelta(seconds=3)), TOKEN)

    assert (outcome.status, outcome.retry_after_s, outcome.provider_down) == (RETRY, 3.0, True)
