"""Telegram through python-telegram-bot (PTB 22): one Bot per sender, `concurrency` requests at
once, and every answer Telegram can give mapped to an Outcome.

Why it looks like this:
- A sendMessage is one HTTP request that Telegram answers in tens of milliseconds; the pace is
  set by how many are in flight, so the Bot gets an HTTP pool of `concurrency` connections and
  the caller runs that many lanes (channels.base.send_each). Telegram's flood limits (about 30
  messages a second per bot, 1 a second per chat) are the hub's rate limiter's job; a 429 that
  still comes back is RETRY after the wait Telegram asked for, counted as the provider's
  (provider_down), never against the resident.
- A blocked bot or a deleted account (403) and an unknown chat are GONE: the hub deactivates
  the chat and falls back to the resident's next channel. A group that became a supergroup
  (ChatMigrated) is sent to its new id at once, and the Outcome carries that id so the hub
  stores it.
- The Bot is created and initialised (getMe, which also checks the token) inside the running
  event loop on first use: its HTTP client belongs to that loop.
- The bot token is a password that travels in every URL (…/bot<token>/sendMessage). PTB's
  errors ("The token `…` was rejected"), httpx's request log lines and PTB's debug log can carry
  it, so error texts and those loggers' records are scrubbed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta
from urllib.parse import quote

from telegram import Bot
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.request import HTTPXRequest

from channels.base import FAILED, GONE, RETRY, SENT, Commit, Outcome, Report, send_each

TELEGRAM_API = "https://api.telegram.org"
CONNECT_TIMEOUT_S = 5.0
TIMEOUT_S = 20.0  # to write a request and to read its answer
POOL_TIMEOUT_S = 30.0  # reached only when callers run more sends at once than `concurrency`
# Bad requests that mean the address is dead rather than the message wrong (lower case).
GONE_BAD_REQUESTS = ("chat not found", "user not found")
REDACTED = "<bot token>"
_TOKEN_SHAPE = re.compile(r"\b\d{3,}:[A-Za-z0-9_-]{20,}")
# httpx logs each request's URL (INFO); PTB's Bot logs its base URL (DEBUG).
_LOGGERS_WITH_URLS = ("httpx", "telegram.Bot")


@dataclass(frozen=True)
class OutgoingTelegram:
    key: int
    chat_id: str
    html: str  # escaped text with only Telegram's tags, sent with parse_mode HTML


# -- the bot -----------------------------------------------------------------------------------


def make_bot(
    token: str, concurrency: int = 1, base_url: str | None = None, timeout_s: float = TIMEOUT_S
) -> Bot:
    """A PTB Bot on Telegram (base_url None) or on a stand-in ("http://127.0.0.1:P") with an
    HTTP pool of `concurrency` connections. Not initialised: await bot.initialize() in the loop
    that will use it. PTB appends the token to base_url ("…/bot" + token)."""
    if not token:
        raise ValueError("a Telegram bot token is required")
    _prefer_timedelta_periods()
    _LOG_SCRUBBER.add(token)  # before Bot() logs its URL
    base = (base_url or TELEGRAM_API).rstrip("/")
    request = HTTPXRequest(
        connection_pool_size=max(1, concurrency),
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=timeout_s,
        write_timeout=timeout_s,
        pool_timeout=POOL_TIMEOUT_S,
    )
    return Bot(token, base_url=f"{base}/bot", base_file_url=f"{base}/file/bot", request=request)


def _prefer_timedelta_periods() -> None:
    """PTB 22 warns (PTBDeprecationWarning) whenever it builds a RetryAfter, unless PTB_TIMEDELTA
    opts in to v23's timedelta periods; under `-W error` that warning would replace the
    RetryAfter itself. Opt in unless the deployment chose otherwise (_seconds reads both)."""
    os.environ.setdefault("PTB_TIMEDELTA", "true")


class TelegramSender:
    """Sends messages through one Bot with `concurrency` connections; reusable across jobs that
    run in the same event loop, and rebuilt when called from another loop."""

    def __init__(
        self,
        token: str,
        concurrency: int,
        base_url: str | None = None,
        *,
        timeout_s: float = TIMEOUT_S,
    ):
        if not token:
            raise ValueError("a Telegram bot token is required")
        self._token = token
        self.concurrency = max(1, concurrency)
        self.base_url = base_url
        self.timeout_s = timeout_s
        self._bot: Bot | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting = asyncio.Lock()
        self._ready = False

    async def __aenter__(self) -> TelegramSender:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def bot(self) -> Bot:
        """The sender's Bot, initialised (getMe) in the running loop; raises TelegramError."""
        loop = asyncio.get_running_loop()
        if self._bot is None or self._loop is not loop:
            # A Bot made in another loop is dropped, not shut down: its loop may be closed.
            self._bot = make_bot(self._token, self.concurrency, self.base_url, self.timeout_s)
            self._loop, self._starting, self._ready = loop, asyncio.Lock(), False
        bot = self._bot
        if not self._ready:
            async with self._starting:
                if not self._ready:
                    await bot.initialize()
                    self._ready = True
        return bot

    async def close(self) -> None:
        bot, self._bot, self._ready = self._bot, None, False
        if bot is not None:
            await bot.shutdown()

    async def send(
        self, messages: AsyncIterator[OutgoingTelegram], commit: Commit, report: Report
    ) -> None:
        """Send all `messages` on `concurrency` lanes (see channels.base.send_each)."""
        await send_each(messages, self.send_one, self.concurrency, commit, report)

    async def send_one(self, msg: OutgoingTelegram) -> Outcome:
        try:
            return await self._deliver(msg, msg.chat_id)
        except ChatMigrated as moved:
            new_chat_id = str(moved.new_chat_id)
        try:
            outcome = await self._deliver(msg, new_chat_id)
        except ChatMigrated as moved_again:  # followed once only; the next attempt goes on
            outcome = self._outcome(msg.key, moved_again)
        return replace(outcome, new_address=outcome.new_address or new_chat_id)

    async def _deliver(self, msg: OutgoingTelegram, chat_id: str) -> Outcome:
        """One sendMessage; every TelegramError but ChatMigrated becomes an Outcome."""
        try:
            bot = await self.bot()
            sent = await bot.send_message(chat_id, msg.html, parse_mode=ParseMode.HTML)
        except ChatMigrated:
            raise
        except TelegramError as exc:
            return self._outcome(msg.key, exc)
        return Outcome(msg.key, SENT, provider_id=f"{chat_id}:{sent.message_id}")

    def _outcome(self, key: int, exc: TelegramError) -> Outcome:
        return outcome_for(key, exc, self._token)


