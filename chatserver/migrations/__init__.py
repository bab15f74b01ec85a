"""Alembic migrations; ``upgrade(database_url)`` applies the pending ones.

Alembic (and the SQLAlchemy it loads) is imported only when a migration may be pending:
importing them slowed every ``chatserver serve`` start, most of them on a database that
was already up to date.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

from chatserver.config import database_scheme, sqlite_path

if TYPE_CHECKING:
    from alembic.config import Config

HERE = Path(__file__).parent
# The newest revision in versions/ (a test checks it against Alembic's own head).
HEAD = "0009"


def alembic_config(database_url: str) -> Config:
    """An Alembic config that needs no alembic.ini: the package carries its scripts."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database at ``database_url`` up to ``revision``."""
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


def upgrade_if_behind(database_url: str) -> None:
    """``upgrade`` to head, skipped (without loading Alembic) when a SQLite database
    already records the newest revision. PostgreSQL always asks Alembic."""
    if not _sqlite_at_head(database_url):
        upgrade(database_url)


def _sqlite_at_head(database_url: str) -> bool:
    if database_scheme(database_url) != "sqlite":
        return False
    path = Path(sqlite_path(database_url))
    if not path.is_file():
        return False
    try:
        # Read-only: a check must not create or change anything.
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:  # no version table yet, or unreadable: let Alembic decide
        return False
    return rows == [(HEAD,)]
