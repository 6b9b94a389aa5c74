"""The ceiling for the HTTP channels: each provider's library alone, C lanes sharing one client
with a pool of C connections, no database, no queue, no rate limiter. Run in a spawned process
of its own, like the hub worker it is compared with (bench/channels.py); bench/bare.py is the
same for e-mail.

- SMS: twilio's `Client.messages.create_async` on its aiohttp client. Twilio has no base-URL
  setting, so the client is the hub's own `channels.sms._LocalTwilioHttp` (an
  `AsyncTwilioHttpClient` that sends *.twilio.com requests to the stand-in); that plumbing is
  not what is measured.
- Telegram: python-telegram-bot's `Bot.send_message(..., parse_mode="HTML")` through an
  `HTTPXRequest` pool of C connections.
- Web Push: pywebpush's `webpush_async` on one aiohttp session (C connections), the VAPID key
  parsed once (`Vapid02.from_string`), the same JSON payload, TTL, Urgency and Topic.

Every lane takes the next message when its last one is answered; the messages are the ones the
hub sent (built by the hub's adapters), so bodies and addresses are identical."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from channels.sms import OutgoingSms
from channels.telegram import OutgoingTelegram
from channels.webpush import OutgoingPush


@dataclass(frozen=True)
class Accounts:
    """What the bare senders need to reach the stand-ins as the hub does."""

    standin_url: str  # http://127.0.0.1:PORT
    twilio_sid: str = ""
    twilio_token: str = ""
    twilio_from: str = ""
    telegram_token: str = ""
    vapid_private_key: str = ""
    vapid_subject: str = ""


def send_all(channel: str, messages: list, accounts: Accounts, concurrency: int) -> dict:
    """Send every message on `concurrency` lanes; returns wall seconds and the failures."""
    for name in ("twilio", "httpx", "httpcore", "telegram"):
        logging.getLogger(name).setLevel(logging.WARNING)  # as hub.worker does
    lanes = {"sms": _sms, "telegram": _telegram, "push": _push}[channel]
    started = time.perf_counter()
    failures = asyncio.run(lanes(messages, accounts, concurrency))
    return {
        "seconds": time.perf_counter() - started,
        "failed": len(failures),
        "errors": failures[:5],
    }


async def _run_lanes(pending: Iterator, concurrency: int, send_one) -> list[str]:
    failures: list[str] = []

    async def lane() -> None:
        for message in pending:  # shared: each lane takes the next message when it is free
            error = await send_one(message)
            if error:
                failures.append(error)

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return failures


async def _sms(messages: list[OutgoingSms], accounts: Accounts, concurrency: int) -> list[str]:
    from twilio.base.exceptions import TwilioRestException
    from twilio.rest import Client

    from channels.sms import _LocalTwilioHttp

    http = _LocalTwilioHttp(accounts.standin_url, concurrency)
    client = Client(accounts.twilio_sid, accounts.twilio_token, http_client=http)

    async def send_one(sms: OutgoingSms) -> str | None:
        try:
            await client.messages.create_async(
                to=sms.to,
                from_=accounts.twilio_from,
                body=sms.body,
                status_callback=sms.status_callback,
            )
        except TwilioRestException as exc:
            return f"{sms.to}: {exc.status} {exc.code}"
        return None

    try:
        return await _run_lanes(iter(messages), concurrency, send_one)
    finally:
        await http.session.close()


async def _telegram(
    messages: list[OutgoingTelegram], accounts: Accounts, concurrency: int
) -> list[str]:
    from telegram import Bot
    from telegram.error import TelegramError
    from telegram.request import HTTPXRequest

    bot = Bot(
        accounts.telegram_token,
        base_url=f"{accounts.standin_url}/bot",
        request=HTTPXRequest(connection_pool_size=concurrency),
    )
    await bot.initialize()

    async def send_one(msg: OutgoingTelegram) -> str | None:
        try:
            await bot.send_message(msg.chat_id, msg.html, parse_mode="HTML")
        except TelegramError as exc:
            return f"{msg.chat_id}: {exc}"
        return None

    try:
        return await _run_lanes(iter(messages), concurrency, send_one)
    finally:
        await bot.shutdown()


async def _push(messages: list[OutgoingPush], accounts: Accounts, concurrency: int) -> list[str]:
    import aiohttp
    from py_vapid import Vapid02
    from pywebpush import WebPushException, webpush_async

    vapid = Vapid02.from_string(accounts.vapid_private_key)
    claims = {"sub": accounts.vapid_subject}
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))

    async def send_one(msg: OutgoingPush) -> str | None:
        # The notification as the service worker reads it, built per message as the hub does.
        data = {"title": msg.title, "body": msg.body, "url": msg.url}
        payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Urgency": msg.urgency}
        if msg.topic:
            headers["Topic"] = msg.topic
        try:
            response = await webpush_async(
                {"endpoint": msg.endpoint, "keys": {"p256dh": msg.p256dh, "auth": msg.auth}},
                data=payload,
                vapid_private_key=vapid,
                vapid_claims=dict(claims),  # pywebpush writes `aud` and `exp` into it
                ttl=msg.ttl_s,
                headers=headers,
                aiohttp_session=session,
            )
        except WebPushException as exc:
            return f"{msg.endpoint}: {exc.message[:200]}"
        await response.read()
        return None

    try:
        return await _run_lanes(iter(messages), concurrency, send_one)
    finally:
        await session.close()
