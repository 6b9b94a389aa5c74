"""The HTTP stand-ins (Twilio's REST API, the Telegram Bot API, a Web Push service) in one
aiohttp server on its own thread and event loop, so `hub serve`, the tests and the benchmarks
talk to them over real sockets with the real provider libraries.

Each provider is an object with `routes()`; tests in the same process reach those objects
(`server.twilio`, ...) to set a scenario (a number that fails, a chat that blocked the bot).
Another process does the same through `POST /control/<provider>/<action>` with a JSON body."""

from __future__ import annotations

import asyncio
import json
import threading

from aiohttp import web


class StandinServer:
    def __init__(self, providers: dict[str, object], port: int, host: str = "127.0.0.1"):
        self.providers = providers
        self.host, self.port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    def __getattr__(self, name: str):
        try:
            return self.__dict__["providers"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        for provider in self.providers.values():
            app.add_routes(provider.routes())
        app.add_routes([web.post("/control/{provider}/{action}", self._control)])
        return app

    async def _control(self, request: web.Request) -> web.Response:
        provider = self.providers.get(request.match_info["provider"])
        action = getattr(provider, "control_" + request.match_info["action"], None)
        if action is None:
            return web.json_response({"error": "no such provider or action"}, status=404)
        try:
            arguments = await request.json() if request.can_read_body else {}
        except json.JSONDecodeError:
            return web.json_response({"error": "the body must be JSON"}, status=400)
        if not isinstance(arguments, dict):
            return web.json_response({"error": "the body must be a JSON object"}, status=400)
        try:
            return web.json_response(action(**arguments) or {})
        except TypeError as error:  # missing or unknown arguments
            return web.json_response({"error": str(error)}, status=400)

    def start(self) -> StandinServer:
        """Listen before returning (a busy port raises OSError here, not in the thread)."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                self._runner = web.AppRunner(self.app(), access_log=None)
                loop.run_until_complete(self._runner.setup())
                site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
                loop.run_until_complete(site.start())
            except BaseException as error:  # handed to the starting thread
                failure.append(error)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shut_down())
            loop.close()

        self._thread = threading.Thread(target=run, name="sandbox-http", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    async def _shut_down(self) -> None:
        """Stop listening, drop work still scheduled (callbacks not yet posted), and let each
        provider close what it holds open."""
        await self._runner.cleanup()
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for provider in self.providers.values():
            close = getattr(provider, "close", None)
            if close is not None:
                await close()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop = self._thread = None
