"""Every SQL statement of the server. Functions take a ``Conn``, never commit, never know HTTP.

Statements use ``$n`` parameters and only SQL that SQLite and PostgreSQL both run unchanged.
Rows come back as NamedTuples: immutable, and quicker to build than a frozen dataclass
(a page builds ten of them); "not found" is ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    conn: Conn, username: str, email: str, password_hash: str, keys: tuple[str, str], now: int
) -> UserRow:
    """Insert a user; raises UniqueViolation when the username or email key is taken."""
    row = await conn.fetch_one(
        "INSERT INTO users (username, username_key, email, email_key, password_hash, date_joined)"
        f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {USER_COLUMNS}",
        username,
        keys[0],
        email,
        keys[1],
        password_hash,
        now,
    )
    assert row is not None
    return UserRow(*row)


async def get_user(conn: Conn, user_id: int) -> UserRow | None:
    return _user(await conn.fetch_one(f"SELECT {USER_COLUMNS} FROM users WHERE id = $1", user_id))


async def find_user_by_username(conn: Conn, username_key: str) -> UserRow | None:
    sql = f"SELECT {USER_COLUMNS} FROM users WHERE username_key = $1"
    return _user(await conn.fetch_one(sql, username_key))


async def find_user_by_login(conn: Conn, key: str) -> UserRow | None:
    """The user whose username or email matches ``key`` (already casefolded)."""
    sql = f"SELECT {USER_COLUMNS} FROM users WHERE username_key = $1 OR email_key = $1"
    return _user(await conn.fetch_one(sql, key))


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
    await conn.execute("DELETE FROM tokens WHERE user_id = $1", user_id)
    await conn.execute("DELETE FROM idempotency_keys WHERE sender_id = $1", user_id)
    return await conn.execute("DELETE FROM users WHERE id = $1", user_id) == 1


async def count_for_send(conn: Conn, sender_id: int) -> bool:
    """Count a sent message on the sender's row; the UPDATE also locks it (PostgreSQL)."""
    sql = "UPDATE users SET sent_count = sent_count + 1 WHERE id = $1"
    return await conn.execute(sql, sender_id) == 1


async def count_for_receive(conn: Conn, recipient_id: int, also_sent: bool) -> int | None:
    """Count a received (and unread) message; return the recipient's new sequence number.

    The UPDATE locks the recipient's row until commit, so on PostgreSQL the message id taken
    after it is ordered with every other message of this user (see docs/architecture.md).
    """
    sent = 1 if also_sent else 0
    seq = await conn.fetch_val(
        "UPDATE users SET received_count = received_count + 1, unread_count = unread_count + 1,"
        " sent_count = sent_count + $2 WHERE id = $1 RETURNING received_count",
        recipient_id,
        sent,
    )
    return None if seq is None else int(seq)


# ---------------------------------------------------------------- tokens


async def insert_token(conn: Conn, user_id: int, token_hash: str, now: int) -> None:
    await conn.execute(
        "INSERT INTO tokens (user_id, token_hash, created_at) VALUES ($1, $2, $3)",
        user_id,
        token_hash,
        now,
    )


async def find_token_user(conn: Conn, token_hash: str) -> int | None:
    value = await conn.fetch_val("SELECT user_id FROM tokens WHERE token_hash = $1", token_hash)
    return None if value is None else int(value)


async def delete_token(conn: Conn, token_hash: str) -> None:
    await conn.execute("DELETE FROM tokens WHERE token_hash = $1", token_hash)


# ---------------------------------------------------------------- messages

MESSAGE_COLUMNS = "id, sender_id, recipient_id, body, sent_at, received_at"


class MessageRow(NamedTuple):
    id: int
    sender_id: int
    recipient_id: int
    body: str
    sent_at: int
    received_at: int | None


def _latest_in_conversation(lo: str, hi: str) -> str:
    """SQL for the number of a conversation's latest message, which is its message count:
    one seek on the conversation index from its newest end."""
    return (
        f"SELECT conversation_seq FROM messages WHERE peer_lo = {lo} AND peer_hi = {hi}"
        " ORDER BY id DESC LIMIT 1"
    )


# A message is numbered after the latest of its conversation; the sender holds both users'
# row locks, so no other message of the conversation is being inserted meanwhile.
INSERT_MESSAGE = (
    "INSERT INTO messages (sender_id, recipient_id, body, sent_at, recipient_seq,"
    " peer_lo, peer_hi, conversation_seq) VALUES ($1, $2, $3, $4, $5, $6, $7,"
    f" coalesce(({_latest_in_conversation('$6', '$7')}), 0) + 1) RETURNING id"
)


async def insert_message(
    conn: Conn, sender_id: int, recipient_id: int, body: str, now: int, seq: int
) -> MessageRow:
    lo, hi = sorted((sender_id, recipient_id))
    message_id = await conn.fetch_val(
        INSERT_MESSAGE,
        sender_id,
        recipient_id,
        body,
        now,
        seq,
        lo,
        hi,
    )
    return MessageRow(int(message_id), sender_id, recipient_id, body, now, None)


