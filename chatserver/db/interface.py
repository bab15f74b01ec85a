"""What the rest of the server sees of a database: ``Conn``, ``Database``, and the shared forms.

SQL is written once, in ``store/``, with ``$1``-style parameters (asyncpg's own form); the
SQLite side rewrites them to ``?1`` (SQLite's numbered form), so every statement runs
unchanged on both engines. Both engines raise ``UniqueViolation`` for a UNIQUE constraint and
``chatserver.errors.Unavailable`` when the database cannot be used right now (see ``errors.py``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

Row = Sequence[Any]


class UniqueViolation(Exception):
    """A UNIQUE constraint rejected a write (both engines raise this one type)."""


class Conn(Protocol):
    """What store functions get: run a statement, read rows."""

    async def fetch_all(self, sql: str, *args: Any) -> list[Row]: ...
    async def fetch_one(self, sql: str, *args: Any) -> Row | None: ...
    async def fetch_val(self, sql: str, *args: Any) -> Any: ...
    async def execute(self, sql: str, *args: Any) -> int: ...
    async def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None: ...


class Database(Protocol):
    """A started database: reads, durable write transactions, a health ping."""

    dialect: str

    def read(self) -> AbstractAsyncContextManager[Conn]:
        """A connection for reads; what it sees is committed data."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[Conn]:
        """A write transaction: it commits when the block ends, rolls back when it raises,
        and the block's exit returns only once the commit is durable."""
        ...

    def writes_failing(self) -> bool:
        """Whether a recent write failed in a way a small write of the health check's
        own can miss (a full disk); True until a write succeeds or ten seconds pass."""
        ...

    async def ping(self) -> None: ...
    async def close(self) -> None: ...


class WriteHealth:
    """Whether writes are failing: one failed since the last that succeeded, recently.

    The health check asks this before it tries a write of its own: a one-page write can
    still fit where a send's pages no longer do (a disk with a few bytes left)."""

    __slots__ = ("failed_at",)
    WINDOW_SECONDS = 10.0

    def __init__(self) -> None:
        self.failed_at: float | None = None

    def failed(self) -> None:
        self.failed_at = time.monotonic()

    def succeeded(self) -> None:
        self.failed_at = None

    def failing(self) -> bool:
        failed_at = self.failed_at
        return failed_at is not None and time.monotonic() - failed_at < self.WINDOW_SECONDS


def now_us() -> int:
    """Wall-clock now, in the stored form: integer microseconds since the epoch, UTC."""
    return time.time_ns() // 1000


def placeholders(start: int, count: int) -> str:
    """``$start, $start+1, …`` for an IN list of ``count`` values."""
    return ", ".join(f"${i}" for i in range(start, start + count))
