"""Database access: one small async interface over SQLite (``sqlite3``) and PostgreSQL (asyncpg).

* ``interface.py``: ``Conn`` and ``Database``, what the rest of the server uses; ``Row``,
  ``UniqueViolation``, the stored time form and ``$n`` placeholders.
* ``errors.py``: which driver errors become ``UniqueViolation`` and ``Unavailable``.
* ``sqlite.py``: SQLite connections, the per-turn read snapshot, ``SqliteDatabase``.
* ``group_commit.py``: SQLite writes, many transactions made durable by one COMMIT.
* ``checkpoint.py``: the SQLite WAL copied back into the database file in the background.
* ``postgres.py``: the asyncpg pool (loaded only when a PostgreSQL URL is opened).
"""

from __future__ import annotations

from chatserver.config import database_scheme, sqlite_path
from chatserver.db.interface import Conn, Database, Row, UniqueViolation, now_us, placeholders
from chatserver.db.sqlite import SqliteConn, SqliteDatabase

__all__ = [
    "Conn",
    "Database",
    "Row",
    "SqliteConn",
    "SqliteDatabase",
    "UniqueViolation",
    "asyncpg_dsn",
    "now_us",
    "open_database",
    "placeholders",
    "sqlalchemy_url",
]


async def open_database(url: str) -> Database:
    """The database at a user-facing URL (``sqlite:///path`` or ``postgresql://…``), started."""
    if database_scheme(url) == "sqlite":
        # Imported here: the store imports this package. Every SQLite database the server
        # and its tools open keeps its search index at each COMMIT (store/search.py).
        from chatserver.store.search import SearchIndexer

        return SqliteDatabase(sqlite_path(url), before_commit=SearchIndexer())
    from chatserver.db.postgres import PostgresDatabase  # asyncpg takes a while to import

    return await PostgresDatabase.connect(asyncpg_dsn(url))


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy URL (with the driver we use) for a user-facing database URL."""
    if database_scheme(url) == "sqlite":
        return f"sqlite:///{sqlite_path(url)}"
    return "postgresql+asyncpg://" + url.split("://", 1)[1]


def asyncpg_dsn(url: str) -> str:
    """asyncpg wants the plain ``postgresql://`` form, whatever suffix the user gave."""
    return "postgresql://" + url.split("://", 1)[1]
