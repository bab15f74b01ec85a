"""Database access: one small async interface over SQLite (``sqlite3``) and PostgreSQL (asyncpg).

SQL is written once, in ``store.py``, with ``$1``-style parameters (asyncpg's own form); for
SQLite they become ``?1`` (SQLite's numbered form), so every statement runs unchanged on both.

SQLite: short indexed reads run directly on the event loop (microseconds each, far cheaper
than a hop to a thread), and the reads of one loop turn share one snapshot
(``ReaderContext``). Writes share one connection and are group-committed: each transaction
runs inside its own SAVEPOINT of a shared open transaction, and one COMMIT (with its fsync,
on a worker thread) makes a whole batch durable at once. A caller's ``transaction()`` only returns
after the COMMIT that contains its writes, so a ``201`` always means "on disk".

PostgreSQL: an asyncpg pool; each transaction is its own (PostgreSQL group-commits itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any, Protocol

from chatserver.config import database_scheme, sqlite_path
from chatserver.errors import Unavailable

Row = Sequence[Any]
log = logging.getLogger("chatserver")
# How often the WAL is copied back into the database file (see _checkpoint_forever).
CHECKPOINT_INTERVAL_SECONDS = 1.0
# A WAL with more frames than this after a checkpoint is restarted between two batches
# (see _restart_wal): 64 MiB with our 2 KiB pages.
RESTART_WAL_FRAMES = 32_768
# How long a restart waits for readers (of any process) to let go of the WAL, writes held.
RESTART_WAIT_MS = 50
PING_CONNECT_TIMEOUT_SECONDS = 1.0


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

    def read(self) -> Any: ...  # async context manager yielding a Conn
    def transaction(self) -> Any: ...  # async context manager yielding a Conn
    async def ping(self) -> None: ...
    async def close(self) -> None: ...


def now_us() -> int:
    """Wall-clock now, in the stored form: integer microseconds since the epoch, UTC."""
    return time.time_ns() // 1000


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy URL (with the driver we use) for a user-facing database URL."""
    if database_scheme(url) == "sqlite":
        return f"sqlite:///{sqlite_path(url)}"
    return "postgresql+asyncpg://" + url.split("://", 1)[1]


def asyncpg_dsn(url: str) -> str:
    """asyncpg wants the plain ``postgresql://`` form, whatever suffix the user gave."""
    return "postgresql://" + url.split("://", 1)[1]


async def open_database(url: str) -> Database:
    if database_scheme(url) == "sqlite":
        return SqliteDatabase(sqlite_path(url))
    return await PostgresDatabase.connect(asyncpg_dsn(url))


# ---------------------------------------------------------------- SQLite


class WriteLock:
    """An asyncio lock whose release wakes every waiter at once.

    ``asyncio.Lock`` wakes one waiter per release, and each wake-up waits for a turn of the
    event loop, with every other request's work in it. Behind a group commit dozens of
    writers queue, so the last one waited dozens of loop turns (measured: 30–150 ms).
    SQLite transaction bodies run their statements synchronously, so when the commit
    releases the lock, all the queued writers run one after another in a single loop turn.
    A waiter that finds the lock taken again (a body that did suspend) simply waits again.
    """

    def __init__(self) -> None:
        self._locked = False
        self._waiters: list[asyncio.Future[None]] = []

    async def __aenter__(self) -> None:
        while self._locked:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        self._locked = True

    async def __aexit__(self, *_: object) -> None:
        self.release()

    def take_free(self) -> None:
        """Take the lock without waiting; the caller knows it is free."""
        assert not self._locked, "the write lock is taken"
        self._locked = True

    def release(self) -> None:
        self._locked = False
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():  # a cancelled waiter is skipped
                waiter.set_result(None)


@lru_cache(maxsize=512)
def to_sqlite(sql: str) -> str:
    return re.sub(r"\$(\d+)", r"?\1", sql)


