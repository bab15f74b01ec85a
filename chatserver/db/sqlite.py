"""SQLite: connections, the per-turn read snapshot, and ``SqliteDatabase``, which puts them
together with the group commit (``group_commit.py``) and the checkpointer (``checkpoint.py``).

Short indexed reads run directly on the event loop (microseconds each, far cheaper than a
hop to a thread), and the reads of one loop turn share one snapshot (``ReaderContext``).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from contextlib import AbstractAsyncContextManager
from functools import lru_cache
from typing import Any

from chatserver.db.checkpoint import CHECKPOINT_INTERVAL_SECONDS, RESTART_WAL_FRAMES, Checkpointer
from chatserver.db.errors import translate_sqlite_error
from chatserver.db.group_commit import BeforeCommit, GroupCommit
from chatserver.db.interface import Conn, Row


@lru_cache(maxsize=512)
def to_sqlite(sql: str) -> str:
    """``$1`` parameters (asyncpg's form, the one ``store/`` writes) as ``?1`` (SQLite's)."""
    return re.sub(r"\$(\d+)", r"?\1", sql)


def sqlite_connect(path: str) -> sqlite3.Connection:
    """A connection with the settings every connection of the server uses."""
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
        except sqlite3.Error as exc:
            translated = translate_sqlite_error(exc)
            if translated is None:
                raise
            raise translated from exc


class ReaderContext:
    """``async with`` for the one shared read connection: the reads of one turn of the event
    loop share one read transaction (one snapshot).

    In autocommit mode every statement is a read transaction of its own, and each one
    takes and drops a read lock on the WAL index (two ``fcntl`` calls) and checks the
    database file's size (an ``fstat``), a large share of a short indexed read. Here the
    first read of a turn opens the transaction and the start of the next turn ends it, so a
    busy loop pays that once for all the requests it serves in a turn.

    It never hides a write anyone was told about. The end of a snapshot is queued when it
    opens; a writer's wake-up is queued only once its COMMIT is seen finished. So a
    snapshot older than the COMMIT has ended before the writer resumes to send its 201 or
    publish its events, and a request that arrives after that (from any process) is run
    after the end of every snapshot opened before it arrived: whoever knows of a write
    reads a snapshot taken after it. The reads of one request also agree with each other
    (a count and its page come from one snapshot). A snapshot lasts one turn, so it holds
    the WAL back from a checkpoint no longer than a long statement would.

    A class, not an ``asynccontextmanager``: every read route enters it, and a generator
    based one costs more per request."""

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
    """One read connection used on the loop, one write connection with group commit, one
    checkpointing connection. Must be created on a running event loop."""

    dialect = "sqlite"

    def __init__(
        self,
        path: str,
        *,
        checkpoint_interval: float = CHECKPOINT_INTERVAL_SECONDS,
        restart_wal_frames: int = RESTART_WAL_FRAMES,
        before_commit: BeforeCommit | None = None,
    ) -> None:
        read_conn = sqlite_connect(path)
        self._reader = SqliteConn(read_conn)
        self._read_context = ReaderContext(self._reader, read_conn)
        self._checkpointer = Checkpointer(
            sqlite_connect(path), checkpoint_interval, restart_wal_frames
        )
        write_conn = sqlite_connect(path)
        write_conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer does it instead
        self._writes = GroupCommit(
            write_conn,
            SqliteConn(write_conn),
            after_commit=self._checkpointer.due_restart,
            before_commit=before_commit,
        )
        self._checkpointer.start()

    def read(self) -> ReaderContext:
        """This loop turn's read snapshot.

        Before handing it out, it answers the writers of a group COMMIT that has finished
        (``GroupCommit.answer_finished_commit``): the commit thread's own notice waits
        behind every request already due in the loop's turn, and reads are what a busy
        node runs most often, so writers resume a loop turn sooner. It is a check of one
        future, cheap enough for every read. A read never waits for a write."""
        self._writes.answer_finished_commit()
        return self._read_context

    def writes_failing(self) -> bool:
        return self._writes.health.failing()

    def transaction(self) -> AbstractAsyncContextManager[Conn]:
        """A write transaction, group-committed; returns once it is on disk (or raises).

        The group commit's own context manager, not a wrapper: every send enters it."""
        return self._writes.transaction()

    async def at_next_commit(self, job: BeforeCommit) -> None:
        """Run ``job`` on the commit thread in the next group COMMIT's transaction (work
        too long for the event loop's thread: it holds the writers, not the readers)."""
        await self._writes.at_next_commit(job)

    @property
    def commits(self) -> int:
        """How many group COMMITs this database has started."""
        return self._writes.commits

    async def checkpoint(self) -> int:
        """Run a checkpoint round now (the background task runs one every interval); the
        number of frames the WAL held."""
        return await self._checkpointer.checkpoint()

    async def ping(self) -> None:
        await self._reader.fetch_val("SELECT 1")

    async def close(self) -> None:
        await self._checkpointer.stop()
        await self._writes.close()
        self._read_context.close()
        self._checkpointer.close()
