"""`hub db upgrade`: run the Alembic migrations shipped inside the package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def current_revisions(database_url: str) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    from hub.db import make_engine

    engine = make_engine(database_url)
    with engine.connect() as connection:
        revisions = set(MigrationContext.configure(connection).get_current_heads())
    engine.dispose()
    return revisions


def head_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


def is_current(database_url: str) -> bool:
    """True when the database is migrated to this code's schema."""
    return current_revisions(database_url) == head_revisions()
