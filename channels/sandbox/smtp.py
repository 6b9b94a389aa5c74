"""The SMTP stand-in (aiosmtpd): accepts mail like a real relay and keeps it for /sandbox.

Addresses at bounce.example are refused at RCPT with 550 5.1.1 (a dead mailbox, a hard bounce);
addresses at tempfail.example get 451 4.2.1 (try later). Everything else is accepted.
"""

from __future__ import annotations

import functools
import itertools
import os
import socket
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
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
        # compat32 parsing: the modern policy's header registry is too slow for benchmarks.
        message = message_from_bytes(envelope.original_content)
        meta = {
            "envelope_from": envelope.mail_from,
            "message_id": message.get("Message-ID", ""),
            "reply_to": message.get("Reply-To", ""),
            "list_unsubscribe": message.get("List-Unsubscribe", ""),
            "list_unsubscribe_post": message.get("List-Unsubscribe-Post", ""),
        }
        subject = str(make_header(decode_header(message.get("Subject", ""))))
        body = _plain_text(message)
        for rcpt in envelope.rcpt_tos:
            self.store.add(
                "email", rcpt, body, subject=subject, raw=envelope.original_content, meta=meta
            )
        return "250 2.0.0 OK: queued"


def _plain_text(message: Message) -> str:
    """The text/plain part (or the first text part), decoded."""
    parts = [p for p in message.walk() if p.get_content_maintype() == "text"]
    plain = [p for p in parts if p.get_content_subtype() == "plain"]
    part = (plain or parts or [None])[0]
    if part is None:
        return ""
    payload = part.get_payload(decode=True) or b""
    text = payload.decode(part.get_content_charset() or "utf-8", errors="replace")
    return text.replace("\r\n", "\n")


# Ports for stand-ins and test servers come from below the kernel's ephemeral range. A port the
# kernel picked (bind to 0) is free only until someone else's outgoing connection takes it as
# its source port, which happened between the check and the stand-in's bind. Below the range no
# outgoing connection gets one. Each process walks its own block, so pytest-xdist workers and a
# bench running beside them never hand out the same port.
_PORT_BLOCK = 1000
_PORT_BLOCKS = 12
_ports_walked = itertools.count()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on and no outgoing connection will take."""
    start = _low_port_start() + _process_block() * _PORT_BLOCK
    for _ in range(_PORT_BLOCK):
        port = start + next(_ports_walked) % _PORT_BLOCK
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # listening, or lingering in TIME_WAIT: try the next one
        return port
    raise RuntimeError(f"no free port in {start}-{start + _PORT_BLOCK - 1}")


@functools.cache
def _low_port_start() -> int:
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768  # Linux's default; elsewhere the first free block still works
    return max(1024, ephemeral_low - _PORT_BLOCK * _PORT_BLOCKS)


def _process_block() -> int:
    """Blocks 0-3 for pytest-xdist workers gw0-gw3, the others by process id."""
    worker = xdist_worker_number()
    if worker is not None and worker < 4:
        return worker
    return 4 + os.getpid() % (_PORT_BLOCKS - 4)


def xdist_worker_number() -> int | None:
    """0 for pytest-xdist's worker gw0 and so on; None outside a pytest-xdist worker."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else None


def start_smtp_standin(store_path: Path | str, port: int, host: str = "127.0.0.1") -> Controller:
    """Start the stand-in in a background thread; call .stop() on the result to end it."""
    controller = Controller(
        SandboxSmtpHandler(SandboxStore(store_path)),
        hostname=host,
        port=port,
        # Named, as a real relay is: otherwise aiosmtpd looks up the machine's FQDN (a DNS
        # query, blocking its loop) for every connection.
        server_hostname="sandbox.mestni-glas.invalid",
        # A big relay accepts large notices; the default 32 MiB is fine, keep it explicit.
        data_size_limit=33554432,
    )
    controller.start()
    return controller
