"""E-mail over SMTP with aiosmtplib: multipart messages, reused sessions, and a two-phase DATA.

Two-phase DATA: an SMTP server keeps a message only once it reads the final "." of DATA. We send
everything up to that dot, let the caller record the messages as sent (one database commit for
the whole round), and only then write the dots. A worker killed before the commit leaves no
message at the server (the dropped connection aborts the transaction) and the rows are sent again;
a worker killed after the commit has already handed the dots to the kernel. So nobody gets a
notice twice and nobody is skipped.
"""

from __future__ import annotations

import asyncio
import binascii
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.header import Header
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formataddr, formatdate, parseaddr
from functools import lru_cache

import aiosmtplib
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from channels.base import FAILED, GONE, RETRY, SENT, Outcome


@dataclass(frozen=True)
class OutgoingEmail:
    key: int
    to: str
    subject: str
    text: str
    html: str | None
    message_id: str
    envelope_from: str  # per-message bounce address, e.g. bounce+123@city.example
    reply_to: str | None = None
    unsubscribe_url: str | None = None
    unsubscribe_mailto: str | None = None


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    username: str = ""
    password: str = ""
    starttls: bool = True
    timeout_s: float = 30.0


def build_message(mail: OutgoingEmail, from_header: str, now: float | None = None) -> bytes:
    """The RFC 5322 bytes: text and HTML alternatives, threading and one-click unsubscribe.

    Written out directly rather than through email.message.EmailMessage, whose header
    registry costs milliseconds a message: at city scale that, not SMTP, was the bottleneck.
    Addresses that need SMTPUTF8 take the library's path."""
    if not all(v.isascii() for v in (mail.to, mail.reply_to or "", mail.unsubscribe_url or "")):
        return _build_with_library(mail, from_header, now)
    boundary = f"=_mg_{mail.key}_{secrets.token_hex(8)}"
    headers = [
        f"From: {_encode_address_header(from_header)}",
        f"To: {mail.to}",
        f"Subject: {_encode_text_header(mail.subject)}",
        f"Date: {formatdate(now, usegmt=True)}",
        f"Message-ID: {mail.message_id}",
    ]
    if mail.reply_to:
        headers.append(f"Reply-To: {mail.reply_to}")
    links = [f"<{u}>" for u in (mail.unsubscribe_url, mail.unsubscribe_mailto) if u]
    if links:
        headers.append("List-Unsubscribe: " + ", ".join(links))
    if mail.unsubscribe_url:
        headers.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")  # RFC 8058
    headers.append("MIME-Version: 1.0")
    parts = [("plain", mail.text)] + ([("html", mail.html)] if mail.html else [])
    headers.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
    lines = [*headers, ""]
    for subtype, body in parts:
        lines += [
            f"--{boundary}",
            f'Content-Type: text/{subtype}; charset="utf-8"',
            "Content-Transfer-Encoding: quoted-printable",
            "",
            _quoted_printable(body),
        ]
    lines.append(f"--{boundary}--")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _quoted_printable(text: str) -> str:
    encoded = binascii.b2a_qp(text.replace("\r\n", "\n").encode("utf-8"), istext=True)
    return encoded.decode("ascii").replace("\n", "\r\n")


@lru_cache(maxsize=256)
def _encode_text_header(value: str) -> str:
    return value if value.isascii() else Header(value, "utf-8").encode(linesep="\r\n")


@lru_cache(maxsize=64)
def _encode_address_header(value: str) -> str:
    name, address = parseaddr(value)
    return formataddr((name, address), charset="utf-8")


def _build_with_library(mail: OutgoingEmail, from_header: str, now: float | None) -> bytes:
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = from_header
    msg["To"] = mail.to
    msg["Subject"] = mail.subject
    msg["Date"] = formatdate(now, usegmt=True)
    msg["Message-ID"] = mail.message_id
    if mail.reply_to:
        msg["Reply-To"] = mail.reply_to
    links = [f"<{u}>" for u in (mail.unsubscribe_url, mail.unsubscribe_mailto) if u]
    if links:
        msg["List-Unsubscribe"] = ", ".join(links)
    if mail.unsubscribe_url:
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(mail.text)
    if mail.html:
        msg.add_alternative(mail.html, subtype="html")
    return msg.as_bytes()


def data_payload(message: bytes) -> bytes:
    """Message bytes as DATA carries them (CRLF, dot-stuffed), without the final dot line."""
    payload = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message))
    return payload if payload.endswith(b"\r\n") else payload + b"\r\n"


def classify(code: int, message: str, phase: str) -> tuple[str, str]:
    """Map an SMTP reply to an outcome: a dead mailbox is GONE, 4xx is RETRY, other 5xx FAILED."""
    text = f"{phase}: {code} {message}".strip()[:1000]
    if 400 <= code < 500:
        return RETRY, text
    if phase == "RCPT" and code in (550, 551, 553) and " 5.7." not in f" {message}":
        return GONE, text
    return FAILED, text


class _Staged:
    """A message whose DATA has been sent up to (not including) the final dot."""

    def __init__(self, mail: OutgoingEmail, conn: aiosmtplib.SMTP):
        self.mail = mail
        self.conn = conn


