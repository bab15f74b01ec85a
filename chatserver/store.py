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


async def get_users(conn: Conn, user_ids: list[int]) -> list[UserRow]:
    """The users with these ids that exist, in no particular order."""
    if not user_ids:
        return []
    sql = f"SELECT {USER_COLUMNS} FROM users WHERE id IN ({placeholders(1, len(user_ids))})"
    return [UserRow(*row) for row in await conn.fetch_all(sql, *user_ids)]


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
        " WHERE id = $1 RETURNING event_pos",
        sender_id,
    )
    return None if pos is None else int(pos)


async def count_for_receive(
    conn: Conn, recipient_id: int, also_sent: bool
) -> tuple[int, int] | None:
    """Count a received (and unread) message; return the recipient's new sequence number
    and the event position of the message (None: no such user).

    The UPDATE locks the recipient's row until commit, so on PostgreSQL the message id and
    position taken after it are ordered with every other message and event of this user
    (see docs/architecture.md).
    """
    sent = 1 if also_sent else 0
    row = await conn.fetch_one(
        "UPDATE users SET received_count = received_count + 1, unread_count = unread_count + 1,"
        " sent_count = sent_count + $2, event_pos = event_pos + 1,"
        " unread_total = unread_total + 1 - $2"
        " WHERE id = $1 RETURNING received_count, event_pos",
        recipient_id,
        sent,
    )
    return None if row is None else (int(row[0]), int(row[1]))


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
    return await _user_counter(conn, user_id, "event_pos")


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
# Its number from this sender to this recipient follows the recipient's conversation row.
INSERT_MESSAGE = (
    "INSERT INTO messages (sender_id, recipient_id, body, sent_at, recipient_seq,"
    " peer_lo, peer_hi, conversation_seq, pair_seq, sender_pos, recipient_pos)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7,"
    f" coalesce(({_latest_in_conversation('$6', '$7')}), 0) + 1,"
    " coalesce((SELECT received_count FROM conversations WHERE user_id = $2"
    " AND peer_id = $1), 0) + 1, $8, $9) RETURNING id"
)


class Positions(NamedTuple):
    """A message's event position in its sender's and its recipient's streams."""

    sender: int
    recipient: int


async def insert_message(
    conn: Conn,
    sender_id: int,
    recipient_id: int,
    body: str,
    now: int,
    seq: int,
    positions: Positions,
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
        positions.sender,
        positions.recipient,
    )
    return MessageRow(int(message_id), sender_id, recipient_id, body, now, None)


# Both users' rows of the conversation: the latest message, and for the recipient one more
# received (and unread, unless they wrote to themself).
UPSERT_CONVERSATION = (
    "INSERT INTO conversations (user_id, peer_id, last_message_id, received_count,"
    " unread_count) VALUES {rows} ON CONFLICT (user_id, peer_id) DO UPDATE SET"
    " last_message_id = excluded.last_message_id,"
    " received_count = conversations.received_count + excluded.received_count,"
    " unread_count = conversations.unread_count + excluded.unread_count"
)
_UPSERT_ONE = UPSERT_CONVERSATION.format(rows="($1, $1, $2, 1, 0)")
_UPSERT_TWO = UPSERT_CONVERSATION.format(rows="($1, $2, $3, 0, 0), ($2, $1, $3, 1, 1)")


async def count_in_conversations(
    conn: Conn, sender_id: int, recipient_id: int, message_id: int
) -> None:
    """Record a new message in both users' conversation rows (one row when it is the same
    user)."""
    if sender_id == recipient_id:
        await conn.execute(_UPSERT_ONE, sender_id, message_id)
    else:
        await conn.execute(_UPSERT_TWO, sender_id, recipient_id, message_id)


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
    if not message_ids:
        return []
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
    """Mark those of ``message_ids`` still unread as received; return (id, sender_id) of each.
    The recipient's counter is the caller's next step (``note_fetch``)."""
    ids = placeholders(3, len(message_ids))
    rows = await conn.fetch_all(
        f"UPDATE messages SET received_at = $2 WHERE recipient_id = $1 AND id IN ({ids})"
        " AND received_at IS NULL RETURNING id, sender_id",
        recipient_id,
        now,
        *message_ids,
    )
    return [(int(r[0]), int(r[1])) for r in rows]


async def note_fetch(conn: Conn, user_id: int, received: int, now: int) -> None:
    """After a fetch: ``received`` fewer unfetched messages, and last_seen_at moves to now
    (only forward: two nodes racing cannot move it back in time)."""
    await conn.execute(
        "UPDATE users SET unread_count = unread_count - $2, last_seen_at = CASE"
        " WHEN last_seen_at IS NULL OR last_seen_at < $3 THEN $3 ELSE last_seen_at END"
        " WHERE id = $1",
        user_id,
        received,
        now,
    )


