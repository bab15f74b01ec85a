"""PostgreSQL: an asyncpg pool behind the ``Database`` interface.

Each transaction is its own (PostgreSQL group-commits by itself, with
``synchronous_commit=on``). asyncpg raises its own errors; ``errors.py`` says which become
``UniqueViolation`` and ``Unavailable``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg

from chatserver.db.errors import translate_asyncpg_error
from chatserver.db.interface import Conn, Row
from chatserver.errors import CommitUnknown, Unavailable
from chatserver.metrics import PG_POOL_WAIT as POOL_WAIT

log = logging.getLogger("chatserver")

T = TypeVar("T")
POOL_MIN_SIZE = 2
POOL_MAX_SIZE = 20
PING_CONNECT_TIMEOUT_SECONDS = 1.0


async def guarded(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable``, raising asyncpg's errors as the server's (see ``errors.py``)."""
    try:
        return await awaitable
    except Exception as exc:
        translated = translate_asyncpg_error(exc)
        if translated is None:
            raise
        raise translated from exc


async def _connected(acquire: Awaitable[T]) -> T:
    """A pooled connection; any refusal by the server while connecting (a database not
    accepting connections, not there, or a login refused) is Unavailable too: the request
    has done nothing yet, and the next may find the database back."""
    try:
        return await guarded(acquire)
    except asyncpg.PostgresError as exc:
        raise Unavailable(f"The database refused a connection: {exc}") from exc


async def _rollback(tx: Any) -> None:
    """Roll back; on a connection that is gone the server has already rolled back, and
    the error that brought us here is the one to report."""
    try:
        await tx.rollback()
    except Exception as exc:
        if translate_asyncpg_error(exc) is None:
            raise
        log.debug("rollback on a lost connection: %s", exc)


async def _commit(tx: Any) -> None:
    """COMMIT; a connection lost meanwhile leaves its outcome unknown (CommitUnknown)."""
    try:
        await tx.commit()
    except Exception as exc:
        translated = translate_asyncpg_error(exc)
        if translated is None:
            raise
        if isinstance(translated, Unavailable):
            raise CommitUnknown() from exc
        raise translated from exc


class PgConn:
    """An asyncpg connection behind the ``Conn`` interface."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def fetch_all(self, sql: str, *args: Any) -> list[Row]:
        rows: list[Row] = await guarded(self._conn.fetch(sql, *args))
        return rows

    async def fetch_one(self, sql: str, *args: Any) -> Row | None:
        row: Row | None = await guarded(self._conn.fetchrow(sql, *args))
        return row

    async def fetch_val(self, sql: str, *args: Any) -> Any:
        return await guarded(self._conn.fetchval(sql, *args))

    async def execute(self, sql: str, *args: Any) -> int:
        status: str = await guarded(self._conn.execute(sql, *args))
        count = status.rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0

    async def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        await guarded(self._conn.executemany(sql, rows))


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, pool: Any, dsn: str) -> None:
        self._pool = pool
        self._dsn = dsn

    @classmethod
    async def connect(cls, dsn: str) -> PostgresDatabase:
        pool = await asyncpg.create_pool(dsn, min_size=POOL_MIN_SIZE, max_size=POOL_MAX_SIZE)
        return cls(pool, dsn)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Conn]:
        async with self._acquire() as conn:
            yield PgConn(conn)

    def writes_failing(self) -> bool:
        """Never: every write PostgreSQL refuses as ``Unavailable`` is a connection it
        cannot make or keep, which the health check's own ping and write find — and stop
        finding the moment the server is back."""
        return False

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        async with self._acquire() as conn:
            tx = conn.transaction()
            await guarded(tx.start())
            try:
                yield PgConn(conn)
            except BaseException:
                await _rollback(tx)
                raise
            await _commit(tx)

    def pool_sizes(self) -> tuple[int, int]:
        """(connections open, of which idle), for the metrics."""
        return self._pool.get_size(), self._pool.get_idle_size()

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[Any]:
        started = time.perf_counter()
        connection = await _connected(self._pool.acquire())
        POOL_WAIT.observe(time.perf_counter() - started)
        try:
            yield connection
        finally:
            try:
                await self._pool.release(connection)
            except Exception as exc:  # a dead connection: the pool drops it; the answer stands
                log.debug("releasing a connection failed: %s", exc)

    async def ping(self) -> None:
        """``SELECT 1``; when a pooled connection fails, ask again on a new connection.

        Right after an outage (restart, failover, terminated backends) a pooled connection
        can still be one the server has dropped: it fails once before the pool replaces it,
        and a health check should report the database, not that connection."""
        try:
            async with self.read() as conn:
                await conn.fetch_val("SELECT 1")
        except Unavailable:
            await self._pool.expire_connections()  # its siblings are most likely stale too
            await guarded(self._select_one_on_new_connection())

    async def _select_one_on_new_connection(self) -> None:
        conn = await asyncpg.connect(self._dsn, timeout=PING_CONNECT_TIMEOUT_SECONDS)
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    async def close(self) -> None:
        await self._pool.close()