class SmtpSession:
    """A pool of SMTP connections reused for every round of one send job."""

    def __init__(self, settings: SmtpSettings, from_header: str, concurrency: int):
        self.settings = settings
        self.from_header = from_header
        self.concurrency = max(1, concurrency)
        self._idle: list[aiosmtplib.SMTP] = []

    async def __aenter__(self) -> SmtpSession:
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.gather(*(self._quit(c) for c in self._idle))
        self._idle.clear()

    async def send_round(
        self, mails: Sequence[OutgoingEmail], commit: Callable[[list[int]], set[int]]
    ) -> list[Outcome]:
        """Send up to `concurrency` messages, one per connection.

        `commit(keys)` is called once, after every message is staged and before any final dot;
        it records them as sent and returns the keys that may be completed (a key it leaves out,
        say because another worker took the row over, is aborted and never reaches anyone).
        """
        staged_or_failed = await asyncio.gather(*(self._stage(m) for m in mails))
        staged = [s for s in staged_or_failed if isinstance(s, _Staged)]
        outcomes = [o for o in staged_or_failed if isinstance(o, Outcome)]
        allowed = commit([s.mail.key for s in staged]) if staged else set()
        finished = await asyncio.gather(*(self._finish(s, s.mail.key in allowed) for s in staged))
        return outcomes + [o for o in finished if o is not None]

    async def _connection(self) -> aiosmtplib.SMTP:
        if self._idle:
            return self._idle.pop()
        s = self.settings
        implicit_tls = s.port == 465  # SMTPS: TLS from the first byte (RFC 8314)
        conn = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            timeout=s.timeout_s,
            use_tls=implicit_tls,
            start_tls=None if s.starttls and not implicit_tls else False,
            username=s.username or None,
            password=s.password or None,
        )
        await conn.connect()
        return conn

    async def _stage(self, mail: OutgoingEmail) -> _Staged | Outcome:
        try:
            conn = await self._connection()
        except (aiosmtplib.SMTPException, OSError) as exc:
            where = f"{self.settings.host}:{self.settings.port}"
            return Outcome(mail.key, RETRY, error=f"cannot connect to SMTP server {where}: {exc}")
        try:
            payload = data_payload(build_message(mail, self.from_header))
            for phase, reply in (
                ("MAIL", lambda: conn.mail(mail.envelope_from)),
                ("RCPT", lambda: conn.rcpt(mail.to)),
                ("DATA", lambda: conn.execute_command(b"DATA")),
            ):
                response = await _checked(reply)
                expected = 354 if phase == "DATA" else 250
                if response.code not in (expected, 251):
                    status, error = classify(response.code, response.message, phase)
                    await self._reset(conn)
                    return Outcome(mail.key, status, error=error)
            conn.protocol.write(payload)
            await _flushed(conn)
            return _Staged(mail, conn)
        except (aiosmtplib.SMTPException, OSError) as exc:
            conn.close()
            return Outcome(mail.key, RETRY, error=f"SMTP connection lost: {exc}")

    async def _finish(self, staged: _Staged, allowed: bool) -> Outcome | None:
        conn, mail = staged.conn, staged.mail
        if not allowed:
            conn.close()  # the server drops the unfinished transaction
            return None
        try:
            conn.protocol.write(b".\r\n")
        except (aiosmtplib.SMTPException, OSError) as exc:
            conn.close()
            return Outcome(mail.key, RETRY, error=f"SMTP connection lost before the end: {exc}")
        try:
            response = await conn.protocol.read_response(timeout=self.settings.timeout_s)
        except (aiosmtplib.SMTPException, OSError) as exc:
            # The dot went out; the server most likely kept the message. Sending it again
            # would risk a duplicate, so it stays sent, with the doubt written down.
            conn.close()
            return Outcome(mail.key, SENT, mail.message_id, error=f"no reply after DATA: {exc}")
        self._idle.append(conn)
        if response.code == 250:
            return Outcome(mail.key, SENT, mail.message_id)
        status, error = classify(response.code, response.message, "DATA")
        return Outcome(mail.key, status, error=error)

    async def _reset(self, conn: aiosmtplib.SMTP) -> None:
        try:
            await conn.rset()
            self._idle.append(conn)
        except (aiosmtplib.SMTPException, OSError):
            conn.close()

    @staticmethod
    async def _quit(conn: aiosmtplib.SMTP) -> None:
        try:
            await conn.quit()
        except (aiosmtplib.SMTPException, OSError):
            conn.close()


async def _flushed(conn: aiosmtplib.SMTP) -> None:
    """Wait until the message body has left this process for the kernel: after the commit only
    the three bytes of the dot must still be written, so a process killed then has delivered."""
    transport = conn.protocol.transport
    while transport is not None and transport.get_write_buffer_size():
        await asyncio.sleep(0.001)


async def _checked(call):
    """Run one SMTP command, returning its reply even when aiosmtplib raises for a bad code."""
    try:
        return await call()
    except aiosmtplib.SMTPResponseException as exc:
        return aiosmtplib.SMTPResponse(exc.code, exc.message)
