"""Between the outbox and the channels: turn claimed rows into a channel's messages.

One adapter per channel; CHANNEL_ADAPTERS says which channels the hub can send on. Senders
(their connections and HTTP pools) belong to the event loop of this process
(hub.delivery.run_in_loop), which outlives the jobs, so jobs reuse them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr
from functools import cache

from telegram.error import TelegramError

from channels.base import Commit, Outcome, Report, send_each
from channels.email import OutgoingEmail, SmtpSender, SmtpSettings, StagedCommit
from channels.gsm import sms_length
from channels.sms import OutgoingSms, TwilioSender
from channels.telegram import OutgoingTelegram, TelegramSender
from channels.webpush import OutgoingPush, PushSender
from hub import providers
from hub.models import Priority, Rendering
from hub.rendering import UNSUBSCRIBE_MARK
from hub.runtime import Runtime
from hub.tokens import make_token


@dataclass(frozen=True)
class ClaimedRow:
    id: int
    resident_id: int
    contact_point_id: int
    channel: str
    locale: str
    attempts: int
    created_at: datetime
    address: str
    details: dict | None  # the contact point's channel data (a push subscription's keys)


@dataclass(frozen=True)
class SendContext:
    rt: Runtime
    broadcast_id: int
    priority: str
    renderings: dict[tuple[str, str], Rendering]


# Senders kept for the next job, by channel and account.
_SENDERS: dict[tuple, object] = {}
_IDLE_SMTP: dict[SmtpSettings, list] = {}


def _kept(key: tuple, make: Callable[[], object]):
    if key not in _SENDERS:
        _SENDERS[key] = make()
    return _SENDERS[key]


# -- senders, one per process and account (also for single messages: replies to residents) --


def smtp_sender(rt: Runtime) -> SmtpSender:
    s = rt.settings
    if s.email_uses_sandbox:
        smtp = SmtpSettings("127.0.0.1", s.sandbox_smtp_port, starttls=False)
    else:
        smtp = SmtpSettings(
            s.smtp_host, s.smtp_port, s.smtp_username, s.smtp_password, s.smtp_starttls
        )
    concurrency = max(1, s.email_concurrency)
    return SmtpSender(smtp, s.mail_from, concurrency, _IDLE_SMTP.setdefault(smtp, []))


def sms_sender(rt: Runtime) -> TwilioSender:
    account = providers.twilio_account(rt)
    concurrency = max(1, rt.settings.sms_concurrency)
    return _kept(("sms", account), lambda: TwilioSender(account, concurrency))


def telegram_sender(rt: Runtime) -> TelegramSender:
    token, api_url = providers.telegram_token(rt), providers.telegram_api_url(rt)
    concurrency = max(1, rt.settings.telegram_concurrency)
    return _kept(
        ("telegram", token, api_url),
        lambda: TelegramSender(token, concurrency, base_url=api_url),
    )


def mail_domain(settings) -> str:
    return parseaddr(settings.mail_from)[1].rpartition("@")[2] or "localhost"


def twilio_status_callback(settings) -> str:
    return f"{settings.base_url}/webhooks/twilio/status"


class Adapter:
    """What the send job needs from a channel: its rate, its concurrency, and `send`."""

    channel: str
    concurrency: int
    rate_per_s: float
    burst: float = 0  # token bucket size; 0: one second's worth
    # The channel acts on which rows the commit found still its own (e-mail: writes the
    # final dot only for those, before the commit; it gets a StagedCommit); others just
    # record what the provider accepted.
    commit_tells_ownership = False

    def __init__(self, context: SendContext):
        self.context = context
        self.settings = context.rt.settings

    def rendering(self, row: ClaimedRow) -> Rendering:
        return self.context.renderings[(row.locale, self.channel)]

    def cost(self, row: ClaimedRow) -> int:
        """Rate tokens one message takes."""
        return 1

    async def send(self, rows: AsyncIterator[ClaimedRow], commit: Commit, report: Report):
        raise NotImplementedError


class EmailAdapter(Adapter):
    channel = "email"
    commit_tells_ownership = True

    def __init__(self, context: SendContext):
        super().__init__(context)
        self.domain = mail_domain(self.settings)
        self.concurrency = max(1, self.settings.email_concurrency)
        self.rate_per_s = self.settings.email_rate_per_s

    def sender(self) -> SmtpSender:
        return smtp_sender(self.context.rt)

    def outgoing(self, row: ClaimedRow) -> OutgoingEmail:
        rendering = self.rendering(row)
        secret = self.settings.secret_key
        unsubscribe = f"{self.settings.base_url}/unsubscribe/{make_token(secret, 'unsub', row.id)}"
        return OutgoingEmail(
            key=row.id,
            to=row.address,
            subject=rendering.subject,
            text=rendering.text.replace(UNSUBSCRIBE_MARK, unsubscribe),
            html=rendering.html.replace(UNSUBSCRIBE_MARK, unsubscribe),
            message_id=f"<n{self.context.broadcast_id}.d{row.id}@{self.domain}>",
            envelope_from=f"bounce+{row.id}@{self.domain}",
            reply_to=f"reply+{make_token(secret, 'reply', row.id)}@{self.domain}",
            unsubscribe_url=unsubscribe,
        )

    async def send(self, rows: AsyncIterator[ClaimedRow], commit: StagedCommit, report: Report):
        async def mails():
            async for row in rows:
                yield self.outgoing(row)

        await self.sender().send(mails(), commit, report)


class RequestAdapter(Adapter):
    """A channel whose provider takes one HTTP request per message (channels.base.send_each)."""

    def sender(self):
        raise NotImplementedError

    def outgoing(self, row: ClaimedRow):
        raise NotImplementedError

    async def send(self, rows: AsyncIterator[ClaimedRow], commit: Commit, report: Report):
        send_one: Callable[[object], Awaitable[Outcome]] = self.sender().send_one

        async def messages():
            async for row in rows:
                yield self.outgoing(row)

        await send_each(messages(), send_one, self.concurrency, commit, report)


class SmsAdapter(RequestAdapter):
    """Twilio counts segments, so the rate does too: a three-part SMS takes three tokens."""

    channel = "sms"

    def __init__(self, context: SendContext):
        super().__init__(context)
        self.concurrency = max(1, self.settings.sms_concurrency)
        self.rate_per_s = self.settings.sms_rate_per_s
        self.status_callback = twilio_status_callback(self.settings)

    def cost(self, row: ClaimedRow) -> int:
        return max(1, _segments(self.rendering(row).text))

    def sender(self) -> TwilioSender:
        return sms_sender(self.context.rt)

    def outgoing(self, row: ClaimedRow) -> OutgoingSms:
        return OutgoingSms(row.id, row.address, self.rendering(row).text, self.status_callback)


@cache
def _segments(text: str) -> int:
    return sms_length(text).segments


class TelegramAdapter(RequestAdapter):
    channel = "telegram"

    def __init__(self, context: SendContext):
        super().__init__(context)
        self.concurrency = max(1, self.settings.telegram_concurrency)
        self.rate_per_s = self.settings.telegram_rate_per_s
        # Telegram counts a bot's messages over each second: hardly any burst, so however the
        # jobs of several workers interleave, no second holds more than rate + 1.5 (29 at the
        # default 28/s). A high rate (a bench, a bot with raised limits) gets a proportional
        # bucket, not a Redis call per message.
        self.burst = max(1.5, self.rate_per_s / 20)

    def sender(self) -> TelegramSender:
        return telegram_sender(self.context.rt)

    async def send(self, rows: AsyncIterator[ClaimedRow], commit: Commit, report: Report):
        # Connect (getMe) before the first rate token is taken: otherwise the first messages
        # of every worker wait for it, then arrive together and Telegram answers 429.
        # If it fails, each message meets the same error and reports it.
        with contextlib.suppress(TelegramError):
            await self.sender().bot()
        await super().send(rows, commit, report)

    def outgoing(self, row: ClaimedRow) -> OutgoingTelegram:
        return OutgoingTelegram(row.id, row.address, self.rendering(row).text)


class PushAdapter(RequestAdapter):
    channel = "push"

    def __init__(self, context: SendContext):
        super().__init__(context)
        self.concurrency = max(1, self.settings.push_concurrency)
        self.rate_per_s = self.settings.push_rate_per_s
        self.private_key, _ = providers.vapid_keys(context.rt)
        self.notice_url = f"{self.settings.base_url}/notices/{context.broadcast_id}"

    def sender(self) -> PushSender:
        return _kept(
            ("push", self.private_key),
            lambda: PushSender(self.private_key, self.settings.vapid_subject, self.concurrency),
        )

    def outgoing(self, row: ClaimedRow) -> OutgoingPush:
        rendering = self.rendering(row)
        keys = row.details or {}
        emergency = self.context.priority == Priority.EMERGENCY
        return OutgoingPush(
            key=row.id,
            endpoint=row.address,
            p256dh=keys.get("p256dh", ""),
            auth=keys.get("auth", ""),
            title=rendering.subject,
            body=rendering.text,
            url=self.notice_url,
            ttl_s=self.settings.push_ttl_s,
            urgency="high" if emergency else "normal",
            # A later send of the same notice replaces one still waiting at the push service.
            topic=f"n{self.context.broadcast_id}",
        )


CHANNEL_ADAPTERS: dict[str, type[Adapter]] = {
    "email": EmailAdapter,
    "sms": SmsAdapter,
    "telegram": TelegramAdapter,
    "push": PushAdapter,
}


async def close_senders() -> None:
    """Close every kept sender's connections (a worker that stops; tests)."""
    senders = list(_SENDERS.values())
    _SENDERS.clear()
    for sender in senders:
        await sender.close()
