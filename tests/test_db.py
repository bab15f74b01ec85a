"""chatserver.db: transactions on both engines, SQLite's group commit, read snapshots and WAL
checkpoints, and which driver errors become the server's. Public methods only."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from chatserver.config import sqlite_path
from chatserver.db import (
    Conn,
    Database,
    SqliteConn,
    SqliteDatabase,
    UniqueViolation,
    open_database,
)
from chatserver.db.errors import translate_asyncpg_error, translate_sqlite_error
from chatserver.db.group_commit import GroupCommit
from chatserver.db.sqlite import sqlite_connect
from chatserver.errors import Unavailable
from chatserver.migrations import upgrade


async def migrate(url: str) -> None:
    # Alembic's env runs its own event loop for PostgreSQL, so migrate from a thread.
    await asyncio.to_thread(upgrade, url)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A migrated database on each engine, opened as the app opens it."""
    await migrate(database_url)
    database = await open_database(database_url)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def sqlite_db(sqlite_url: str) -> AsyncIterator[SqliteDatabase]:
    """A migrated SQLite database, opened as the app opens it, closed after the test."""
    await migrate(sqlite_url)
    database = await open_database(sqlite_url)
    assert isinstance(database, SqliteDatabase)
    try:
        yield database
    finally:
        await database.close()


@asynccontextmanager
async def quiet_sqlite_db(sqlite_url: str, **options: float) -> AsyncIterator[SqliteDatabase]:
    """A migrated SQLite database whose background checkpointer waits an hour (or as told),
    so the test decides when a checkpoint runs."""
    await migrate(sqlite_url)
    database = SqliteDatabase(sqlite_path(sqlite_url), **{"checkpoint_interval": 3600, **options})
    try:
        yield database
    finally:
        await database.close()


@asynccontextmanager
async def other_connection(sqlite_url: str) -> AsyncIterator[sqlite3.Connection]:
    """A second connection to the file, as another process would have (no busy wait)."""
    other = sqlite3.connect(sqlite_path(sqlite_url), timeout=0, isolation_level=None)
    try:
        yield other
    finally:
        other.close()


async def insert_user(conn: Conn, name: str) -> None:
    await conn.execute(
        "INSERT INTO users (username, username_key, email, email_key, password_hash,"
        " date_joined) VALUES ($1, $1, $2, $2, 'x', 0)",
        name,
        f"{name}@example.com",
    )


async def write_user(db: Database, name: str) -> None:
    """One write transaction that inserts one user."""
    async with db.transaction() as conn:
        await insert_user(conn, name)


async def count_users(db: Database) -> int:
    async with db.read() as conn:
        return int(await conn.fetch_val("SELECT count(*) FROM users"))


async def user_names(db: Database) -> set[str]:
    async with db.read() as conn:
        return {row[0] for row in await conn.fetch_all("SELECT username FROM users")}


async def turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


# ---------------------------------------------------------------- both engines


async def test_a_committed_transaction_is_seen_by_the_next_read(db: Database) -> None:
    async with db.transaction() as conn:
        await insert_user(conn, "alice")
        assert await conn.execute("UPDATE users SET password_hash = 'y'") == 1
    assert await user_names(db) == {"alice"}
    await db.ping()


async def test_a_transaction_that_raises_leaves_nothing_and_spares_the_others(
    db: Database,
) -> None:
    """On SQLite the failing transaction shares its batch with the others (it held the write
    lock while they queued): only its own savepoint is rolled back."""
    holding, release = asyncio.Event(), asyncio.Event()

    async def failing_write() -> None:
        async with db.transaction() as conn:
            await insert_user(conn, "ghost")
            holding.set()
            await release.wait()
            raise RuntimeError("the body failed")

    failing = asyncio.create_task(failing_write())
    await holding.wait()
    others = [asyncio.create_task(write_user(db, f"user{n}")) for n in range(3)]
    await turns(5)
    release.set()
    async with asyncio.timeout(10):
        with pytest.raises(RuntimeError):
            await failing
        await asyncio.gather(*others)
    assert await user_names(db) == {"user0", "user1", "user2"}


async def test_a_unique_constraint_raises_unique_violation_on_both_engines(db: Database) -> None:
    await write_user(db, "alice")
    with pytest.raises(UniqueViolation):
        await write_user(db, "alice")
    await write_user(db, "bob")  # the database is free to write after it
    assert await user_names(db) == {"alice", "bob"}


