"""Alembic environment: one set of migrations for SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection, create_engine, pool, text
from sqlalchemy.ext.asyncio import create_async_engine

from chatserver.db import sqlalchemy_url
from chatserver.models import metadata

MIGRATION_LOCK = 0x63686174  # any constant shared by every node: "chat"
# A page is what a write copies into SQLite's WAL. A send changes one entry in each of five
# indexes, each on a page of its own; at 2 KiB instead of the default 4 KiB a group commit
# writes (and fsyncs) fewer bytes, so each commit is quicker.
# SQLite takes it only while the file is empty, so it applies to new databases.
SQLITE_PAGE_SIZE = 2048


def run_with(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Nodes starting together take turns: the lock lasts until this transaction
            # (which holds all of PostgreSQL's DDL) commits, and the next one finds head.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


async def run_async(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(run_with)
    await engine.dispose()


def run_online() -> None:
    url = sqlalchemy_url(context.config.attributes["database_url"])
    if url.startswith("sqlite"):
        engine = create_engine(url, poolclass=pool.NullPool)
        with engine.connect() as connection:
            connection.exec_driver_sql(f"PRAGMA page_size = {SQLITE_PAGE_SIZE}")
            connection.commit()  # ends the autobegun transaction: migrations run in their own
            run_with(connection)
        engine.dispose()
    else:
        asyncio.run(run_async(url))


run_online()
