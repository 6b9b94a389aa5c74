"""`hub telegram set-webhook` and `webhook-info`: register the bot's webhook with its secret,
and check with getWebhookInfo that Telegram really has it (a wrong URL, or a proxy that
refuses Telegram, shows up as pending updates and a last error)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from hub import providers
from hub.adapters import telegram_sender
from hub.delivery import run_in_loop
from hub.runtime import Runtime

ALLOWED_UPDATES = ["message", "edited_message", "my_chat_member"]


@dataclass(frozen=True)
class WebhookInfo:
    url: str
    expected_url: str
    pending_update_count: int
    last_error_message: str | None
    last_error_date: datetime | None = None

    @property
    def registered(self) -> bool:
        return self.url == self.expected_url


def expected_url(rt: Runtime) -> str:
    return f"{rt.settings.base_url}/webhooks/telegram"


def set_webhook(rt: Runtime) -> WebhookInfo:
    async def register():
        bot = await telegram_sender(rt).bot()
        await bot.set_webhook(
            expected_url(rt),
            secret_token=providers.telegram_webhook_secret(rt),
            allowed_updates=ALLOWED_UPDATES,
        )
        return await _info(rt, bot)

    return run_in_loop(register())


def webhook_info(rt: Runtime) -> WebhookInfo:
    async def ask():
        return await _info(rt, await telegram_sender(rt).bot())

    return run_in_loop(ask())


async def _info(rt: Runtime, bot) -> WebhookInfo:
    info = await bot.get_webhook_info()
    return WebhookInfo(
        url=info.url or "",
        expected_url=expected_url(rt),
        pending_update_count=info.pending_update_count or 0,
        last_error_message=info.last_error_message,
        last_error_date=info.last_error_date,
    )