def sqlite_connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/SAVEPOINT/COMMIT ourselves.
    # cached_statements: IN-lists of varying length are distinct statements; the default
    # cache of 128 could let them push the hot ones out (a re-prepare costs more than a read).
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, cached_statements=512
    )
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: the WAL is fsynced at every COMMIT, so an acknowledged write survives power loss too.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class SqliteConn:
    """Runs statements synchronously: SQLite reads on an indexed table take microseconds."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def fetch_all(self, sql: str, *args: Any) -> list[Row]:
        return self._run(sql, args).fetchall()

    async def fetch_one(self, sql: str, *args: Any) -> Row | None:
        row: Row | None = self._run(sql, args).fetchone()
        return row

    async def fetch_val(self, sql: str, *args: Any) -> Any:
        row = self._run(sql, args).fetchone()
        return None if row is None else row[0]

    async def execute(self, sql: str, *args: Any) -> int:
        return self._run(sql, args).rowcount

    async def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self._conn.executemany(to_sqlite(sql), rows)

    def _run(self, sql: str, args: tuple[Any, ...]) -> sqlite3.Cursor:
        try:
            return self._conn.execute(to_sqlite(sql), args)
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                raise UniqueViolation(str(exc)) from exc
            raise
        except sqlite3.OperationalError as exc:  # locked past busy_timeout, I/O error, disk full
            raise Unavailable(f"The database cannot be used right now: {exc}") from exc


class ReaderContext:
    """``async with`` for the one shared read connection: the reads of one turn of the event
    loop share one read transaction (one snapshot).

    In autocommit mode every statement is a read transaction of its own, and each one
    takes and drops a read lock on the WAL index (two ``fcntl`` calls) and checks the
    database file's size (an ``fstat``): about 3 µs a statement, half of a short indexed
    read (measured). Here the first read of a turn opens the transaction and the start of
    the next turn ends it, so a busy loop pays that once for all the requests it serves in
    a turn (served, 4–10 % less CPU per read request, measured).

    It never hides a write anyone was told about. The end of a snapshot is queued when it
    opens; a writer's wake-up is queued only once its COMMIT is seen finished. So a
    snapshot older than the COMMIT has ended before the writer resumes to send its 201 or
    publish its events, and a request that arrives after that (from any process) is run
    after the end of every snapshot opened before it arrived: whoever knows of a write
    reads a snapshot taken after it. The reads of one request also agree with each other
    (a count and its page come from one snapshot). A snapshot lasts one turn, so it holds
    the WAL back from a checkpoint no longer than a long statement would.

    A class, not an ``asynccontextmanager``: every read route enters it, and a generator
    based one costs about 1 µs more a request (measured)."""

    __slots__ = ("_conn", "_open", "_raw")

    def __init__(self, conn: SqliteConn, raw: sqlite3.Connection) -> None:
        self._conn = conn
        self._raw = raw
        self._open = False

    async def __aenter__(self) -> SqliteConn:
        if not self._open:
            self._open = True
            if not self._raw.in_transaction:
                # Deferred: the snapshot is taken by the first SELECT, right after this.
                self._raw.execute("BEGIN")
            asyncio.get_running_loop().call_soon(self.end)
        return self._conn

    async def __aexit__(self, *_: object) -> None:
        return None

    def end(self) -> None:
        """End the turn's read transaction, if one is open (SQLite ends it itself on some
        errors)."""
        if not self._open:
            return
        self._open = False
        if self._raw.in_transaction:
            self._raw.execute("COMMIT")

    def close(self) -> None:
        self.end()
        self._raw.close()


class SqliteDatabase:
    """One read connection used on the loop, one write connection with group commit."""

    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        read_conn = sqlite_connect(path)
        self._reader = SqliteConn(read_conn)
        self._read_context = ReaderContext(self._reader, read_conn)
        self._write_conn = sqlite_connect(path)
        self._write_conn.execute("PRAGMA wal_autocheckpoint=0")  # see _checkpoint_forever
        self._writer = SqliteConn(self._write_conn)
        self._lock = WriteLock()
        self._writers = 0  # transactions entered and not yet out of the lock
        self._open = False  # BEGIN issued, COMMIT not yet
        self._batch: list[asyncio.Future[None]] = []  # writers waiting for the next COMMIT
        # The COMMIT in flight on the commit thread and the writers it answers, until answered.
        self._committing: tuple[Future[Any], list[asyncio.Future[None]]] | None = None
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chat-commit")
        self._checkpoint_conn = sqlite_connect(path)
        self._checkpoint_conn.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
        self._checkpointing: asyncio.Future[int] | None = None
        self._restart_due = False  # set by the checkpointer, done after the next COMMIT
        self._checkpointer = asyncio.get_running_loop().create_task(self._checkpoint_forever())

    def read(self) -> ReaderContext:
        self._answer_finished_commit()
        return self._read_context

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """A write transaction; returns once it is durably committed (or raises)."""
        self._writers += 1
        try:
            async with self._lock:
                if not self._open:
                    self._write_conn.execute("BEGIN IMMEDIATE")
                    self._open = True
                self._write_conn.execute("SAVEPOINT tx")
                try:
                    yield self._writer
                except BaseException:
                    self._write_conn.execute("ROLLBACK TO tx")
                    self._write_conn.execute("RELEASE tx")
                    raise
                self._write_conn.execute("RELEASE tx")
                committed = asyncio.get_running_loop().create_future()
                self._batch.append(committed)
        finally:
            self._writers -= 1
            self._after_writer()
        await committed

    def _after_writer(self) -> None:
        """The last writer out of the lock ends the batch: COMMIT, or ROLLBACK if all failed.

        Writers that queued for the lock while the previous COMMIT ran went in one after
        another, so a batch holds all of them. The COMMIT starts at once (measured: waiting
        for the end of the loop turn to gather more writers made batches larger but every
        writer's answer one loop turn later, and sent no more messages a second). The lock
        stays taken until the COMMIT is done; then the whole batch is answered at once.
        """
        if self._writers or not self._open:
            return
        self._open = False
        if not self._batch:  # every transaction in it failed and rolled back: end it now,
            self._write_conn.execute("ROLLBACK")  # an open BEGIN keeps other processes out
            return
        self._lock.take_free()  # no writer is in or waiting for it, and no COMMIT runs
        batch, self._batch = self._batch, []
        loop = asyncio.get_running_loop()
        done = self._committer.submit(self._write_conn.execute, "COMMIT")
        self._committing = (done, batch)
        last: Future[Any] = done
        if self._restart_due and self._checkpointing and self._checkpointing.done():
            # On the commit thread, after the COMMIT, still under the lock.
            self._restart_due = False
            last = self._committer.submit(self._restart_wal)
        last.add_done_callback(lambda _: loop.call_soon_threadsafe(self._end_batch))

    def _answer_finished_commit(self) -> None:
        """Answer the writers of a COMMIT that has finished, if not done yet.

        The commit thread's notice (``_end_batch``) reaches the loop only after every
        request already due in the loop's turn (measured under load: ~5 ms after a ~1 ms
        COMMIT), and the writers it wakes run a turn later still. Every read checks first,
        so on a busy node the writers are answered a whole loop turn sooner. The lock stays
        taken until the notice, so the writers arriving in this turn still queue and commit
        together (freed here, the next writer committed alone and the others queued behind
        it: measured on the mixed load, 7 % fewer requests, median latency up 40 %).
        """
        committing = self._committing
        if committing is None or not committing[0].done():
            return
        self._committing = None
        done, batch = committing
        try:
            done.result()
        except Exception as exc:  # disk full, I/O error: every writer in the batch fails
            if self._write_conn.in_transaction:
                self._write_conn.execute("ROLLBACK")
            failure = Unavailable(f"The database could not commit: {exc}")
            for future in batch:
                if not future.done():  # its writer may have been cancelled meanwhile
                    future.set_exception(failure)
        else:
            for future in batch:
                if not future.done():
                    future.set_result(None)

    def _end_batch(self) -> None:
        """The commit thread's notice: answer the batch unless a read did, free the lock."""
        try:
            self._answer_finished_commit()
        finally:
            self._lock.release()

    async def _checkpoint_forever(self) -> None:
        """Copy the WAL back into the database file in the background, on a connection and
        a thread of its own.

        SQLite's automatic checkpoint runs inside the COMMIT that crosses 1,000 WAL pages:
        that commit then also copies the pages and fsyncs the database file while every
        writer waits for it. A PASSIVE checkpoint on another connection blocks no reader and
        no writer; with ``synchronous=FULL`` it fsyncs the WAL before and the file after.
        Under a steady stream of writes it never catches up with the last COMMIT, so a WAL
        still large afterwards is restarted between two batches (``_restart_wal``).
        """
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL_SECONDS)
            try:
                if await self._passive_checkpoint() > RESTART_WAL_FRAMES:
                    # A second pass copies what was written during the first, so the
                    # restart, which holds the writers, has only a few frames left to copy.
                    await self._passive_checkpoint()
                    self._restart_due = True
            except sqlite3.Error as exc:  # busy or I/O trouble: the next round retries
                log.warning("WAL checkpoint failed: %s", exc)

    async def _passive_checkpoint(self) -> int:
        # Shielded: ``close`` waits for a running checkpoint instead of closing its
        # connection under the thread.
        self._checkpointing = asyncio.ensure_future(asyncio.to_thread(self._checkpoint))
        return await asyncio.shield(self._checkpointing)

    def _checkpoint(self) -> int:
        """A PASSIVE checkpoint; the number of frames in the WAL."""
        _, frames, _ = self._checkpoint_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(frames)

    def _restart_wal(self) -> None:
        """Copy the rest of the WAL into the file and make the next writer start it over.

        Run on the commit thread right after a COMMIT, with the write lock still held, so
        no frame is added meanwhile; it waits up to ``RESTART_WAIT_MS`` for readers to let
        go of the WAL (ours do at the end of the loop's turn), else the next round retries.
        Otherwise the WAL grows for as long as writes keep coming (measured: 480 MiB in 12 s
        of the mixed load; bounded here at ~64 MiB and a second of writes). Writers arriving
        meanwhile queue and commit together after it (measured: 7–16 ms, at most once a
        second; the send rate and p99 under load did not change beyond the run-to-run
        spread).
        """
        if self._write_conn.in_transaction:  # the COMMIT failed; the loop rolls it back
            return
        try:
            self._checkpoint_conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
        except sqlite3.Error as exc:  # the next round retries; no write depends on it
            log.warning("WAL restart failed: %s", exc)

    async def ping(self) -> None:
        await self._reader.fetch_val("SELECT 1")

    async def close(self) -> None:
        self._checkpointer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._checkpointer
        if self._checkpointing is not None:
            with contextlib.suppress(sqlite3.Error):
                await self._checkpointing
        # A batch whose COMMIT is due commits first; then the lock waits out a running one.
        await asyncio.gather(*self._batch, return_exceptions=True)
        async with self._lock:
            self._committer.shutdown()
            self._read_context.close()
            self._write_conn.close()
            self._checkpoint_conn.close()


