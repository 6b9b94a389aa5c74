"""Between the outbox and the channels: turn claimed rows into a channel's messages.

One adapter per channel; CHANNEL_ADAPTERS says which channels the hub can send on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr

from channels.email import Commit, OutgoingEmail, Report, SmtpSender, SmtpSettings
from hub.config import Settings
from hub.rendering import UNSUBSCRIBE_MARK
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


# SMTP connections left open by one job for the next, per server; they belong to the event
# loop of this process (hub.delivery.run_in_loop), which outlives the jobs.
_IDLE: dict[SmtpSettings, list] = {}


class EmailAdapter:
    channel = "email"

    def __init__(self, settings: Settings, broadcast_id: int, renderings: dict):
        self.settings = settings
        self.broadcast_id = broadcast_id
        self.renderings = renderings
        self.domain = parseaddr(settings.mail_from)[1].rpartition("@")[2] or "localhost"
        self.concurrency = max(1, settings.email_concurrency)
        self.rate_per_s = settings.email_rate_per_s

    def sender(self) -> SmtpSender:
        s = self.settings
        if s.email_uses_sandbox:
            smtp = SmtpSettings("127.0.0.1", s.sandbox_smtp_port, starttls=False)
        else:
            smtp = SmtpSettings(
                s.smtp_host, s.smtp_port, s.smtp_username, s.smtp_password, s.smtp_starttls
            )
        return SmtpSender(smtp, s.mail_from, self.concurrency, _IDLE.setdefault(smtp, []))

    def outgoing(self, row: ClaimedRow) -> OutgoingEmail:
        rendering = self.renderings[(row.locale, "email")]
        secret = self.settings.secret_key
        unsubscribe = f"{self.settings.base_url}/unsubscribe/{make_token(secret, 'unsub', row.id)}"
        return OutgoingEmail(
            key=row.id,
            to=row.address,
            subject=rendering.subject,
            text=rendering.text.replace(UNSUBSCRIBE_MARK, unsubscribe),
            html=rendering.html.replace(UNSUBSCRIBE_MARK, unsubscribe),
            message_id=f"<n{self.broadcast_id}.d{row.id}@{self.domain}>",
            envelope_from=f"bounce+{row.id}@{self.domain}",
            reply_to=f"reply+{make_token(secret, 'reply', row.id)}@{self.domain}",
            unsubscribe_url=unsubscribe,
        )

    async def send(self, rows: AsyncIterator[ClaimedRow], commit: Commit, report: Report) -> None:
        async def mails():
            async for row in rows:
                yield self.outgoing(row)

        await self.sender().send(mails(), commit, report)


CHANNEL_ADAPTERS = {"email": EmailAdapter}
