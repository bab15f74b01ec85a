"""Every write: check -> write via store -> commit -> publish (always after the commit)."""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple

import msgspec

from chatserver import auth, passwords, store, usernames
from chatserver.db import Conn, Database, UniqueViolation
from chatserver.errors import (
    Conflict,
    Forbidden,
    IdempotencyMismatch,
    InvalidInput,
    NotFound,
    Unavailable,
)
from chatserver.events import READ, RECEIVED
from chatserver.metrics import MESSAGES_SENT, OPEN_STREAMS
from chatserver.schemas import Login, MessageOut, NewMessage, NewUser, check_new_user
from chatserver.services import Services, now_us
from chatserver.store import admin as store_admin
from chatserver.streams import subscription
from chatserver.views import message_out

# ---------------------------------------------------------------- users and tokens


async def create_user(s: Services, body: NewUser, client: str) -> store.UserRow:
    """Sign up through the API, as the server's registration mode allows; the password is
    hashed through the gate (fair per client address)."""
    invite_hash = check_registration(s.settings.registration, body.invite)
    username, email = check_new_user(body)
    name_keys(username)  # refuse a mixed-script name before spending a hash on it
    password_hash = await s.logins.gate.hash(client, body.password)
    return await add_user(s.db, username, email, password_hash, invite_hash)


def check_registration(mode: str, invite: str | None) -> str | None:
    """Raise Forbidden when this sign-up is not allowed; the invite's hash when one is needed.
    Checked before the password is hashed: a refused sign-up costs no argon2 work."""
    if mode == "closed":
        raise Forbidden("Sign-up is closed on this server; an operator creates accounts")
    if mode != "invite":
        return None
    if not invite:
        raise Forbidden("Sign-up on this server needs an invite code: send it as 'invite'")
    return auth.token_hash(invite)


def name_keys(username: str) -> tuple[str, str]:
    """A valid username's RFC 8265 key and UTS #39 skeleton; 409 when it mixes scripts."""
    if usernames.mixes_scripts(username):
        raise Conflict("That username mixes scripts (UTS #39): use one script per name")
    key = usernames.key(username)
    assert key is not None  # check_new_user enforced the profile
    return key, usernames.skeleton(key)


async def add_user(
    db: Database, username: str, email: str, password_hash: str, invite_hash: str | None = None
) -> store.UserRow:
    """Store a new account (taking one use of the invite, when given, in the same
    transaction: a sign-up that fails does not use it up); 409 when the name is taken or
    confusable with a taken one."""
    key, skeleton = name_keys(username)
    keys = (key, email.casefold())
    try:
        async with db.transaction() as conn:
            if invite_hash is not None and not await store_admin.use_invite(
                conn, invite_hash, now_us()
            ):
                raise Forbidden("That invite code is unknown, used up or expired")
            return await store.insert_user(
                conn, username, email, password_hash, keys, now_us(), skeleton
            )
    except UniqueViolation:
        raise Conflict(await _which_is_taken(db, key, skeleton)) from None


async def _which_is_taken(db: Database, username_key: str, skeleton: str) -> str:
    async with db.read() as conn:
        if await store.username_taken(conn, username_key):
            return "That username is already taken"
        if await store.find_user_by_skeleton(conn, skeleton) is not None:
            return "That username is confusable with a taken one (UTS #39)"
    return "That email is already registered"


async def log_in(s: Services, login: str, password: str, client: str) -> store.UserRow:
    """``auth.user_with_password``; a hash made with older parameters is made again."""
    user = await auth.user_with_password(s.db, s.logins, login, password, client)
    if passwords.needs_rehash(user.password_hash):
        new_hash = await s.logins.gate.hash(client, password)
        async with s.db.transaction() as conn:
            await store.set_password_hash(conn, user.id, user.password_hash, new_hash)
    return user


async def issue_token(s: Services, body: Login, client: str) -> tuple[str, store.UserRow]:
    """Check a username (or email) and password; return a new token and the user. Beyond
    the user's token limit, the oldest go."""
    user = await log_in(s, body.username, body.password, client)
    token = auth.new_token()
    async with s.db.transaction() as conn:
        await store.insert_token(conn, user.id, auth.token_hash(token), now_us())
        dropped = await store.trim_tokens(conn, user.id, s.settings.max_tokens_per_user)
    _revoked(s, user.id, dropped)
    return token, user


