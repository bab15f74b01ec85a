"""The health check's write: proof that a transaction can still be made durable."""

from __future__ import annotations

from chatserver.db import Conn


async def rewrite_schema_version(conn: Conn) -> None:
    """Rewrite the one-row migration table with its own value: a real write (a page to the
    WAL, a commit record) that changes nothing, so a full disk or a read-only database
    shows up here as it would for a send."""
    await conn.execute("UPDATE alembic_version SET version_num = version_num")
