"""An SMTP server that misbehaves on cue, for the failure paths the sandbox stand-in (which
behaves) cannot show: a connection dropped before the final dot, a rejection after it, a
server that takes only a few connections, one without STARTTLS."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field


@dataclass
class Script:
    drop_before_dot: set[str] = field(default_factory=set)  # recipients whose DATA is cut off
    reply_after_dot: dict[str, str] = field(default_factory=dict)  # recipient -> reply line
    max_connections: int = 1000
    starttls: bool = False  # offered in EHLO? (it is never actually possible here)


class ScriptedSmtp:
    def __init__(self, port: int, script: Script):
        self.port = port
        self.script = script
        self.delivered: list[str] = []  # recipients whose message was accepted
        self.commands: list[str] = []
        self.connections = 0
        self.sessions: set[asyncio.Task] = set()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ScriptedSmtp:
        self.thread.start()
        self.ready.wait(5)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    async def _shutdown(self) -> None:
        """Close the listener and every open session (clients may keep theirs open)."""
        self.server.close()
        for task in self.sessions:
            task.cancel()
        await asyncio.gather(*self.sessions, return_exceptions=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._session, "127.0.0.1", self.port)
        )
        self.ready.set()
        self.loop.run_forever()

    async def _session(self, reader, writer) -> None:
        task = asyncio.current_task()
        self.sessions.add(task)
        task.add_done_callback(self.sessions.discard)
        if self.connections >= self.script.max_connections:
            writer.write(b"421 4.7.0 Too many connections\r\n")
            writer.close()
            return
        self.connections += 1
        try:
            await self._converse(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.connections -= 1
            writer.close()

    async def _converse(self, reader, writer) -> None:
        def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        say("220 scripted ESMTP")
        rcpt = ""
        while line := (await reader.readline()).decode().strip():
            self.commands.append(line)
            verb = line.split(" ", 1)[0].split(":", 1)[0].upper()
            if verb == "EHLO":
                say("250-scripted")
                say("250-STARTTLS" if self.script.starttls else "250-8BITMIME")
                say("250 AUTH PLAIN LOGIN")
            elif verb == "RCPT":
                rcpt = line.split(":", 1)[1].strip("<> ")
                say("250 OK")
            elif verb == "DATA":
                say("354 go ahead")
                await writer.drain()
                if not await self._read_message(reader, writer, rcpt):
                    return
                reply = self.script.reply_after_dot.get(rcpt, "250 2.0.0 queued")
                if reply.startswith("250"):
                    self.delivered.append(rcpt)
                say(reply)
            elif verb == "QUIT":
                say("221 bye")
                await writer.drain()
                return
            else:  # MAIL, RSET, NOOP, AUTH
                say("235 OK" if verb == "AUTH" else "250 OK")
            await writer.drain()

    async def _read_message(self, reader, writer, rcpt: str) -> bool:
        data = b""
        while not data.endswith(b"\r\n.\r\n"):
            chunk = await reader.read(65536)
            if not chunk:
                return False
            data += chunk
            if rcpt in self.script.drop_before_dot:
                writer.transport.abort()  # as a relay restarting mid-message would
                return False
        return True