async def revoke_token(s: Services, user_id: int, token_hash: str) -> None:
    async with s.db.transaction() as conn:
        await store.delete_token(conn, token_hash)
    _revoked(s, user_id, [token_hash])


async def revoke_token_by_id(s: Services, user_id: int, token_id: int) -> None:
    """Revoke one of the user's tokens; NotFound when they have none with this id."""
    async with s.db.transaction() as conn:
        token_hash = await store.delete_token_of(conn, user_id, token_id)
    if token_hash is None:
        raise NotFound("You have no token with that id")
    _revoked(s, user_id, [token_hash])


async def revoke_other_tokens(s: Services, user_id: int, current: str | None) -> None:
    """Revoke every token of the user but ``current`` (all of them when None)."""
    async with s.db.transaction() as conn:
        dropped = await store.delete_tokens_except(conn, user_id, current)
    _revoked(s, user_id, dropped)


def _revoked(s: Services, user_id: int, token_hashes: list[str]) -> None:
    """After the commit: out of this node's cache, and streams closed on every node."""
    for token_hash in token_hashes:
        s.tokens.evict_token(token_hash)
        s.events.revoke_token(user_id, token_hash)


async def forget_expired_tokens(s: Services) -> int:
    """Delete tokens unused for their time to live (they are already refused)."""
    async with s.db.transaction() as conn:
        return await store.delete_tokens_unused_since(conn, token_cutoff(s))


def token_cutoff(s: Services) -> int:
    """A token last used (or created) at or before this time (µs) has expired."""
    return now_us() - int(s.settings.token_ttl_days * 86_400_000_000)


async def delete_user(s: Services, user_id: int) -> None:
    async with s.db.transaction() as conn:
        await store.delete_user(conn, user_id)
    s.tokens.evict_user(user_id)
    s.note_search_change()  # the messages they received left the search index
    s.events.revoke_user(user_id)


async def check_writes(s: Services) -> None:
    """Raise Unavailable when writes are failing: a recent one failed, or one that changes
    nothing cannot be committed now (the health check)."""
    if s.db.writes_failing():
        raise Unavailable("A write failed a moment ago and none has succeeded since")
    async with s.db.transaction() as conn:
        await store.rewrite_schema_version(conn)


async def forget_expired_idempotency_keys(s: Services) -> int:
    """Delete Idempotency-Keys older than their time to live; how many went."""
    cutoff = now_us() - s.settings.idempotency_ttl_seconds * 1_000_000
    async with s.db.transaction() as conn:
        return await store.delete_idempotency_keys_before(conn, cutoff)


async def forget_expired_events(s: Services) -> int:
    """Delete events older than their retention, oldest first, a chunk per transaction (so
    writers are not held up); a stream resuming from before them gets a ``reset`` event."""
    cutoff = now_us() - int(s.settings.event_retention_days * 86_400_000_000)
    removed = 0
    while True:
        async with s.db.transaction() as conn:
            deleted = await store.delete_oldest_events(conn, cutoff, EVENT_PURGE_CHUNK)
        removed += deleted
        if deleted < EVENT_PURGE_CHUNK:
            return removed


# ---------------------------------------------------------------- sending

EVENT_PURGE_CHUNK = 2000
# The status stored with an idempotent response (the table keeps one per key).
SENT = 201
_encode = msgspec.json.Encoder().encode
_decode_sent = msgspec.json.Decoder(MessageOut).decode


class Sent(NamedTuple):
    """A stored message, and whether it was stored by an earlier request with the same key."""

    message: MessageOut
    replayed: bool


async def send_message(
    s: Services, sender_id: int, body: NewMessage, idempotency_key: str | None
) -> Sent:
    """Store a message durably; with an Idempotency-Key, a repeat returns the first message."""
    request_hash = _request_hash(body)
    try:
        async with s.db.transaction() as conn:
            if idempotency_key is not None:
                earlier = await store.get_idempotent_response(conn, sender_id, idempotency_key)
                if earlier is not None:
                    return _replay(earlier, request_hash)
            message, positions = await _insert_message(conn, sender_id, body)
            view = message_out(message)
            if idempotency_key is not None:
                stored = store.StoredResponse(request_hash, SENT, _encode(view).decode())
                await store.insert_idempotent_response(
                    conn, sender_id, idempotency_key, stored, message.sent_at, message.id
                )
    except UniqueViolation:
        # A concurrent repeat with the same key committed first: answer with its result.
        return await _replay_committed(s, sender_id, idempotency_key, request_hash)
    s.events.publish_message(view, positions)
    MESSAGES_SENT.inc()
    return Sent(view, replayed=False)