async def test_a_cancelled_writer_does_not_stall_the_others(db: Database) -> None:
    """A request cancelled while its commit is in flight (a client that hung up) must not
    leave the other writers (on SQLite, of the same group commit) waiting forever."""
    writers = [asyncio.create_task(write_user(db, f"user{n}")) for n in range(3)]
    await asyncio.sleep(0)  # each writer runs up to waiting for its COMMIT
    writers[0].cancel()
    async with asyncio.timeout(10):
        await asyncio.gather(*writers[1:])
    assert await count_users(db) >= 2


# ---------------------------------------------------------------- SQLite: connections


def test_every_sqlite_connection_is_durable_wal_with_foreign_keys(tmp_path: Path) -> None:
    """``synchronous=FULL``: the WAL is fsynced at every COMMIT, so a 201 survives power loss."""
    conn = sqlite_connect(str(tmp_path / "chat.db"))
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
        assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
    finally:
        conn.close()


# ---------------------------------------------------------------- SQLite: group commit


async def test_writers_queued_behind_a_commit_share_the_next_one(sqlite_db: SqliteDatabase) -> None:
    """Group commit: the first writer commits at once; the writers that queued for the lock
    meanwhile are made durable together by one COMMIT, not one each."""
    before = sqlite_db.commits
    async with asyncio.timeout(10):
        await asyncio.gather(*(write_user(sqlite_db, f"user{n}") for n in range(20)))
    assert await count_users(sqlite_db) == 20
    assert sqlite_db.commits - before <= 2  # the first alone, then all the others at once


async def test_answering_a_finished_commit_resumes_its_writers_before_the_notice(
    tmp_path: Path,
) -> None:
    """The commit thread's notice waits behind the work already due in the loop's turn;
    ``answer_finished_commit`` (which every SQLite read calls) answers the writers of a
    finished COMMIT at once, so they resume in the very next step instead of after it."""
    conn = sqlite_connect(str(tmp_path / "chat.db"))
    conn.execute("CREATE TABLE t (x INTEGER)")
    committer = ThreadPoolExecutor(max_workers=1)
    group = GroupCommit(conn, SqliteConn(conn), committer=committer)

    async def write() -> None:
        async with group.transaction() as writer:
            await writer.execute("INSERT INTO t VALUES (1)")

    task = asyncio.create_task(write())
    await asyncio.sleep(0)  # the writer runs its transaction, and its COMMIT starts
    assert group.commits == 1
    # Block the loop until the commit thread is idle: the notice is now queued behind us.
    committer.submit(lambda: None).result(timeout=10)
    group.answer_finished_commit()
    await asyncio.sleep(0)
    assert task.done()
    await task
    await group.close()


async def test_a_writer_cancelled_while_queued_does_not_stall_the_batch(
    sqlite_db: SqliteDatabase,
) -> None:
    """The last writer out of the lock starts the COMMIT; a queued writer that is cancelled
    instead must not leave the writers before it waiting for a COMMIT nobody starts."""
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold_write() -> None:
        async with sqlite_db.transaction() as conn:
            await insert_user(conn, "first")
            holding.set()
            await release.wait()

    first = asyncio.create_task(hold_write())
    await holding.wait()
    queued = asyncio.create_task(write_user(sqlite_db, "queued"))
    await asyncio.sleep(0)  # queued now waits for the write lock
    queued.cancel()
    release.set()
    async with asyncio.timeout(10):
        await first
    assert await count_users(sqlite_db) == 1


async def test_a_failed_sqlite_transaction_leaves_the_database_free_to_write(
    sqlite_db: SqliteDatabase, sqlite_url: str
) -> None:
    """A lone transaction that raises rolls its batch back at once: an open BEGIN would keep
    every other connection (another worker process) from writing."""

    async def failing_write() -> None:
        async with sqlite_db.transaction() as conn:
            await insert_user(conn, "ghost")
            raise RuntimeError("the body failed")

    with pytest.raises(RuntimeError):
        await failing_write()
    async with other_connection(sqlite_url) as other:
        other.execute("BEGIN IMMEDIATE")  # 'database is locked' if the batch were open
        other.execute("ROLLBACK")
    assert await count_users(sqlite_db) == 0