# ---------------------------------------------------------------- conversations


class ConversationRow(NamedTuple):
    user_id: int
    peer_id: int
    last_message_id: int
    received_count: int
    unread_count: int
    last_read_id: int
    peer_last_read_id: int  # 0 when the peer's row is gone (a deleted account)


# The peer's read mark comes from the peer's own row; a conversation with yourself has one
# row, which is both.
CONVERSATION_SELECT = (
    "SELECT c.user_id, c.peer_id, c.last_message_id, c.received_count, c.unread_count,"
    " c.last_read_id, coalesce(p.last_read_id, 0) FROM conversations c"
    " LEFT JOIN conversations p ON p.user_id = c.peer_id AND p.peer_id = c.user_id"
)


async def get_conversation(conn: Conn, user_id: int, peer_id: int) -> ConversationRow | None:
    row = await conn.fetch_one(
        f"{CONVERSATION_SELECT} WHERE c.user_id = $1 AND c.peer_id = $2", user_id, peer_id
    )
    return None if row is None else ConversationRow(*row)


async def list_conversations(
    conn: Conn, user_id: int, before: int | None, limit: int
) -> list[ConversationRow]:
    """A page of the user's conversations, latest message first (an index range)."""
    if before is None:
        sql = f"{CONVERSATION_SELECT} WHERE c.user_id = $1 ORDER BY c.last_message_id DESC LIMIT $2"
        rows = await conn.fetch_all(sql, user_id, limit)
    else:
        sql = (
            f"{CONVERSATION_SELECT} WHERE c.user_id = $1 AND c.last_message_id < $2"
            " ORDER BY c.last_message_id DESC LIMIT $3"
        )
        rows = await conn.fetch_all(sql, user_id, before, limit)
    return [ConversationRow(*row) for row in rows]


async def unread_total(conn: Conn, user_id: int) -> int:
    """Every conversation's unread count added up: the user's counter, kept by sends,
    fetches and read marks (see ``set_read_mark``)."""
    return await _user_counter(conn, user_id, "unread_total")


async def received_up_to(conn: Conn, user_id: int, peer_id: int, up_to_id: int) -> int:
    """How many messages the peer sent the user with an id up to ``up_to_id`` (one seek)."""
    value = await conn.fetch_val(
        "SELECT pair_seq FROM messages WHERE recipient_id = $1 AND sender_id = $2"
        " AND id <= $3 ORDER BY id DESC LIMIT 1",
        user_id,
        peer_id,
        up_to_id,
    )
    return int(value or 0)


async def set_read_mark(conn: Conn, user_id: int, peer_id: int, up_to_id: int, unread: int) -> bool:
    """Move the user's read mark forward (never back) and set the conversation's unread
    count, keeping the user's total in step; False when the mark did not move."""
    moved = await conn.fetch_val(
        "UPDATE conversations SET last_read_id = $3, unread_count = $4"
        " WHERE user_id = $1 AND peer_id = $2 AND last_read_id < $3"
        " RETURNING last_read_id",
        user_id,
        peer_id,
        up_to_id,
        unread,
    )
    return moved is not None


async def add_to_unread_total(conn: Conn, user_id: int, change: int) -> None:
    await conn.execute(
        "UPDATE users SET unread_total = unread_total + $2 WHERE id = $1", user_id, change
    )


# ---------------------------------------------------------------- events


class EventRow(NamedTuple):
    """One stored event, with its message's current state when it is a message event."""

    pos: int
    kind: str
    by_id: int | None
    of_id: int | None
    up_to_id: int | None
    message_ids: str | None
    at: int
    message: MessageRow | None


class NewEvent(NamedTuple):
    user_id: int
    pos: int
    kind: str
    at: int
    message_id: int | None = None
    by_id: int | None = None
    of_id: int | None = None
    up_to_id: int | None = None
    message_ids: str | None = None


async def insert_events(conn: Conn, events: list[NewEvent]) -> None:
    """Store events (in one statement for the usual one or two)."""
    width = len(NewEvent._fields)
    rows = ", ".join(f"({placeholders(1 + i * width, width)})" for i in range(len(events)))
    await conn.execute(
        "INSERT INTO events (user_id, pos, kind, at, message_id, by_id, of_id, up_to_id,"
        f" message_ids) VALUES {rows}",
        *[value for event in events for value in event],
    )