# -- what an error means -----------------------------------------------------------------------


def outcome_for(key: int, exc: TelegramError, token: str = "") -> Outcome:
    """Map a PTB error to an Outcome; the error text never contains `token`."""
    text = redact(str(exc), token)[:1000]
    if isinstance(exc, RetryAfter):
        wait = _seconds(exc.retry_after)
        error = f"throttled by Telegram: retry after {wait:g} s"
        return Outcome(key, RETRY, error=error, retry_after_s=wait, provider_down=True)
    if isinstance(exc, ChatMigrated):
        return Outcome(key, RETRY, error=text, new_address=str(exc.new_chat_id))
    if isinstance(exc, Forbidden):  # the bot was blocked, kicked, or the account deleted
        return Outcome(key, GONE, error=text)
    if isinstance(exc, InvalidToken):  # 401 or 404: configuration, not this message
        error = f"Telegram refused the bot token ({text}): check the token and the API URL"
        return Outcome(key, FAILED, error=error)
    if isinstance(exc, BadRequest):
        dead = any(phrase in text.lower() for phrase in GONE_BAD_REQUESTS)
        return Outcome(key, GONE if dead else FAILED, error=f"refused by Telegram: {text}")
    if isinstance(exc, NetworkError):  # timeouts, refused connections, 5xx
        return Outcome(key, RETRY, error=f"Telegram unreachable: {text}", provider_down=True)
    return Outcome(key, FAILED, error=f"Telegram error: {text}")


def _seconds(value: float | timedelta) -> float:
    """RetryAfter.retry_after: a timedelta with PTB_TIMEDELTA, an int (deprecated) without."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


# -- keeping the token out of texts and logs ----------------------------------------------------


def redact(text: str, *tokens: str) -> str:
    """`text` without the given tokens (also URL-encoded) or anything shaped like a bot token."""
    for token in tokens:
        if token:
            text = text.replace(token, REDACTED).replace(quote(token, safe=""), REDACTED)
    return _TOKEN_SHAPE.sub(REDACTED, text)


class _TokenScrubber(logging.Filter):
    """Rewrites log records of the loggers that print request URLs, without the tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens: set[str] = set()

    def add(self, token: str) -> None:
        self.tokens.add(token)
        for name in _LOGGERS_WITH_URLS:
            logging.getLogger(name).addFilter(self)  # no-op if already there

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, *self.tokens)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_LOG_SCRUBBER = _TokenScrubber()
