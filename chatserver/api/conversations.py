"""/api/v1/conversations/ — who I talk to, with unread counts; read marks.

Received and read are different marks: a message is *received* when the recipient's client
fetches it (``GET /api/v1/chats/`` sets ``received_at``); it is *read* when the person says
so here (``POST …/read``), which moves ``last_read_id`` and ``unread_count``.
"""

from __future__ import annotations

import asyncio

from litestar import Router

from chatserver import actions, store
from chatserver.api import route
from chatserver.api.deps import Caller
from chatserver.db import Conn
from chatserver.errors import NotFound
from chatserver.schemas import (
    ConversationOut,
    ConversationPage,
    ConversationsQuery,
    PeerPath,
    ReadMark,
)
from chatserver.services import Services
from chatserver.typing_relay import relay_typing
from chatserver.views import message_out, user_out


@route.get("/")
async def list_conversations(
    services: Services, caller: Caller, query: ConversationsQuery
) -> ConversationPage:
    """My conversations, the one with the latest message first, with unread counts.

    Page with ``before`` = the previous page's ``next``."""
    async with services.db.read() as conn:
        # One more than a page: whether a next page exists, without counting.
        rows = await store.list_conversations(
            conn, caller.user_id, query.before, query.page_size + 1
        )
        total = await store.unread_total(conn, caller.user_id)
        page = await _conversations_out(services, conn, caller.user_id, rows[: query.page_size])
    more = len(rows) > query.page_size
    return ConversationPage(
        conversations=page,
        next=page[-1].last_message.id if more else None,
        unread_total=total,
    )


@route.get("/{user_id:int}/", errors=(404,))
async def get_conversation(services: Services, caller: Caller, path: PeerPath) -> ConversationOut:
    """My conversation with one user (also when their account is gone: ``user`` is null)."""
    async with services.db.read() as conn:
        row = await store.get_conversation(conn, caller.user_id, path.user_id)
        if row is None:
            raise NotFound("You have no conversation with that user")
        return await _conversation_out(services, conn, caller.user_id, row)


@route.post("/{user_id:int}/read", status_code=200, errors=(404,))
async def mark_read(
    services: Services, caller: Caller, path: PeerPath, body: ReadMark
) -> ConversationOut:
    """Mark what that user sent me, up to an id, as read.

    Never moves back (a lower id changes nothing); an id past the latest message counts as
    the latest. Both users' streams get a ``read`` event when the mark moves."""
    row = await actions.mark_read(services, caller.user_id, path.user_id, body.up_to_id)
    async with services.db.read() as conn:
        return await _conversation_out(services, conn, caller.user_id, row)


@route.post("/{user_id:int}/typing", errors=(404,))
async def typing(services: Services, caller: Caller, path: PeerPath) -> None:
    """Tell that user I am typing (the WebSocket frame {"type": "typing", "to": id} too).

    Their streams get an ephemeral ``{"type": "typing", "user_id": <me>}`` (no position,
    not replayed; show it for 5 seconds unless repeated). At most one is relayed per pair
    every 2 seconds: extra ones are accepted and dropped, as are those to yourself or to
    someone who blocks you. 404 without a conversation with them (or no such user)."""
    await relay_typing(services, caller.user_id, path.user_id)


async def _conversation_out(
    services: Services, conn: Conn, viewer_id: int, row: store.ConversationRow
) -> ConversationOut:
    for conversation in await _conversations_out(services, conn, viewer_id, [row]):
        return conversation
    raise NotFound("You have no conversation with that user")  # its messages just went


async def _conversations_out(
    services: Services, conn: Conn, viewer_id: int, rows: list[store.ConversationRow]
) -> list[ConversationOut]:
    """The rows as the viewer sees them: three statements for any page (users, who of them
    block the viewer, messages)."""
    users = {u.id: u for u in await store.get_users(conn, [r.peer_id for r in rows])}
    hidden = await store.blockers_among(conn, viewer_id, [u for u in users if u != viewer_id])
    messages = {m.id: m for m in await store.get_messages(conn, [r.last_message_id for r in rows])}
    presence = services.hub.presence
    shown = [user_id for user_id in users if user_id not in hidden]
    online = await asyncio.gather(*(presence.online(user_id) for user_id in shown))
    online_by_id = dict(zip(shown, online, strict=True))
    return [
        ConversationOut(
            user_id=row.peer_id,
            user=(
                user_out(
                    users[row.peer_id],
                    viewer_id,
                    online_by_id.get(row.peer_id, False),
                    hidden=row.peer_id in hidden,
                )
                if row.peer_id in users
                else None
            ),
            last_message=message_out(messages[row.last_message_id]),
            unread_count=row.unread_count,
            last_read_id=row.last_read_id,
            peer_last_read_id=row.peer_last_read_id,
        )
        for row in rows
        if row.last_message_id in messages
    ]


HANDLERS = [list_conversations, get_conversation, mark_read, typing]
router = Router("/api/v1/conversations", route_handlers=HANDLERS, tags=["conversations"])
