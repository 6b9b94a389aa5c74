"""The SMTP stand-in (aiosmtpd): accepts mail like a real relay and keeps it for /sandbox.

Addresses at bounce.example are refused at RCPT with 550 5.1.1 (a dead mailbox, a hard bounce);
addresses at tempfail.example get 451 4.2.1 (try later). Everything else is accepted.
"""

from __future__ import annotations

import socket
from email import message_from_bytes
from email.message import Message
from email.policy import default as default_policy
from pathlib import Path

from aiosmtpd.controller import Controller

from channels.sandbox.store import SandboxStore

HARD_BOUNCE_DOMAIN = "bounce.example"
SOFT_BOUNCE_DOMAIN = "tempfail.example"


class SandboxSmtpHandler:
    def __init__(self, store: SandboxStore):
        self.store = store

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        domain = address.rpartition("@")[2].lower()
        if domain == HARD_BOUNCE_DOMAIN:
            return "550 5.1.1 User unknown"
        if domain == SOFT_BOUNCE_DOMAIN:
            return "451 4.2.1 Mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = message_from_bytes(envelope.original_content, policy=default_policy)
        meta = {
            "envelope_from": envelope.mail_from,
            "message_id": message.get("Message-ID", ""),
            "reply_to": message.get("Reply-To", ""),
            "list_unsubscribe": message.get("List-Unsubscribe", ""),
            "list_unsubscribe_post": message.get("List-Unsubscribe-Post", ""),
        }
        body = _plain_text(message)
        for rcpt in envelope.rcpt_tos:
            self.store.add(
                "email",
                rcpt,
                body,
                subject=str(message.get("Subject", "")),
                raw=envelope.original_content,
                meta=meta,
            )
        return "250 2.0.0 OK: queued"


def _plain_text(message: Message) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    return part.get_content() if part is not None else ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_smtp_standin(store_path: Path | str, port: int, host: str = "127.0.0.1") -> Controller:
    """Start the stand-in in a background thread; call .stop() on the result to end it."""
    controller = Controller(
        SandboxSmtpHandler(SandboxStore(store_path)),
        hostname=host,
        port=port,
        # A big relay accepts large notices; the default 32 MiB is fine, keep it explicit.
        data_size_limit=33554432,
    )
    controller.start()
    return controller
