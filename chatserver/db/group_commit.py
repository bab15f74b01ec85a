"""SQLite group commit: many write transactions made durable by one COMMIT.

Writes share one connection. Each transaction runs inside its own SAVEPOINT of a shared open
transaction, and one COMMIT (with its fsync, on a thread of its own) makes the whole batch
durable at once. A caller's ``transaction()`` only returns after the COMMIT that contains its
writes, so a ``201`` always means "on disk".
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from chatserver.db.errors import sqlite_commit_failed
from chatserver.db.interface import Conn, WriteHealth
from chatserver.errors import Unavailable
from chatserver.metrics import COMMIT_BATCH, COMMIT_SECONDS

# Asked when a COMMIT starts; returns a job to run on the commit thread right after it,
# while the writers are still held (the WAL restart, see checkpoint.py), or None.
AfterCommit = Callable[[], Callable[[], None] | None]
# Run on the commit thread just before each COMMIT, in the batch's transaction (the search
# index's new messages, see store/search.py); if it raises, the batch fails as a COMMIT would.
BeforeCommit = Callable[[sqlite3.Connection], None]


class WriteLock:
    """An asyncio lock whose release wakes every waiter at once.

    ``asyncio.Lock`` wakes one waiter per release, and each wake-up waits for a turn of the
    event loop, with every other request's work in it. Behind a group commit dozens of
    writers queue, so the last one would wait dozens of loop turns. SQLite transaction
    bodies run their statements synchronously, so when the commit releases the lock, all
    the queued writers run one after another in a single loop turn. A waiter that finds the
    lock taken again (a body that did suspend) simply waits again.
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


def _nothing_after_commit() -> None:
    return None