async def _insert_message(
    conn: Conn, sender_id: int, body: NewMessage
) -> tuple[store.MessageRow, store.Positions]:
    """Lock both users' rows in ascending id order, taking each one's event position, then
    the message id (see models.py); count it in both conversations. The message row, with
    its two positions, is both users' event (see ``store.list_events``). Forbidden when the
    recipient blocks the sender (the caller's transaction then undoes the counts)."""
    recipient_id, now = body.user_id, now_us()
    taken: dict[int, int] = {}
    seq: int | None = None
    for user_id in sorted({sender_id, recipient_id}):
        if user_id == recipient_id:
            counted = await store.count_for_receive(conn, user_id, sender_id)
            if counted is None:
                raise NotFound(f"There is no user with id {recipient_id}")
            if counted.blocked:
                raise Forbidden("You cannot send messages to this user")
            seq, taken[user_id] = counted.seq, counted.pos
        elif (pos := await store.count_for_send(conn, user_id)) is not None:
            taken[user_id] = pos
        else:
            raise NotFound("The sending user no longer exists")
    assert seq is not None
    if body.reply_to is not None:
        await _check_reply_target(conn, body.reply_to, sender_id, recipient_id)
    positions = store.Positions(taken[sender_id], taken[recipient_id])
    message = await store.insert_message(
        conn, sender_id, recipient_id, body.message, now, seq, positions, body.reply_to
    )
    await store.count_in_conversations(conn, sender_id, recipient_id, message.id)
    return message, positions


async def _check_reply_target(conn: Conn, reply_to: int, sender_id: int, recipient_id: int) -> None:
    """A reply answers a live message of the same conversation (checked under the users'
    locks, so the message cannot be deleted meanwhile)."""
    lo, hi = sorted((sender_id, recipient_id))
    if not await store.reply_target_ok(conn, reply_to, lo, hi):
        raise InvalidInput(
            {"reply_to": ["must be the id of a message (not deleted) of this conversation"]}
        )


def _request_hash(body: NewMessage) -> str:
    # Without reply_to, the hash of earlier versions: their stored keys still match.
    fields: list[object] = [body.user_id, body.message]
    if body.reply_to is not None:
        fields.append(body.reply_to)
    return hashlib.sha256(msgspec.json.encode(fields)).hexdigest()


def _replay(earlier: store.StoredResponse, request_hash: str) -> Sent:
    if earlier.request_hash != request_hash:
        raise IdempotencyMismatch(
            "This Idempotency-Key was already used with a different request body"
        )
    return Sent(_decode_sent(earlier.body), replayed=True)


async def _replay_committed(
    s: Services, sender_id: int, key: str | None, request_hash: str
) -> Sent:
    if key is None:
        raise Conflict("The message could not be stored; try again")
    async with s.db.read() as conn:
        earlier = await store.get_idempotent_response(conn, sender_id, key)
    if earlier is None:
        raise Conflict("The message could not be stored; try again")
    return _replay(earlier, request_hash)


# ---------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class Page:
    count: int
    messages: list[store.MessageRow]


async def read_messages(
    s: Services, user_id: int, f: store.MessageFilter, page: int, page_size: int
) -> Page:
    """A page of the caller's messages; marks what it returns as received (the spec's rule)."""
    offset = 0 if f.has_cursor else (page - 1) * page_size
    async with s.db.read() as conn:
        count, ids = await _count_and_ids(conn, f, offset, page_size)
        rows = await _load_messages(s, conn, ids)
    rows = await _mark_fetched(s, user_id, rows)
    return Page(count, rows)


async def search_messages(s: Services, q: store.SearchQuery, page: int, page_size: int) -> Page:
    """A page of the caller's messages containing every word of the query, newest first;
    marks what it returns as received, as every read of messages does."""
    await _catch_up_search_index(s)
    async with s.db.read() as conn:
        count, ids = await store.search_page(
            conn, s.db.dialect, q, (page - 1) * page_size, page_size
        )
        rows = await _load_messages(s, conn, ids)
    rows = await _mark_fetched(s, q.user_id, rows)
    return Page(count, rows)


