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
    conn: Conn, sender_id: int, key: str, response: StoredResponse, now: int
) -> None:
    await conn.execute(
        "INSERT INTO idempotency_keys (sender_id, key, request_hash, status, response, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        sender_id,
        key,
        response.request_hash,
        response.status,
        response.body,
        now,
    )


async def delete_idempotency_keys_before(conn: Conn, cutoff: int) -> int:
    return await conn.execute("DELETE FROM idempotency_keys WHERE created_at < $1", cutoff)