class GroupCommit:
    """Write transactions on one SQLite connection, group-committed.

    ``conn`` is the write connection (autocommit mode: this class issues BEGIN, SAVEPOINT
    and COMMIT itself) and ``writer`` the ``Conn`` that runs statements on it. The group
    commit owns both from here on, and the ``committer`` (one thread) that runs each COMMIT.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        writer: Conn,
        after_commit: AfterCommit = _nothing_after_commit,
        committer: Executor | None = None,
        before_commit: BeforeCommit | None = None,
    ) -> None:
        self._conn = conn
        self._writer = writer
        self._after_commit = after_commit
        self._before_commit = before_commit
        self._committer = committer or ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="chat-commit"
        )
        self._lock = WriteLock()
        self._writers = 0  # transactions entered and not yet out of the lock
        self._open = False  # BEGIN issued, COMMIT not yet
        self._batch: list[asyncio.Future[None]] = []  # writers waiting for the next COMMIT
        self._jobs: list[BeforeCommit] = []  # for the next COMMIT, after ``before_commit``
        # The COMMIT in flight on the commit thread and the writers it answers, until answered.
        self._committing: tuple[Future[Any], list[asyncio.Future[None]]] | None = None
        self._commit_started = 0.0
        self.commits = 0
        """How many COMMITs have been started, each for one batch of transactions."""
        self.health = WriteHealth()
        """Whether writes are failing: set by a failed COMMIT or statement, cleared by a
        COMMIT that succeeds (once per batch, not per writer)."""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """A write transaction; returns once it is durably committed (or raises)."""
        self._writers += 1
        try:
            async with self._lock:
                if not self._open:
                    self._conn.execute("BEGIN IMMEDIATE")
                    self._open = True
                self._conn.execute("SAVEPOINT tx")
                try:
                    yield self._writer
                except BaseException as exc:
                    self._conn.execute("ROLLBACK TO tx")
                    self._conn.execute("RELEASE tx")
                    if isinstance(exc, Unavailable):  # a full disk, an I/O error
                        self.health.failed()
                    raise
                self._conn.execute("RELEASE tx")
                committed = asyncio.get_running_loop().create_future()
                self._batch.append(committed)
        finally:
            self._writers -= 1
            self._after_writer()
        await committed

    async def at_next_commit(self, job: BeforeCommit) -> None:
        """Run ``job`` on the commit thread in the next batch's transaction, just before its
        COMMIT (after ``before_commit``); return once that COMMIT is done, or raise as its
        writers do. An empty transaction carries it when no writer comes."""
        self._jobs.append(job)
        async with self.transaction():
            pass

    def answer_finished_commit(self) -> None:
        """Answer the writers of a COMMIT that has finished, if nobody has yet.

        The commit thread's own notice (``_end_batch``) reaches the loop only after every
        request already due in the loop's turn, and the writers it wakes run a turn later
        still. Code that runs often on the loop (every SQLite read does) calls this first,
        so on a busy node the writers are answered a whole loop turn sooner. It only checks
        a finished future: cheap, and a no-op when no COMMIT has finished.

        The lock stays taken until the notice, so the writers arriving in this turn still
        queue and commit together: freeing it here would let the next writer commit alone
        and the others queue behind it (fewer, smaller batches).
        """
        committing = self._committing
        if committing is None or not committing[0].done():
            return
        self._committing = None
        done, batch = committing
        COMMIT_SECONDS.observe(time.perf_counter() - self._commit_started)
        try:
            done.result()
        except Exception as exc:  # disk full, I/O error: every writer in the batch fails
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            failure = sqlite_commit_failed(exc)
            self.health.failed()
            for future in batch:
                if not future.done():  # its writer may have been cancelled meanwhile
                    future.set_exception(failure)
        else:
            self.health.succeeded()
            for future in batch:
                if not future.done():
                    future.set_result(None)

    async def close(self) -> None:
        """Commit a batch still due, wait out a running COMMIT, close the connection."""
        await asyncio.gather(*self._batch, return_exceptions=True)
        async with self._lock:
            self._committer.shutdown()
            self._conn.close()

    def _after_writer(self) -> None:
        """The last writer out of the lock ends the batch: COMMIT, or ROLLBACK if all failed.

        Writers that queued for the lock while the previous COMMIT ran went in one after
        another, so a batch holds all of them. The COMMIT starts at once: waiting for the
        end of the loop turn to gather more writers makes batches larger but answers every
        writer a loop turn later. The lock stays taken until the COMMIT is done; then the
        whole batch is answered at once.
        """
        if self._writers or not self._open:
            return
        self._open = False
        if not self._batch:  # every transaction in it failed and rolled back: end it now,
            self._conn.execute("ROLLBACK")  # an open BEGIN keeps other processes out
            return
        self._lock.take_free()  # no writer is in or waiting for it, and no COMMIT runs
        batch, self._batch = self._batch, []
        jobs, self._jobs = self._jobs, []
        loop = asyncio.get_running_loop()
        self._commit_started = time.perf_counter()
        done = self._committer.submit(self._commit, jobs)
        self.commits += 1
        COMMIT_BATCH.observe(len(batch))
        self._committing = (done, batch)
        last: Future[Any] = done
        job = self._after_commit()
        if job is not None:  # on the commit thread, after the COMMIT, still under the lock
            last = self._committer.submit(self._unless_commit_failed, job)
        last.add_done_callback(lambda _: loop.call_soon_threadsafe(self._end_batch))

    def _commit(self, jobs: list[BeforeCommit]) -> None:
        """On the commit thread: the work due before every COMMIT and this one's jobs, then
        the COMMIT."""
        if self._before_commit is not None:
            self._before_commit(self._conn)
        for job in jobs:
            job(self._conn)
        self._conn.execute("COMMIT")

    def _unless_commit_failed(self, job: Callable[[], None]) -> None:
        if not self._conn.in_transaction:  # else the COMMIT failed; the loop rolls it back
            job()

    def _end_batch(self) -> None:
        """The commit thread's notice: answer the batch unless someone did, free the lock."""
        try:
            self.answer_finished_commit()
        finally:
            self._lock.release()
