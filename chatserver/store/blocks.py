"""Blocks (who blocked whom), and the reads typing and presence need that involve them."""

from __future__ import annotations

from typing import NamedTuple

from chatserver.db import Conn, placeholders


class BlockRow(NamedTuple):
    blocked_id: int
    since: int


async def insert_block(conn: Conn, blocker_id: int, blocked_id: int, now: int) -> bool:
    """Block; False when the block already existed (its ``since`` stays)."""
    added = await conn.execute(
        "INSERT INTO blocks (blocker_id, blocked_id, since) VALUES ($1, $2, $3)"
        " ON CONFLICT (blocker_id, blocked_id) DO NOTHING",
        blocker_id,
        blocked_id,
        now,
    )
    return added == 1


async def delete_block(conn: Conn, blocker_id: int, blocked_id: int) -> bool:
    """Unblock; False when there was no such block."""
    removed = await conn.execute(
        "DELETE FROM blocks WHERE blocker_id = $1 AND blocked_id = $2", blocker_id, blocked_id
    )
    return removed == 1


async def list_blocks(conn: Conn, blocker_id: int) -> list[BlockRow]:
    """Everyone the user blocks, the latest first."""
    rows = await conn.fetch_all(
        "SELECT blocked_id, since FROM blocks WHERE blocker_id = $1"
        " ORDER BY since DESC, blocked_id DESC",
        blocker_id,
    )
    return [BlockRow(*row) for row in rows]


async def blocks(conn: Conn, blocker_id: int, blocked_id: int) -> bool:
    """Whether ``blocker_id`` blocks ``blocked_id``: one primary-key probe (every send asks)."""
    found = await conn.fetch_val(
        "SELECT 1 FROM blocks WHERE blocker_id = $1 AND blocked_id = $2", blocker_id, blocked_id
    )
    return found is not None


async def blockers_among(conn: Conn, blocked_id: int, user_ids: list[int]) -> set[int]:
    """Which of ``user_ids`` block ``blocked_id`` (one index range, for a page of users)."""
    if not user_ids:
        return set()
    rows = await conn.fetch_all(
        "SELECT blocker_id FROM blocks WHERE blocked_id = $1"
        f" AND blocker_id IN ({placeholders(2, len(user_ids))})",
        blocked_id,
        *user_ids,
    )
    return {int(row[0]) for row in rows}


class TypingTarget(NamedTuple):
    """The user's conversation with a peer exists; whether the peer blocks the user."""

    blocked: bool


async def typing_target(conn: Conn, user_id: int, peer_id: int) -> TypingTarget | None:
    """The conversation (and block) a typing notice needs, in one statement; None when the
    user has no conversation with the peer."""
    row = await conn.fetch_one(
        "SELECT b.blocker_id FROM conversations c LEFT JOIN blocks b"
        " ON b.blocker_id = c.peer_id AND b.blocked_id = c.user_id"
        " WHERE c.user_id = $1 AND c.peer_id = $2",
        user_id,
        peer_id,
    )
    return None if row is None else TypingTarget(blocked=row[0] is not None)


async def presence_audience(conn: Conn, user_id: int) -> list[int]:
    """Everyone the user has a conversation with, except those the user blocks: who may
    see the user's presence. One index range over the user's conversations."""
    rows = await conn.fetch_all(
        "SELECT c.peer_id FROM conversations c WHERE c.user_id = $1 AND c.peer_id <> $1"
        " AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocker_id = $1"
        " AND b.blocked_id = c.peer_id)",
        user_id,
    )
    return [int(row[0]) for row in rows]
