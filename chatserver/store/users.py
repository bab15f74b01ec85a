"""Users and their counters, tokens."""

from __future__ import annotations

from typing import NamedTuple

from chatserver.db import Conn, Row, placeholders

# ---------------------------------------------------------------- users

USER_COLUMNS = (
    "id, username, email, password_hash, date_joined, last_seen_at, received_count, unread_count"
)


class UserRow(NamedTuple):
    id: int
    username: str
    email: str
    password_hash: str
    date_joined: int
    last_seen_at: int | None
    received_count: int
    unread_count: int


def _user(row: Row | None) -> UserRow | None:
    return None if row is None else UserRow(*row)


async def insert_user(
    conn: Conn,
    username: str,
    email: str,
    password_hash: str,
    keys: tuple[str, str],
    now: int,
    skeleton: str | None = None,
) -> UserRow:
    """Insert a user; raises UniqueViolation when the username, its skeleton (see
    usernames.py) or the email key is taken."""
    row = await conn.fetch_one(
        "INSERT INTO users (username, username_key, email, email_key, password_hash,"
        " date_joined, username_skeleton) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        f" RETURNING {USER_COLUMNS}",
        username,
        keys[0],
        email,
        keys[1],
        password_hash,
        now,
        skeleton,
    )
    assert row is not None
    return UserRow(*row)


# Deactivated accounts are left out of every look-up the API makes: to other users they
# look deleted until reactivated (the command line reads them through store/admin.py).
ACTIVE = "deactivated_at IS NULL"


async def get_user(conn: Conn, user_id: int) -> UserRow | None:
    sql = f"SELECT {USER_COLUMNS} FROM users WHERE id = $1 AND {ACTIVE}"
    return _user(await conn.fetch_one(sql, user_id))


async def get_users(conn: Conn, user_ids: list[int]) -> list[UserRow]:
    """The users with these ids that exist, in no particular order."""
    if not user_ids:
        return []
    ids = placeholders(1, len(user_ids))
    sql = f"SELECT {USER_COLUMNS} FROM users WHERE id IN ({ids}) AND {ACTIVE}"
    return [UserRow(*row) for row in await conn.fetch_all(sql, *user_ids)]


async def find_user_by_username(conn: Conn, username_key: str) -> UserRow | None:
    sql = f"SELECT {USER_COLUMNS} FROM users WHERE username_key = $1 AND {ACTIVE}"
    return _user(await conn.fetch_one(sql, username_key))


async def find_user_by_login(
    conn: Conn, username_key: str, email_key: str | None = None
) -> UserRow | None:
    """The active user whose username key or email key (default: the same) matches."""
    sql = (
        f"SELECT {USER_COLUMNS} FROM users WHERE (username_key = $1 OR email_key = $2) AND {ACTIVE}"
    )
    return _user(await conn.fetch_one(sql, username_key, email_key or username_key))


async def username_taken(conn: Conn, username_key: str) -> bool:
    """Whether any account, deactivated ones included, has this username."""
    sql = "SELECT 1 FROM users WHERE username_key = $1"
    return await conn.fetch_val(sql, username_key) is not None


async def find_user_by_skeleton(conn: Conn, skeleton: str) -> UserRow | None:
    """Any account (deactivated ones included) whose name has this UTS #39 skeleton."""
    sql = f"SELECT {USER_COLUMNS} FROM users WHERE username_skeleton = $1"
    return _user(await conn.fetch_one(sql, skeleton))


async def set_password_hash(conn: Conn, user_id: int, old: str, new: str) -> bool:
    """Replace the hash, unless it changed meanwhile (then the newer one stays)."""
    sql = "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2"
    return await conn.execute(sql, user_id, old, new) == 1


async def set_last_seen(conn: Conn, user_id: int, now: int) -> None:
    # Only forward: two nodes racing cannot move it back in time.
    await conn.execute(
        "UPDATE users SET last_seen_at = $2"
        " WHERE id = $1 AND (last_seen_at IS NULL OR last_seen_at < $2)",
        user_id,
        now,
    )


async def set_last_seen_each(conn: Conn, seen: list[tuple[int, int]]) -> None:
    """``set_last_seen`` for many (user id, time) pairs, as one prepared statement."""
    await conn.execute_many(
        "UPDATE users SET last_seen_at = $2"
        " WHERE id = $1 AND (last_seen_at IS NULL OR last_seen_at < $2)",
        seen,
    )