async def test_a_failed_commit_fails_every_writer_of_its_batch_and_keeps_nothing(
    sqlite_db: SqliteDatabase,
) -> None:
    """A COMMIT that fails (here a deferred foreign key, standing in for a full disk) answers
    each writer of its batch with Unavailable, rolls the batch back, and the next batch
    commits normally."""
    holding, release = asyncio.Event(), asyncio.Event()

    async def dangling_write() -> None:
        async with sqlite_db.transaction() as conn:
            await conn.execute("PRAGMA defer_foreign_keys=ON")  # checked only at COMMIT
            await conn.execute(
                "INSERT INTO tokens (user_id, token_hash, created_at) VALUES (999, 'h', 0)"
            )
            holding.set()
            await release.wait()

    dangling = asyncio.create_task(dangling_write())
    await holding.wait()
    others = [asyncio.create_task(write_user(sqlite_db, f"user{n}")) for n in range(2)]
    await turns(5)  # they queue for the lock, so they join the dangling write's batch
    release.set()
    async with asyncio.timeout(10):
        results = await asyncio.gather(dangling, *others, return_exceptions=True)
    assert all(isinstance(result, Unavailable) for result in results), results
    assert await count_users(sqlite_db) == 0
    await write_user(sqlite_db, "after")
    assert await user_names(sqlite_db) == {"after"}


async def test_a_sqlite_transaction_that_suspends_keeps_other_writers_out(
    sqlite_db: SqliteDatabase,
) -> None:
    """Queued writers are woken all at once after a commit; one that finds the write lock
    taken again (by a transaction waiting on something) must wait, not interleave."""
    holding, release = asyncio.Event(), asyncio.Event()
    inside: list[str] = []

    async def write(name: str, hold: bool) -> None:
        async with sqlite_db.transaction() as conn:
            inside.append(name)
            await insert_user(conn, name)
            if hold:
                holding.set()
                await release.wait()
            inside.remove(name)

    first = asyncio.create_task(write("first", hold=True))
    await holding.wait()
    others = [asyncio.create_task(write(f"user{n}", hold=False)) for n in range(3)]
    await turns(10)
    assert inside == ["first"]
    release.set()
    async with asyncio.timeout(10):
        await asyncio.gather(first, *others)
    assert await count_users(sqlite_db) == 4


# ---------------------------------------------------------------- SQLite: read snapshots


async def test_the_reads_of_one_loop_turn_share_a_snapshot_and_the_next_turn_sees_new_writes(
    sqlite_db: SqliteDatabase, sqlite_url: str
) -> None:
    """Reads share one read transaction per turn of the event loop (one lock and size
    check instead of one per statement); a write committed meanwhile, here by another
    process, is seen from the next turn on."""
    async with other_connection(sqlite_url) as other:
        assert await count_users(sqlite_db) == 0
        await insert_user(SqliteConn(other), "elsewhere")  # committed at once (autocommit)
        assert await count_users(sqlite_db) == 0  # the same turn, the same snapshot
        await asyncio.sleep(0)
        assert await count_users(sqlite_db) == 1


async def test_a_turns_read_snapshot_does_not_outlive_the_turn(
    sqlite_db: SqliteDatabase, sqlite_url: str
) -> None:
    """A snapshot held on would keep the WAL from being checkpointed and reset; the next
    turn ends it, so a full checkpoint that the snapshot blocks succeeds after it."""
    await write_user(sqlite_db, "someone")  # a frame in the WAL
    async with other_connection(sqlite_url) as other:
        assert await count_users(sqlite_db) == 1
        busy, _, _ = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 1  # the open snapshot still reads the WAL
        await asyncio.sleep(0)
        assert other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone() == (0, 0, 0)


# ---------------------------------------------------------------- SQLite: checkpoints


def file_size(sqlite_url: str, suffix: str = "") -> int:
    return Path(sqlite_path(sqlite_url) + suffix).stat().st_size


async def write_big_users(db: Database, count: int, prefix: str = "user") -> None:
    """``count`` users with long names: each fills a good part of a page."""
    for n in range(count):
        await write_user(db, f"{prefix}{n}-" + "x" * 600)