async def _catch_up_search_index(s: Services) -> None:
    """SQLite indexes new messages at each group COMMIT; messages that came in otherwise (a
    bulk load, another tool) are indexed by a transaction of its own before the search."""
    if s.db.dialect != "sqlite":
        return
    async with s.db.read() as conn:
        behind = await store.search_index_behind(conn)
    if behind:
        async with s.db.transaction():
            pass  # the COMMIT indexes them (store.SearchIndexer)


async def _count_and_ids(
    conn: Conn, f: store.MessageFilter, offset: int, page_size: int
) -> tuple[int, list[int]]:
    """How many messages match, and the page's ids.

    An inbox or conversation page reads its count with its ids, in one statement. Of the
    other reads, a first page (every cursor read is one) that is not full holds every
    match, so its length is the count: the usual sync needs no count statement. A later
    page counts first, and skips the listing when it starts past the end."""
    if not f.unread and not f.has_cursor:
        if f.with_user is None:
            return await store.inbox_page(conn, f.user_id, offset, page_size)
        return await store.conversation_page(conn, f.user_id, f.with_user, offset, page_size)
    if offset == 0:
        ids = await store.list_message_ids(conn, f, page_size, 0)
        count = len(ids) if len(ids) < page_size else await store.count_messages(conn, f)
        return count, ids
    count = await store.count_messages(conn, f)
    ids = await store.list_message_ids(conn, f, page_size, offset) if offset < count else []
    return count, ids


async def _load_messages(s: Services, conn: Conn, ids: list[int]) -> list[store.MessageRow]:
    """The messages with these ids, in this order: received ones from the cache (they can no
    longer change), the rest from the database. An id deleted meanwhile is left out."""
    rows = s.messages.received(ids)
    missing = [message_id for message_id, row in rows.items() if row is None]
    if missing:  # a dict keeps its order when a key's value is replaced
        rows.update((row.id, row) for row in await store.get_messages(conn, missing))
    return [row for row in rows.values() if row is not None]


async def _mark_fetched(
    s: Services, user_id: int, rows: list[store.MessageRow]
) -> list[store.MessageRow]:
    """Write received_at (and last_seen_at, see lastseen.py) when there is something to
    change; each sender gets a ``received`` event."""
    unread = [m.id for m in rows if m.recipient_id == user_id and m.received_at is None]
    if not s.last_seen.note_fetch(user_id) and not unread:
        return rows
    now = now_us()
    async with s.db.transaction() as conn:
        marked = await store.mark_received(conn, user_id, unread, now) if unread else []
        received = await _note_received(conn, user_id, marked, now)
    if not marked:
        return rows
    s.events.publish_received(user_id, received, now)
    marked_ids = {message_id for message_id, _ in marked}
    return [m._replace(received_at=now) if m.id in marked_ids else m for m in rows]


async def _note_received(
    conn: Conn, user_id: int, marked: list[tuple[int, int]], now: int
) -> list[tuple[int, int, list[int]]]:
    """The reader's counters and last_seen_at, and a ``received`` event for each sender
    still there: (sender, position, message ids). Users' rows are locked in ascending id
    order, as sends lock them."""
    by_sender: dict[int, list[int]] = defaultdict(list)
    for message_id, sender_id in marked:
        by_sender[sender_id].append(message_id)
    received = []
    for uid in sorted({user_id, *by_sender}):
        if uid == user_id:
            await store.note_fetch(conn, user_id, len(marked), now)
        if uid in by_sender and (pos := await store.take_event_positions(conn, uid)) is not None:
            received.append((uid, pos, by_sender[uid]))
    if received:
        ids_json = [_encode(ids).decode() for _, _, ids in received]
        await store.insert_events(
            conn,
            [
                store.NewEvent(uid, pos, RECEIVED, now, by_id=user_id, message_ids=ids)
                for (uid, pos, _), ids in zip(received, ids_json, strict=True)
            ],
        )
    return received


# ---------------------------------------------------------------- read marks