async def delete_user(conn: Conn, user_id: int) -> bool:
    """Delete a user, their tokens, keys and received messages; sent messages stay, numbered
    again in their conversations so that each conversation's sequence stays dense."""
    await conn.execute("DELETE FROM messages WHERE recipient_id = $1", user_id)
    await conn.execute(
        "UPDATE messages SET conversation_seq = numbered.seq FROM (SELECT id,"
        " row_number() OVER (PARTITION BY peer_lo, peer_hi ORDER BY id) AS seq"
        " FROM messages WHERE sender_id = $1) AS numbered WHERE messages.id = numbered.id",
        user_id,
    )
    await _forget_in_conversations(conn, user_id)
    await conn.execute("DELETE FROM events WHERE user_id = $1", user_id)
    await conn.execute("DELETE FROM tokens WHERE user_id = $1", user_id)
    await conn.execute("DELETE FROM idempotency_keys WHERE sender_id = $1", user_id)
    return await conn.execute("DELETE FROM users WHERE id = $1", user_id) == 1


# The people a user talked to, from the user's own conversation rows (primary key lookups).
_PEERS_OF = "user_id IN (SELECT peer_id FROM conversations WHERE user_id = $1) AND peer_id = $1"


async def _forget_in_conversations(conn: Conn, user_id: int) -> None:
    """The user's own conversations go; those of the people they talked to stay, pointing at
    the latest message left (the ones the user received are gone), or go when none is."""
    await conn.execute(
        "UPDATE conversations SET last_message_id = coalesce((SELECT max(m.id) FROM messages m"
        " WHERE m.peer_lo = CASE WHEN conversations.user_id < $1 THEN conversations.user_id"
        " ELSE $1 END AND m.peer_hi = CASE WHEN conversations.user_id < $1 THEN $1"
        f" ELSE conversations.user_id END), 0) WHERE {_PEERS_OF}",
        user_id,
    )
    await conn.execute(
        f"DELETE FROM conversations WHERE {_PEERS_OF} AND last_message_id = 0", user_id
    )
    await conn.execute("DELETE FROM conversations WHERE user_id = $1", user_id)


async def count_for_send(conn: Conn, sender_id: int) -> int | None:
    """Count a sent message on the sender's row and take its event position (None: no such
    user). The UPDATE also locks the row until commit (PostgreSQL)."""
    pos = await conn.fetch_val(
        "UPDATE users SET sent_count = sent_count + 1, event_pos = event_pos + 1"
        f" WHERE id = $1 AND {ACTIVE} RETURNING event_pos",
        sender_id,
    )
    return None if pos is None else int(pos)


class Received(NamedTuple):
    """A message counted on its recipient's row."""

    seq: int  # the recipient's new sequence number (their received count)
    pos: int  # the message's event position in the recipient's stream
    blocked: bool  # whether the recipient blocks the sender (the caller then rolls back)


async def count_for_receive(conn: Conn, recipient_id: int, sender_id: int) -> Received | None:
    """Count a received (and, unless sent to oneself, unread) message; None: no such user.

    The UPDATE locks the recipient's row until commit, so on PostgreSQL the message id and
    position taken after it are ordered with every other message and event of this user
    (see docs/architecture.md). It also answers whether the recipient blocks the sender:
    one statement fewer per send than asking first, and a refused send rolls back.
    """
    sent = 1 if recipient_id == sender_id else 0
    row = await conn.fetch_one(
        "UPDATE users SET received_count = received_count + 1, unread_count = unread_count + 1,"
        " sent_count = sent_count + $2, event_pos = event_pos + 1,"
        " unread_total = unread_total + 1 - $2"
        f" WHERE id = $1 AND {ACTIVE} RETURNING received_count, event_pos,"
        " EXISTS (SELECT 1 FROM blocks WHERE blocker_id = $1 AND blocked_id = $3)",
        recipient_id,
        sent,
        sender_id,
    )
    return None if row is None else Received(int(row[0]), int(row[1]), bool(row[2]))


async def take_event_positions(conn: Conn, user_id: int, count: int = 1) -> int | None:
    """Take ``count`` event positions for a user (locking their row); the last one, or None
    when there is no such user. Callers lock several users in ascending id order."""
    pos = await conn.fetch_val(
        "UPDATE users SET event_pos = event_pos + $2 WHERE id = $1 RETURNING event_pos",
        user_id,
        count,
    )
    return None if pos is None else int(pos)


async def current_event_pos(conn: Conn, user_id: int) -> int:
    """The position of the user's latest event (0 before the first)."""
    return await user_counter(conn, user_id, "event_pos")


async def user_counter(conn: Conn, user_id: int, column: str) -> int:
    value = await conn.fetch_val(f"SELECT {column} FROM users WHERE id = $1", user_id)
    return int(value or 0)
