"""E-mail over SMTP with aiosmtplib: reused sessions, multipart messages, and a two-phase DATA.

Two-phase DATA: an SMTP server keeps a message only once it reads the final "." of DATA, and
discards the transaction if the connection drops before (RFC 5321 4.1.1.4). So each message is
sent up to that dot; the caller marks the waiting messages as sent in one database transaction
(a group commit: whatever is waiting at that moment), which also tells which rows are still its
own; the dots of those are written; and only then does the transaction commit, all in one step
with the job's signals held back. The database never holds `sent` for a message whose dot was
not written: a worker killed before the COMMIT leaves its rows uncommitted, and they are sent
again. Only a kill in the microseconds between the last dot and the COMMIT leaving the process
(or a COMMIT that fails) can make a message arrive twice; none is ever skipped.

Connections work independently (no rounds): each takes the next message as soon as its last
one is answered, so the server never idles while the database commits.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import os
import secrets
import signal
import socket
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr
from functools import lru_cache

import aiosmtplib
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from channels.base import FAILED, GONE, RETRY, Outcome, Report

# stage(provider ids by key) -> a context manager: it marks those rows sent in a transaction and
# gives the keys whose rows the caller still owns; the transaction commits when the block ends,
# after the dots of exactly those keys were written (or rolls back if the block raises).
StagedCommit = Callable[[dict[int, str]], AbstractContextManager[set[int]]]


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
    starttls: bool = True  # required, not opportunistic: never send a password in clear
    timeout_s: float = 30.0


# -- the message ------------------------------------------------------------------------------


def build_message(mail: OutgoingEmail, from_header: str, now: float | None = None) -> bytes:
    """The RFC 5322 bytes: text and HTML alternatives, threading and one-click unsubscribe.

    Written out directly rather than through email.message.EmailMessage, whose header registry
    costs 1.5 ms a message: at city scale that, not SMTP, was the bottleneck. Raises ValueError
    for a header that could smuggle in another header (CR, LF) or needs SMTPUTF8."""
    _check_header_values(
        mail.to,
        mail.message_id,
        mail.envelope_from,
        mail.reply_to or "",
        mail.unsubscribe_url or "",
        mail.unsubscribe_mailto or "",
    )
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
    headers.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
    parts = [("plain", mail.text)] + ([("html", mail.html)] if mail.html else [])
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


def _check_header_values(*values: str) -> None:
    for value in values:
        if not value.isascii() or any(c in value for c in "\r\n\0"):
            raise ValueError(f"not usable in an e-mail header: {value!r}")


def _quoted_printable(text: str) -> str:
    encoded = binascii.b2a_qp(text.replace("\r\n", "\n").encode("utf-8"), istext=True)
    return encoded.decode("ascii").replace("\n", "\r\n")


@lru_cache(maxsize=256)
def _encode_text_header(value: str) -> str:
    value = " ".join(value.split())  # no line breaks: they would end the header
    return value if value.isascii() else Header(value, "utf-8").encode(linesep="\r\n")


@lru_cache(maxsize=64)
def _encode_address_header(value: str) -> str:
    name, address = parseaddr(value)
    _check_header_values(address)
    return formataddr((name, address), charset="utf-8")


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


# -- signals -----------------------------------------------------------------------------------

DEFERRED_SIGNALS = (signal.SIGALRM, signal.SIGTERM, signal.SIGINT)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold back the job timeout (SIGALRM), SIGTERM and SIGINT for a few microseconds: between
    the commit that marks messages sent and the writing of their dots, an exception would leave
    rows recorded as sent that nobody receives. Handlers run, in order, right after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are only ever handled in the main thread
        return
    caught: list[tuple[int, object]] = []
    previous = {signum: signal.getsignal(signum) for signum in DEFERRED_SIGNALS}
    for signum in DEFERRED_SIGNALS:
        signal.signal(signum, lambda number, frame: caught.append((number, frame)))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for number, frame in caught:
            handler = previous[number]
            if callable(handler):
                handler(number, frame)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), number)


# -- sending -----------------------------------------------------------------------------------


class _Waiting:
    """A message sent up to its final dot, waiting for the group commit."""

    def __init__(self, mail: OutgoingEmail, conn: aiosmtplib.SMTP):
        self.mail = mail
        self.conn = conn
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()


DOTTED, NOT_OWNED, LOST = "dotted", "not-owned", "lost"
GATHER_S = 0.002  # how long a group commit may wait for more messages to join


class _GroupCommit:
    """Marks whatever messages wait as sent, writes their dots, then commits."""

    def __init__(self, commit: StagedCommit, in_flight: Callable[[], int]):
        self.commit = commit
        self.in_flight = in_flight  # how many messages are on their way to the commit
        self.waiting: list[_Waiting] = []
        self.wakeup = asyncio.Event()

    async def finish(self, mail: OutgoingEmail, conn: aiosmtplib.SMTP) -> str:
        item = _Waiting(mail, conn)
        self.waiting.append(item)
        self.wakeup.set()
        return await item.done

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            # Gather a bigger group (fewer commits) while more messages are about to arrive,
            # but never hold the first one long.
            deadline = loop.time() + GATHER_S
            while len(self.waiting) < self.in_flight() and (left := deadline - loop.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), left)
                self.wakeup.clear()
            batch, self.waiting = self.waiting, []
            try:
                results = self._commit_and_dot(batch)
            except Exception as exc:  # the database failed: so does the send, at once
                for item in batch:
                    item.done.set_exception(exc)
                continue
            for item, result in zip(batch, results, strict=True):
                item.done.set_result(result)

    def _commit_and_dot(self, batch: list[_Waiting]) -> list[str]:
        """Dots strictly between the UPDATE that finds the rows still ours and the COMMIT: a
        COMMIT before the dots left a window (its round trip, and any time the process waited
        for a CPU) in which a killed worker had rows recorded as sent that never left."""
        alive = {item.mail.key for item in batch if _alive(item.conn)}
        waiting = {i.mail.key: i.mail.message_id for i in batch if i.mail.key in alive}
        with signals_deferred(), self.commit(waiting) as owned:
            results = []
            for item in batch:
                if item.mail.key not in alive:
                    results.append(LOST)
                elif item.mail.key not in owned:
                    results.append(NOT_OWNED)
                else:
                    results.append(DOTTED if _write(item.conn, b".\r\n") else LOST)
        return results


def _alive(conn: aiosmtplib.SMTP) -> bool:
    protocol = conn.protocol
    return (
        protocol is not None
        and protocol.transport is not None
        and (not protocol.transport.is_closing())
    )


def _write(conn: aiosmtplib.SMTP, data: bytes) -> bool:
    try:
        conn.protocol.write(data)
    except (aiosmtplib.SMTPException, OSError, AttributeError):
        return False
    return True


class SmtpSender:
    """Sends e-mails through up to `concurrency` SMTP connections, each reused for many."""

    def __init__(
        self,
        settings: SmtpSettings,
        from_header: str,
        concurrency: int,
        idle: list[aiosmtplib.SMTP] | None = None,
    ):
        self.settings = settings
        self.from_header = from_header
        self.concurrency = max(1, concurrency)
        # Open connections shared by the jobs of one process: a relay (and the stand-in)
        # spends more on a new session than on a message.
        self.idle = idle if idle is not None else []
        self._connected = 0
        self._in_flight = 0  # messages between MAIL FROM and the commit

    async def send(
        self, mails: AsyncIterator[OutgoingEmail], commit: StagedCommit, report: Report
    ) -> None:
        """Send every message `mails` yields; `report` gets each outcome except plain success
        after a commit (the commit already recorded those). See the module doc for `commit`."""
        group = _GroupCommit(commit, lambda: self._in_flight)
        committer = asyncio.create_task(group.run())
        source = _Source(mails)
        lanes = [
            asyncio.create_task(self._connection_loop(source, group, report))
            for _ in range(self.concurrency)
        ]
        try:
            await asyncio.gather(*lanes)
        finally:
            # After a failure, no lane may go on in this loop's next job with this one's rows.
            for task in (*lanes, committer):
                task.cancel()
            await asyncio.gather(*lanes, committer, return_exceptions=True)

    async def _connection_loop(self, source: _Source, group: _GroupCommit, report: Report):
        conn: aiosmtplib.SMTP | None = None
        while (mail := await source.next()) is not None:
            if conn is None:
                conn = await self._reuse() or await self._connect(mail, source, report)
                if conn is None:
                    if self._connected:
                        return  # the others carry on; this mail went back to them
                    continue
            outcome, conn = await self._deliver(conn, mail, group)
            if outcome is not None:
                report(outcome)
        if conn is not None:
            self.idle.append(conn)  # kept open for the next job in this process

    async def _reuse(self) -> aiosmtplib.SMTP | None:
        """A connection an earlier job left open, if the server still answers on it."""
        while self.idle:
            conn = self.idle.pop()
            try:
                if _alive(conn) and (await conn.noop()).code == 250:
                    self._connected += 1
                    return conn
            except (aiosmtplib.SMTPException, OSError, AttributeError):
                pass
            conn.close()
        return None

    async def _connect(self, mail, source: _Source, report: Report) -> aiosmtplib.SMTP | None:
        s = self.settings
        implicit_tls = s.port == 465  # SMTPS: TLS from the first byte (RFC 8314)
        conn = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            local_hostname=_local_hostname(),
            timeout=s.timeout_s,
            use_tls=implicit_tls,
            start_tls=bool(s.starttls and not implicit_tls),
            username=s.username or None,
            password=s.password or None,
        )
        try:
            await conn.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            if self._connected:
                source.give_back(mail)  # the server takes fewer connections: use the ones it took
            else:
                where = f"{s.host}:{s.port}"
                report(
                    Outcome(
                        mail.key,
                        RETRY,
                        provider_down=True,
                        error=f"cannot connect to SMTP server {where}: {exc}"[:1000],
                    )
                )
            return None
        self._connected += 1
        return conn

    async def _deliver(
        self, conn: aiosmtplib.SMTP, mail: OutgoingEmail, group: _GroupCommit
    ) -> tuple[Outcome | None, aiosmtplib.SMTP | None]:
        """One message on one connection; returns its outcome (None: recorded by the commit or
        given up) and the connection if it can be used again."""
        try:
            payload = data_payload(build_message(mail, self.from_header))
        except ValueError as exc:
            return Outcome(mail.key, FAILED, error=f"cannot build the message: {exc}"[:1000]), conn
        self._in_flight += 1
        try:
            outcome, conn = await self._stage_and_commit(conn, mail, payload, group)
        finally:
            self._in_flight -= 1
        if outcome is not None or conn is None:
            return outcome, conn
        return await self._reply(conn, mail)

    async def _stage_and_commit(self, conn, mail: OutgoingEmail, payload: bytes, group):
        """Up to the dot, then the group commit; (None, conn) when the dot went out."""
        try:
            refused = await self._up_to_the_dot(conn, mail, payload)
        except (aiosmtplib.SMTPException, OSError, AttributeError) as exc:
            self._drop(conn)
            error = f"SMTP connection lost: {exc}"[:1000]
            return Outcome(mail.key, RETRY, provider_down=True, error=error), None
        except UnicodeError as exc:
            error = f"address not usable: {exc}"[:1000]
            return Outcome(mail.key, FAILED, error=error), await self._reset(conn)
        if refused is not None:
            return refused, await self._reset(conn)
        result = await group.finish(mail, conn)
        if result == DOTTED:
            return None, conn
        self._drop(conn)
        if result == NOT_OWNED:
            return None, None  # someone else has the row now; the server drops this copy
        error = "SMTP connection lost before the final dot"
        return Outcome(mail.key, RETRY, provider_down=True, error=error), None

    def _drop(self, conn: aiosmtplib.SMTP) -> None:
        conn.close()
        self._connected -= 1

    async def _up_to_the_dot(self, conn, mail: OutgoingEmail, payload: bytes) -> Outcome | None:
        for phase, command, expected in (
            ("MAIL", lambda: conn.mail(mail.envelope_from), 250),
            ("RCPT", lambda: conn.rcpt(mail.to), 250),
            ("DATA", lambda: conn.execute_command(b"DATA"), 354),
        ):
            response = await _checked(command)
            if response.code not in (expected, 251):
                status, error = classify(response.code, response.message, phase)
                return Outcome(mail.key, status, error=error, provider_down=response.code == 421)
        conn.protocol.write(payload)
        await _flushed(conn, self.settings.timeout_s)
        return None

    async def _reply(self, conn, mail: OutgoingEmail) -> tuple[Outcome | None, object]:
        try:
            response = await conn.protocol.read_response(timeout=self.settings.timeout_s)
        except (aiosmtplib.SMTPException, OSError, AttributeError) as exc:
            # No reply to the dot: the server may have died before or after keeping the
            # message. SMTP's answer (RFC 5321 4.1.1.4, RFC 1047) is to send it again and
            # accept a possible duplicate rather than a possible loss; for a city's warnings
            # that is the right side to err on.
            self._drop(conn)
            error = f"no reply to the final dot ({exc}); sent again, may arrive twice"
            return Outcome(mail.key, RETRY, provider_down=True, error=error[:1000]), None
        if response.code == 250:
            return None, conn
        status, error = classify(response.code, response.message, "DATA")
        return Outcome(mail.key, status, error=error), conn

    async def _reset(self, conn: aiosmtplib.SMTP) -> aiosmtplib.SMTP | None:
        try:
            await conn.rset()
            return conn
        except (aiosmtplib.SMTPException, OSError, AttributeError):
            self._drop(conn)
            return None


class _Source:
    """The messages to send, shared by the connections; one given back is taken first."""

    def __init__(self, mails: AsyncIterator[OutgoingEmail]):
        self.mails = mails
        self.returned: deque[OutgoingEmail] = deque()
        self.lock = asyncio.Lock()
        self.exhausted = False

    async def next(self) -> OutgoingEmail | None:
        if self.returned:
            return self.returned.popleft()
        async with self.lock:
            if self.exhausted:
                return self.returned.popleft() if self.returned else None
            try:
                return await anext(self.mails)
            except StopAsyncIteration:
                self.exhausted = True
                return self.returned.popleft() if self.returned else None

    def give_back(self, mail: OutgoingEmail) -> None:
        self.returned.append(mail)


@lru_cache(maxsize=1)
def _local_hostname() -> str:
    """Our name for EHLO, looked up once per process (aiosmtplib would do it per connection)."""
    return socket.getfqdn()


async def _flushed(conn: aiosmtplib.SMTP, timeout_s: float) -> None:
    """Wait until the message has left this process for the kernel, so that after the commit
    only the three bytes of the dot remain to be written."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        transport = conn.protocol.transport if conn.protocol else None
        if transport is None or transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("connection closed while sending")
        if not transport.get_write_buffer_size():
            return
        if loop.time() > deadline:
            raise aiosmtplib.SMTPTimeoutError("timed out sending the message")
        await asyncio.sleep(0.001)


async def _checked(call):
    """Run one SMTP command, returning its reply even when aiosmtplib raises for a bad code."""
    try:
        return await call()
    except aiosmtplib.SMTPResponseException as exc:
        return aiosmtplib.SMTPResponse(exc.code, exc.message)
