"""Messages: sending (numbers, positions, conversation rows), pages, counts, received marks."""

from __future__ import annotations

from typing import NamedTuple

from chatserver.db import Conn, placeholders
from chatserver.store.users import user_counter

# ---------------------------------------------------------------- messages

MESSAGE_COLUMNS = (
    "id, sender_id, recipient_id, body, sent_at, received_at, edited_at, deleted_at, reply_to"
)


class MessageRow(NamedTuple):
    id: int
    sender_id: int
    recipient_id: int
    body: str  # empty once deleted
    sent_at: int
    received_at: int | None
    edited_at: int | None = None
    deleted_at: int | None = None
    reply_to: int | None = None


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
    " peer_lo, peer_hi, conversation_seq, pair_seq, sender_pos, recipient_pos, reply_to)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7,"
    f" coalesce(({_latest_in_conversation('$6', '$7')}), 0) + 1,"
    " coalesce((SELECT received_count FROM conversations WHERE user_id = $2"
    " AND peer_id = $1), 0) + 1, $8, $9, $10) RETURNING id"
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
    reply_to: int | None = None,
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
        reply_to,
    )
    return MessageRow(int(message_id), sender_id, recipient_id, body, now, None, reply_to=reply_to)


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
        return await user_counter(conn, f.user_id, "unread_count")
    if f.is_plain_inbox and (f.before_id is None) != (f.after_id is None):
        return await _count_beyond_cursor(conn, f)
    where, args = _where(f)
    return int(await conn.fetch_val(f"SELECT count(*) FROM messages WHERE {where}", *args))


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
