"""Idempotency-Keys: the first response to a request, by sender and key."""

from __future__ import annotations

from dataclasses import dataclass

from chatserver.db import Conn

# ---------------------------------------------------------------- idempotency keys


@dataclass(frozen=True, slots=True)
class StoredResponse:
    request_hash: str
    status: int
    body: str


async def get_idempotent_response(conn: Conn, sender_id: int, key: str) -> StoredResponse | None:
    row = await conn.fetch_one(
        "SELECT request_hash, status, response FROM idempotency_keys"
        " WHERE sender_id = $1 AND key = $2",
        sender_id,
        key,
    )
    return None if row is None else StoredResponse(*row)


async def insert_idempotent_response(
    conn: Conn,
    sender_id: int,
    key: str,
    response: StoredResponse,
    now: int,
    message_id: int | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO idempotency_keys (sender_id, key, request_hash, status, response, created_at,"
        " message_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        sender_id,
        key,
        response.request_hash,
        response.status,
        response.body,
        now,
        message_id,
    )


async def rewrite_idempotent_responses(conn: Conn, message_id: int, body: str) -> None:
    """Every stored response holding this message now holds ``body`` (its current state:
    an edit or a deletion leaves no copy of the old text behind)."""
    await conn.execute(
        "UPDATE idempotency_keys SET response = $2 WHERE message_id = $1", message_id, body
    )


async def delete_idempotency_keys_before(conn: Conn, cutoff: int) -> int:
    return await conn.execute("DELETE FROM idempotency_keys WHERE created_at < $1", cutoff)