async def list_events(conn: Conn, user_id: int, after_pos: int, limit: int) -> list[EventRow]:
    """The user's events after a position, oldest first: an index range on (user, pos)."""
    rows = await conn.fetch_all(
        "SELECT e.pos, e.kind, e.by_id, e.of_id, e.up_to_id, e.message_ids, e.at,"
        " m.id, m.sender_id, m.recipient_id, m.body, m.sent_at, m.received_at"
        " FROM events e LEFT JOIN messages m ON m.id = e.message_id"
        " WHERE e.user_id = $1 AND e.pos > $2 ORDER BY e.pos LIMIT $3",
        user_id,
        after_pos,
        limit,
    )
    return [_event_row(row) for row in rows]


def _event_row(row: Row) -> EventRow:
    message = MessageRow(*row[7:]) if row[7] is not None else None
    pos, kind, by_id, of_id, up_to_id, message_ids, at = row[:7]
    return EventRow(pos, kind, by_id, of_id, up_to_id, message_ids, at, message)


async def event_pos_after_message(conn: Conn, user_id: int, after_id: int) -> int:
    """The position after which a stream resuming from message ``after_id`` starts: that of
    the user's latest message with an id up to it (ids and positions go in the same order
    for a user), or 0."""
    positions = [
        await conn.fetch_val(
            f"SELECT {pos} FROM messages WHERE {column} = $1 AND id <= $2 ORDER BY id DESC LIMIT 1",
            user_id,
            after_id,
        )
        for column, pos in (("recipient_id", "recipient_pos"), ("sender_id", "sender_pos"))
    ]
    return max(int(p or 0) for p in positions)


async def delete_events_before(conn: Conn, cutoff: int) -> int:
    return await conn.execute("DELETE FROM events WHERE at < $1", cutoff)


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


async def reserve_received(conn: Conn, recipient_id: int, count: int, unread: bool) -> int | None:
    """Count ``count`` new received messages at once (unread in conversations unless the
    user wrote to themself); return the first sequence number."""
    last = await conn.fetch_val(
        "UPDATE users SET received_count = received_count + $2,"
        " unread_count = unread_count + $2, unread_total = unread_total + $3"
        " WHERE id = $1 RETURNING received_count",
        recipient_id,
        count,
        count if unread else 0,
    )
    return None if last is None else int(last) - count + 1


async def add_sent(conn: Conn, sender_id: int, count: int) -> bool:
    sql = "UPDATE users SET sent_count = sent_count + $2 WHERE id = $1"
    return await conn.execute(sql, sender_id, count) == 1


class BulkMessage(NamedTuple):
    sender_id: int
    recipient_id: int
    body: str
    sent_at: int
    recipient_seq: int
    peer_lo: int
    peer_hi: int
    conversation_seq: int
    pair_seq: int
    sender_pos: int
    recipient_pos: int


async def insert_messages(conn: Conn, rows: list[BulkMessage]) -> None:
    """Insert messages whose numbers and positions the caller reserved; then store their
    events with ``insert_message_events``."""
    await conn.execute_many(
        "INSERT INTO messages (sender_id, recipient_id, body, sent_at, recipient_seq,"
        " peer_lo, peer_hi, conversation_seq, pair_seq, sender_pos, recipient_pos)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        [tuple(row) for row in rows],
    )


async def insert_message_events(conn: Conn, recipient_id: int, first_seq: int) -> int:
    """The message events of a recipient's messages from sequence number ``first_seq`` on,
    for both users (one for a message to oneself); return the latest message id."""
    received = "FROM messages WHERE recipient_id = $1 AND recipient_seq >= $2"
    await conn.execute(
        "INSERT INTO events (user_id, pos, kind, message_id, at)"
        f" SELECT recipient_id, recipient_pos, 'message', id, sent_at {received}",
        recipient_id,
        first_seq,
    )
    await conn.execute(
        "INSERT INTO events (user_id, pos, kind, message_id, at)"
        f" SELECT sender_id, sender_pos, 'message', id, sent_at {received}"
        " AND sender_id <> recipient_id",
        recipient_id,
        first_seq,
    )
    return int(await conn.fetch_val(f"SELECT max(id) {received}", recipient_id, first_seq))


async def count_many_in_conversations(
    conn: Conn, sender_id: int, recipient_id: int, last_message_id: int, count: int
) -> None:
    """``count_in_conversations`` for ``count`` messages at once."""
    if sender_id == recipient_id:
        rows = "($1, $1, $2, $3, 0)"
        await conn.execute(UPSERT_CONVERSATION.format(rows=rows), sender_id, last_message_id, count)
    else:
        rows = "($1, $2, $3, 0, 0), ($2, $1, $3, $4, $4)"
        sql = UPSERT_CONVERSATION.format(rows=rows)
        await conn.execute(sql, sender_id, recipient_id, last_message_id, count)