async def test_commits_leave_checkpoints_to_the_checkpointer(sqlite_url: str) -> None:
    """No COMMIT copies the WAL into the database file (each writer would wait for it);
    a checkpoint round does, and reports the frames the WAL held."""
    async with quiet_sqlite_db(sqlite_url) as db:
        before = file_size(sqlite_url)
        await write_big_users(db, 100)
        assert file_size(sqlite_url) == before
        assert await db.checkpoint() > 0
        assert file_size(sqlite_url) > before
        assert await count_users(db) == 100


async def test_the_checkpointer_runs_in_the_background(sqlite_url: str) -> None:
    async with quiet_sqlite_db(sqlite_url, checkpoint_interval=0.02) as db:
        before = file_size(sqlite_url)
        await write_big_users(db, 100)
        for _ in range(500):  # up to 10 s
            if file_size(sqlite_url) > before:
                break
            await asyncio.sleep(0.02)
        assert file_size(sqlite_url) > before


async def test_a_large_wal_is_started_over_between_two_batches(sqlite_url: str) -> None:
    """SQLite starts the WAL over only when a writer finds it wholly copied back and no
    reader in it; under a steady stream of writes that moment never comes and the file
    grows without end. When a checkpoint round finds the WAL large (here: any WAL), the
    next batch is followed by a checkpoint that holds the writers back until the WAL can
    start over: the batches after it overwrite the file instead of growing it."""
    async with quiet_sqlite_db(sqlite_url, restart_wal_frames=0) as db:
        await write_big_users(db, 30)
        async with other_connection(sqlite_url) as reader:
            reader.execute("BEGIN")  # another process, reading: it holds the WAL
            reader.execute("SELECT count(*) FROM users").fetchone()
            await write_user(db, "appended")  # not copied back: the reader's snapshot is older
            assert await db.checkpoint() > 0  # finds the WAL large: a restart is due
            reader.execute("COMMIT")
        await write_user(db, "the last one appended")  # then the restart
        grown = file_size(sqlite_url, "-wal")
        await write_big_users(db, 20, prefix="later")
        assert file_size(sqlite_url, "-wal") == grown
        assert await count_users(db) == 52


async def test_without_a_restart_the_wal_keeps_growing(sqlite_url: str) -> None:
    """The control for the test above: the same writes with no restart due grow the WAL."""
    async with quiet_sqlite_db(sqlite_url) as db:
        await write_big_users(db, 30)
        async with other_connection(sqlite_url) as reader:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM users").fetchone()
            await write_user(db, "appended")
            await db.checkpoint()  # a small WAL: no restart
            reader.execute("COMMIT")
        await write_user(db, "the last one appended")
        grown = file_size(sqlite_url, "-wal")
        await write_big_users(db, 20, prefix="later")
        assert file_size(sqlite_url, "-wal") > grown


# ---------------------------------------------------------------- error mapping


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (sqlite3.IntegrityError("UNIQUE constraint failed: users.username_key"), UniqueViolation),
        (sqlite3.IntegrityError("FOREIGN KEY constraint failed"), None),
        (sqlite3.OperationalError("database is locked"), Unavailable),
        (sqlite3.OperationalError("disk I/O error"), Unavailable),
        (sqlite3.ProgrammingError("Cannot operate on a closed database."), None),
    ],
)
def test_which_sqlite_errors_become_the_servers(
    error: sqlite3.Error, expected: type[Exception] | None
) -> None:
    translated = translate_sqlite_error(error)
    if expected is None:
        assert translated is None
    else:
        assert isinstance(translated, expected)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (asyncpg.UniqueViolationError("duplicate key"), UniqueViolation),
        (asyncpg.ForeignKeyViolationError("no such user"), None),
        (ConnectionRefusedError(), Unavailable),
        (asyncpg.ConnectionDoesNotExistError("closed"), Unavailable),
        (asyncpg.InterfaceError("pool is closing"), Unavailable),
        (asyncpg.InternalClientError("another operation is in progress"), Unavailable),
        (asyncpg.UndefinedColumnError("no such column"), None),
    ],
)
def test_which_asyncpg_errors_become_the_servers(
    error: Exception, expected: type[Exception] | None
) -> None:
    translated = translate_asyncpg_error(error)
    if expected is None:
        assert translated is None
    else:
        assert isinstance(translated, expected)
