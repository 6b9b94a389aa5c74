"""`hub mail-in`: the SMTP receiver for residents' e-mail replies and bounce reports.

It accepts mail only for the addresses the hub hands out (reply+TOKEN@, bounce+ID@ and the
From address's mailbox, any domain: the MX or relay in front decides which domains reach it),
so it cannot be used as a relay; stores each message raw, once per Message-ID; and leaves the
rest to a job (hub.inbound), so a slow database never makes a sending server wait."""

from __future__ import annotations

import asyncio
from email.utils import parseaddr

from aiosmtpd.controller import Controller

from channels.mailparse import parse_inbound
from hub import inbound
from hub.runtime import Runtime

ACCEPTED_PREFIXES = ("reply+", "bounce+", "bounce@")
MAX_MESSAGE_BYTES = 10 * 1024 * 1024


class MailInHandler:
    def __init__(self, rt: Runtime):
        self.rt = rt
        # Residents who answer the From address instead of Reply-To reach the inbox too
        # (threaded by In-Reply-To / References then).
        from_local = parseaddr(rt.settings.mail_from)[1].partition("@")[0].lower()
        self.accepted = (*ACCEPTED_PREFIXES, f"{from_local}@")

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if not address.lower().startswith(self.accepted):
            return "550 5.1.1 No such recipient here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content
        envelope_meta = {"mail_from": envelope.mail_from or "", "rcpt_tos": envelope.rcpt_tos}
        message_id = parse_inbound(raw, envelope_meta["mail_from"], envelope.rcpt_tos).message_id
        # The database and Redis are blocking clients: off the receiver's event loop.
        await asyncio.get_running_loop().run_in_executor(
            None, inbound.accept, self.rt, "email", message_id, raw, envelope_meta
        )
        return "250 2.0.0 OK: received"


def start_mail_in(rt: Runtime, host: str, port: int) -> Controller:
    controller = Controller(
        MailInHandler(rt),
        hostname=host,
        port=port,
        server_hostname="mail-in.mestni-glas.invalid",
        data_size_limit=MAX_MESSAGE_BYTES,
    )
    controller.start()
    return controller
