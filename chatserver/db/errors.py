"""Which driver errors mean what to the server, for both engines.

A UNIQUE constraint becomes ``UniqueViolation`` (the actions turn it into a conflict or an
idempotent replay); a database that cannot be used right now becomes ``Unavailable`` (a 503:
the request changed nothing, retry later). Every other error propagates as the driver's own:
it is a bug, not a condition a client can cause.
"""

from __future__ import annotations

import sqlite3

from chatserver.db.interface import UniqueViolation
from chatserver.errors import Unavailable


def translate_sqlite_error(exc: sqlite3.Error) -> Exception | None:
    """The server's exception for a ``sqlite3`` error, or ``None`` to let it propagate."""
    if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc):
        return UniqueViolation(str(exc))
    if isinstance(exc, sqlite3.OperationalError):  # locked past busy_timeout, I/O, disk full
        return Unavailable(f"The database cannot be used right now: {exc}")
    return None


def sqlite_commit_failed(exc: BaseException) -> Unavailable:
    """What each writer of a group-committed batch gets when its COMMIT fails."""
    return Unavailable(f"The database could not commit: {exc}")


def translate_asyncpg_error(exc: BaseException) -> Exception | None:
    """The server's exception for an asyncpg (or socket) error, or ``None`` to let it
    propagate."""
    import asyncpg  # loaded only by servers that use PostgreSQL

    if isinstance(exc, asyncpg.UniqueViolationError):
        return UniqueViolation(str(exc))
    # InternalClientError: a connection the server dropped in the middle of a message
    # ("another operation is in progress"); the pool replaces it on release.
    # OperatorInterventionError: the server is starting, shutting down or crashed
    # (CannotConnectNowError, AdminShutdownError, CrashShutdownError); too many connections.
    unreachable = (
        OSError,
        TimeoutError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
        asyncpg.exceptions.OperatorInterventionError,
        asyncpg.exceptions.TooManyConnectionsError,
    )
    if isinstance(exc, unreachable):
        return Unavailable("The database cannot be reached right now")
    return None