async def mark_read(
    s: Services, user_id: int, peer_id: int, up_to_id: int
) -> store.ConversationRow:
    """Move the caller's read mark in a conversation forward (clamped to its latest
    message; never back); both users get a ``read`` event when it moves."""
    now = now_us()
    async with s.db.transaction() as conn:
        conversation = await store.get_conversation(conn, user_id, peer_id)
        if conversation is None:
            raise NotFound("You have no conversation with that user")
        up_to = min(up_to_id, conversation.last_message_id)
        if up_to <= conversation.last_read_id:
            return conversation
        # Lock both users as sends do, then read the conversation again under the locks.
        positions = await _take_positions(conn, sorted({user_id, peer_id}))
        conversation = await store.get_conversation(conn, user_id, peer_id)
        assert conversation is not None
        up_to = max(up_to, conversation.last_read_id)  # another device may have gone further
        updated = await _move_read_mark(conn, conversation, up_to)
        await store.insert_events(
            conn,
            [
                store.NewEvent(uid, pos, READ, now, by_id=user_id, of_id=peer_id, up_to_id=up_to)
                for uid, pos in positions.items()
            ],
        )
    s.events.publish_read(user_id, peer_id, up_to, now, positions)
    return updated


async def _take_positions(conn: Conn, user_ids: list[int]) -> dict[int, int]:
    """An event position for each user still there, in the order given (ascending ids)."""
    taken = {}
    for uid in user_ids:
        if (pos := await store.take_event_positions(conn, uid)) is not None:
            taken[uid] = pos
    return taken


async def _move_read_mark(
    conn: Conn, conversation: store.ConversationRow, up_to: int
) -> store.ConversationRow:
    """Move the mark of a conversation read under the users' locks; the row as it is now."""
    user_id, peer_id = conversation.user_id, conversation.peer_id
    if user_id == peer_id:
        unread = 0  # your own messages are never unread for you
    else:
        read = await store.received_up_to(conn, user_id, peer_id, up_to)
        unread = max(conversation.received_count - read, 0)
    if not await store.set_read_mark(conn, user_id, peer_id, up_to, unread):
        return conversation  # already there: another device marked this far
    await store.add_to_unread_total(conn, user_id, unread - conversation.unread_count)
    peer_mark = up_to if user_id == peer_id else conversation.peer_last_read_id
    return conversation._replace(
        last_read_id=up_to, unread_count=unread, peer_last_read_id=peer_mark
    )


# ---------------------------------------------------------------- blocks


async def block_user(s: Services, blocker_id: int, blocked_id: int) -> None:
    """Block a user (again: nothing changes). Their streams are told the blocker is
    offline, as they will see the blocker from now on."""
    _check_not_self(blocker_id, blocked_id, "you cannot block yourself")
    async with s.db.transaction() as conn:
        if await store.get_user(conn, blocked_id) is None:
            raise NotFound(f"There is no user with id {blocked_id}")
        added = await store.insert_block(conn, blocker_id, blocked_id, now_us())
    if added:
        await s.hub.announce(blocker_id, online=False, audience=[blocked_id], hide=True)


async def unblock_user(s: Services, blocker_id: int, blocked_id: int) -> None:
    """Unblock (also when there was no block); the user's streams see the blocker's
    presence again."""
    _check_not_self(blocker_id, blocked_id, "you cannot unblock yourself")
    async with s.db.transaction() as conn:
        removed = await store.delete_block(conn, blocker_id, blocked_id)
        if not removed and await store.get_user(conn, blocked_id) is None:
            raise NotFound(f"There is no user with id {blocked_id}")
    if removed:
        online = await s.hub.presence.online(blocker_id)
        await s.hub.announce(blocker_id, online=online, audience=[blocked_id])


def _check_not_self(user_id: int, other_id: int, why: str) -> None:
    if user_id == other_id:
        raise InvalidInput({"user_id": [why]})


async def wait_for_messages(
    s: Services, user_id: int, f: store.MessageFilter, page_size: int, wait: float
) -> Page:
    """Long-poll: answer at once if anything matches, else when a message arrives or at
    the end of ``wait`` seconds (with an empty page)."""
    page = await read_messages(s, user_id, f, 1, page_size)
    if page.messages or wait <= 0:
        return page
    async with subscription(s.events.channels, user_id) as sub:
        try:
            with OPEN_STREAMS.labels("longpoll").track_inprogress():
                async with asyncio.timeout(wait):
                    while not page.messages:
                        # Re-read after subscribing (and after each event), so nothing committed
                        # between the first read and the subscription is missed.
                        page = await read_messages(s, user_id, f, 1, page_size)
                        if not page.messages:
                            await sub.next_message_event()
        except TimeoutError:
            pass
    return page