# ---------------------------------------------------------------- PostgreSQL


class PgConn:
    """asyncpg connection behind the same interface."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def fetch_all(self, sql: str, *args: Any) -> list[Row]:
        rows: list[Row] = await self._guard(self._conn.fetch(sql, *args))
        return rows

    async def fetch_one(self, sql: str, *args: Any) -> Row | None:
        row: Row | None = await self._guard(self._conn.fetchrow(sql, *args))
        return row

    async def fetch_val(self, sql: str, *args: Any) -> Any:
        return await self._guard(self._conn.fetchval(sql, *args))

    async def execute(self, sql: str, *args: Any) -> int:
        status: str = await self._guard(self._conn.execute(sql, *args))
        count = status.rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0

    async def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        await self._guard(self._conn.executemany(sql, rows))

    @staticmethod
    async def _guard(awaitable: Any) -> Any:
        import asyncpg

        try:
            return await awaitable
        except asyncpg.UniqueViolationError as exc:
            raise UniqueViolation(str(exc)) from exc
        # InternalClientError: a connection the server dropped in the middle of a message
        # ("another operation is in progress"); the pool replaces it on release.
        except (
            OSError,
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,
        ) as exc:
            raise Unavailable("The database cannot be reached right now") from exc


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, pool: Any, dsn: str) -> None:
        self._pool = pool
        self._dsn = dsn

    @classmethod
    async def connect(cls, dsn: str) -> PostgresDatabase:
        import asyncpg

        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=20)
        return cls(pool, dsn)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Conn]:
        async with self._acquire() as conn:
            yield PgConn(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        async with self._acquire() as conn, conn.transaction():
            yield PgConn(conn)

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[Any]:
        import asyncpg

        try:
            connection = await self._pool.acquire()
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
            raise Unavailable("The database cannot be reached right now") from exc
        try:
            yield connection
        finally:
            await self._pool.release(connection)

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
            await PgConn._guard(self._select_one_on_new_connection())

    async def _select_one_on_new_connection(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self._dsn, timeout=PING_CONNECT_TIMEOUT_SECONDS)
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    async def close(self) -> None:
        await self._pool.close()


def placeholders(start: int, count: int) -> str:
    """``$start, $start+1, …`` for an IN list of ``count`` values."""
    return ", ".join(f"${i}" for i in range(start, start + count))
