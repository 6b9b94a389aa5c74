"""Engine and session set-up. SQLite gets WAL and a busy timeout: web, workers and CLI share it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker


class Base(DeclarativeBase):
    pass


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    # Keep as many connections as `hub serve` has threads: with the default five, every
    # request beyond five at once opened a new connection (a new server process) and closed it.
    engine = create_engine(url, pool_size=16, max_overflow=16)
    _ping_when_idle(engine)
    return engine


IDLE_BEFORE_PING_S = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """pool_pre_ping's check, but only for a connection that sat in the pool a second or more
    (a database restarted meanwhile, a firewall that dropped it): one returned a moment ago is
    as alive as anyone can tell, and at 200 webhooks a second the ping was a fifth of each
    webhook's CPU. A connection that died in that second fails its statement instead, and
    SQLAlchemy then drops every pooled connection, as the ping would have found them."""

    @event.listens_for(engine, "checkin")
    def returned(_dbapi_connection, record) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def check(dbapi_connection, record, _proxy) -> None:
        returned_at = record.info.get("returned_at")
        if returned_at is None or time.monotonic() - returned_at < IDLE_BEFORE_PING_S:
            return  # new, or used a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            raise DisconnectionError("the pooled connection is gone") from error  # a new one


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