CONVERSATION_COUNT = _latest_in_conversation("$1", "$2")
# The count rides along with the page as a scalar subquery, which both databases run once:
# one statement instead of two for a full page (a faster conversation read), one more
# index seek for a conversation that fits on its page.
CONVERSATION_PAGE = (
    f"SELECT ({CONVERSATION_COUNT}), id FROM messages WHERE peer_lo = $1 AND peer_hi = $2"
    " ORDER BY id DESC LIMIT $3 OFFSET $4"
)


async def conversation_count(conn: Conn, user_id: int, other_id: int) -> int:
    lo, hi = sorted((user_id, other_id))
    return int(await conn.fetch_val(CONVERSATION_COUNT, lo, hi) or 0)


async def conversation_page(
    conn: Conn, user_id: int, other_id: int, offset: int, limit: int
) -> tuple[int, list[int]]:
    """A conversation's count and a page of its message ids, newest first.

    One statement when the page holds anything; a page past the end asks for the count."""
    lo, hi = sorted((user_id, other_id))
    rows = await conn.fetch_all(CONVERSATION_PAGE, lo, hi, limit, offset)
    if rows:
        return int(rows[0][0]), [int(row[1]) for row in rows]
    return (await conversation_count(conn, lo, hi) if offset else 0), []


class MessageFilter(NamedTuple):
    """Which of a user's messages a read wants; cursors exclude paging."""

    user_id: int
    with_user: int | None = None
    unread: bool = False
    before_id: int | None = None
    after_id: int | None = None

    @property
    def is_plain_inbox(self) -> bool:
        return self.with_user is None and not self.unread

    @property
    def has_cursor(self) -> bool:
        return self.before_id is not None or self.after_id is not None


def _where(f: MessageFilter) -> tuple[str, list[int]]:
    """The WHERE clause for a filter: conversation, unread and cursor conditions combined."""
    if f.with_user is None:
        conditions, args = ["recipient_id = $1"], [f.user_id]
    else:
        lo, hi = sorted((f.user_id, f.with_user))
        conditions, args = ["peer_lo = $1", "peer_hi = $2"], [lo, hi]
    if f.unread:
        args.append(f.user_id)
        conditions.append(f"recipient_id = ${len(args)} AND received_at IS NULL")
    if f.before_id is not None:
        args.append(f.before_id)
        conditions.append(f"id < ${len(args)}")
    if f.after_id is not None:
        args.append(f.after_id)
        conditions.append(f"id > ${len(args)}")
    return " AND ".join(conditions), args


async def list_message_ids(conn: Conn, f: MessageFilter, limit: int, offset: int) -> list[int]:
    """A page of matching message ids: newest first, or oldest first after an ``after_id``.

    Ids only: apart from ``unread``, every filter is answered from an index alone, and the
    caller takes the rows it does not already hold from ``get_messages``."""
    where, args = _where(f)
    order = "ASC" if f.after_id is not None else "DESC"
    n = len(args)
    sql = (
        f"SELECT id FROM messages WHERE {where} ORDER BY id {order} LIMIT ${n + 1} OFFSET ${n + 2}"
    )
    return [int(row[0]) for row in await conn.fetch_all(sql, *args, limit, offset)]


async def inbox_page(conn: Conn, user_id: int, offset: int, limit: int) -> tuple[int, list[int]]:
    """The inbox count and a page of its message ids, newest first, in one statement.

    The page is a range of recipient sequence numbers counted down from the user's
    ``received_count``: an index range however deep the page is, read from the index alone.
    """
    rows = await conn.fetch_all(
        "SELECT u.received_count, m.id FROM users u LEFT JOIN messages m"
        " ON m.recipient_id = u.id AND m.recipient_seq <= u.received_count - $2"
        " AND m.recipient_seq > u.received_count - $2 - $3"
        " WHERE u.id = $1 ORDER BY m.recipient_seq DESC",
        user_id,
        offset,
        limit,
    )
    if not rows:
        return 0, []
    return int(rows[0][0]), [int(row[1]) for row in rows if row[1] is not None]


async def get_messages(conn: Conn, message_ids: list[int]) -> list[MessageRow]:
    """The messages with these ids that exist, in no particular order."""
    ids = placeholders(1, len(message_ids))
    sql = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id IN ({ids})"
    return [MessageRow(*row) for row in await conn.fetch_all(sql, *message_ids)]


async def count_messages(conn: Conn, f: MessageFilter) -> int:
    """How many messages match; O(1)/O(log n) for the common shapes, a count otherwise."""
    if f.with_user is None and f.unread and not f.has_cursor:
        return await _user_counter(conn, f.user_id, "unread_count")
    if f.is_plain_inbox and (f.before_id is None) != (f.after_id is None):
        return await _count_beyond_cursor(conn, f)
    where, args = _where(f)
    return int(await conn.fetch_val(f"SELECT count(*) FROM messages WHERE {where}", *args))


