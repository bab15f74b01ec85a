"""Bearer tokens (stored as their SHA-256), their use and their expiry."""

from __future__ import annotations

from typing import NamedTuple

from chatserver.db import Conn


class TokenRow(NamedTuple):
    id: int
    token_hash: str
    created_at: int
    last_used_at: int | None


async def insert_token(conn: Conn, user_id: int, token_hash: str, now: int) -> None:
    await conn.execute(
        "INSERT INTO tokens (user_id, token_hash, created_at) VALUES ($1, $2, $3)",
        user_id,
        token_hash,
        now,
    )


async def trim_tokens(conn: Conn, user_id: int, keep: int) -> list[str]:
    """Delete all but the user's ``keep`` newest tokens; the hashes of those deleted."""
    rows = await conn.fetch_all(
        "DELETE FROM tokens WHERE user_id = $1 AND id NOT IN"
        " (SELECT id FROM tokens WHERE user_id = $1 ORDER BY id DESC LIMIT $2)"
        " RETURNING token_hash",
        user_id,
        keep,
    )
    return [str(row[0]) for row in rows]


async def find_token_user(conn: Conn, token_hash: str, used_after: int = 0) -> int | None:
    """The user of a token last used (or, never used, created) after ``used_after`` µs.
    Joined with the user: a token issued by a login racing a deactivation is never valid."""
    value = await conn.fetch_val(
        "SELECT t.user_id FROM tokens t JOIN users u ON u.id = t.user_id"
        " WHERE t.token_hash = $1 AND coalesce(t.last_used_at, t.created_at) > $2"
        " AND u.deactivated_at IS NULL",
        token_hash,
        used_after,
    )
    return None if value is None else int(value)


async def list_tokens(conn: Conn, user_id: int, used_after: int) -> list[TokenRow]:
    """The user's live tokens, newest first."""
    rows = await conn.fetch_all(
        "SELECT id, token_hash, created_at, last_used_at FROM tokens WHERE user_id = $1"
        " AND coalesce(last_used_at, created_at) > $2 ORDER BY id DESC",
        user_id,
        used_after,
    )
    return [TokenRow(*row) for row in rows]


async def delete_token(conn: Conn, token_hash: str) -> None:
    await conn.execute("DELETE FROM tokens WHERE token_hash = $1", token_hash)


async def delete_token_of(conn: Conn, user_id: int, token_id: int) -> str | None:
    """Delete one of the user's tokens by id; its hash, or None when they have no such token."""
    value = await conn.fetch_val(
        "DELETE FROM tokens WHERE id = $1 AND user_id = $2 RETURNING token_hash",
        token_id,
        user_id,
    )
    return None if value is None else str(value)


async def delete_tokens_except(conn: Conn, user_id: int, keep_hash: str | None) -> list[str]:
    """Delete every token of the user but ``keep_hash``; the hashes of those deleted."""
    rows = await conn.fetch_all(
        "DELETE FROM tokens WHERE user_id = $1 AND token_hash <> $2 RETURNING token_hash",
        user_id,
        keep_hash or "",
    )
    return [str(row[0]) for row in rows]


async def set_tokens_used(conn: Conn, used: list[tuple[str, int]]) -> None:
    """last_used_at for many (token hash, time) pairs; only ever forward."""
    await conn.execute_many(
        "UPDATE tokens SET last_used_at = $2"
        " WHERE token_hash = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
        used,
    )


async def delete_tokens_unused_since(conn: Conn, cutoff: int) -> int:
    """Delete expired tokens (they are already refused); how many went."""
    return await conn.execute(
        "DELETE FROM tokens WHERE coalesce(last_used_at, created_at) <= $1", cutoff
    )