async def _user_counter(conn: Conn, user_id: int, column: str) -> int:
    value = await conn.fetch_val(f"SELECT {column} FROM users WHERE id = $1", user_id)
    return int(value or 0)


async def _count_beyond_cursor(conn: Conn, f: MessageFilter) -> int:
    """Inbox messages before/after an id, from the dense per-recipient sequence numbers
    (one statement: the cursor's sequence number, and for after_id the user's count)."""
    before = f.before_id is not None
    cursor, op = (f.before_id, "<") if before else (f.after_id, "<=")
    up_to_cursor = (
        f"coalesce((SELECT recipient_seq FROM messages WHERE recipient_id = $1 AND id {op} $2"
        " ORDER BY id DESC LIMIT 1), 0)"
    )
    if before:
        count_sql = f"SELECT {up_to_cursor}"
    else:
        count_sql = f"SELECT (SELECT received_count FROM users WHERE id = $1) - {up_to_cursor}"
    return int(await conn.fetch_val(count_sql, f.user_id, cursor))


async def mark_received(
    conn: Conn, recipient_id: int, message_ids: list[int], now: int
) -> list[tuple[int, int]]:
    """Mark those of ``message_ids`` still unread as received; return (id, sender_id) of each."""
    ids = placeholders(3, len(message_ids))
    rows = await conn.fetch_all(
        f"UPDATE messages SET received_at = $2 WHERE recipient_id = $1 AND id IN ({ids})"
        " AND received_at IS NULL RETURNING id, sender_id",
        recipient_id,
        now,
        *message_ids,
    )
    if rows:
        await conn.execute(
            "UPDATE users SET unread_count = unread_count - $2 WHERE id = $1",
            recipient_id,
            len(rows),
        )
    return [(int(r[0]), int(r[1])) for r in rows]


async def last_involving_id_before(conn: Conn, user_id: int, before: int) -> int:
    """The id of the user's latest message (sent or received) sent before ``before``, or 0.

    Walks each index from the newest message back, so it reads only what is newer."""
    ids = [
        await conn.fetch_val(
            f"SELECT id FROM messages WHERE {column} = $1 AND sent_at < $2"
            " ORDER BY id DESC LIMIT 1",
            user_id,
            before,
        )
        for column in ("recipient_id", "sender_id")
    ]
    return max(int(i or 0) for i in ids)


async def latest_involving(conn: Conn, user_ids: list[int]) -> list[int]:
    """Each user's latest message id, sent or received (0 for none), in one statement.

    Run by a send after it locked both users' rows: then it is exactly the message before
    the new one in each user's order (see streams.py, "order hints")."""
    latest = [
        f"(SELECT id FROM messages WHERE {column} = ${i} ORDER BY id DESC LIMIT 1)"
        for i in range(1, len(user_ids) + 1)
        for column in ("recipient_id", "sender_id")
    ]
    row = await conn.fetch_one("SELECT " + ", ".join(latest), *user_ids)
    assert row is not None
    return [max(int(row[2 * i] or 0), int(row[2 * i + 1] or 0)) for i in range(len(user_ids))]


async def list_involving(conn: Conn, user_id: int, after_id: int, limit: int) -> list[MessageRow]:
    """Messages to or from a user with id > after_id, oldest first (stream resume)."""
    sql = (
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id > $2 AND recipient_id = $1 UNION"
        f" SELECT {MESSAGE_COLUMNS} FROM messages WHERE id > $2 AND sender_id = $1"
        " ORDER BY id LIMIT $3"
    )
    return [MessageRow(*row) for row in await conn.fetch_all(sql, user_id, after_id, limit)]


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


# ---------------------------------------------------------------- bulk loading


async def reserve_received(conn: Conn, recipient_id: int, count: int) -> int | None:
    """Count ``count`` new unread messages at once; return the first sequence number."""
    last = await conn.fetch_val(
        "UPDATE users SET received_count = received_count + $2,"
        " unread_count = unread_count + $2 WHERE id = $1 RETURNING received_count",
        recipient_id,
        count,
    )
    return None if last is None else int(last) - count + 1


async def add_sent(conn: Conn, sender_id: int, count: int) -> bool:
    sql = "UPDATE users SET sent_count = sent_count + $2 WHERE id = $1"
    return await conn.execute(sql, sender_id, count) == 1


async def insert_messages(
    conn: Conn, rows: list[tuple[int, int, str, int, int, int, int, int]]
) -> None:
    """Insert (sender, recipient, body, sent_at, recipient_seq, peer_lo, peer_hi,
    conversation_seq) rows."""
    await conn.execute_many(
        "INSERT INTO messages (sender_id, recipient_id, body, sent_at, recipient_seq,"
        " peer_lo, peer_hi, conversation_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        rows,
    )
