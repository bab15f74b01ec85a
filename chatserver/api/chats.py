"""/api/v1/chats/ — send, read and search messages; edit and delete my own."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Router

from chatserver import actions, edits, store
from chatserver.api import route
from chatserver.api.deps import Caller, took_ms
from chatserver.errors import InvalidInput
from chatserver.schemas import (
    MessageEdit,
    MessageOut,
    MessagePage,
    MessagePath,
    MessagesQuery,
    NewMessage,
    PageMeta,
    SendHeaders,
)
from chatserver.services import Services
from chatserver.store import MessageFilter


@route.post("/", status_code=201, errors=(404, 422))
async def send_message(
    services: Services, caller: Caller, headers: SendHeaders, body: NewMessage
) -> MessageOut:
    """Send a message to a user; durable when the 201 arrives.

    ``reply_to``: the id of a message of this conversation it answers (400 otherwise, or
    when that message is deleted). With an Idempotency-Key, a repeat of the same request
    returns the first message, as it is now (a tombstone once deleted)."""
    sent = await actions.send_message(services, caller.user_id, body, headers.idempotency_key)
    return sent.message


class EncodedPage(msgspec.Struct):
    """``MessagePage`` with each message spliced in as the JSON the cache holds."""

    meta: PageMeta
    messages: list[msgspec.Raw]


@route.get("/", documents=MessagePage)
async def read_messages(
    request: Request[Any, Any, Any], services: Services, caller: Caller, query: MessagesQuery
) -> EncodedPage:
    """The latest messages sent to me, newest first (paginated; filters and cursors combine).

    With ``q``: search my messages, sent and received (deleted ones never match), for every
    word of ``q``, the last one also as a word prefix, ignoring case; newest first, with
    ``with`` and ``page``/``page_size``."""
    f = MessageFilter(caller.user_id, query.with_, query.unread, query.before_id, query.after_id)
    if query.q is not None:
        return await _search(request, services, caller, query, f)
    if query.wait and query.after_id is None:
        raise InvalidInput({"wait": ["long-polling needs after_id (the last id you have)"]})
    if query.wait:
        page = await actions.wait_for_messages(
            services, caller.user_id, f, query.page_size, query.wait
        )
    else:
        page = await actions.read_messages(services, caller.user_id, f, query.page, query.page_size)
    return EncodedPage(
        meta=_meta(f, query, page.count, took_ms(request)),
        messages=[services.messages.json(m) for m in page.messages],
    )


# What a search cannot combine with (it pages by page number, over every message of mine).
NOT_WITH_SEARCH = ("unread", "before_id", "after_id", "wait")


async def _search(
    request: Request[Any, Any, Any],
    services: Services,
    caller: Caller,
    query: MessagesQuery,
    f: MessageFilter,
) -> EncodedPage:
    assert query.q is not None
    errors = {
        name: ["cannot be combined with q"]
        for name in NOT_WITH_SEARCH
        if getattr(query, name) not in (None, False, 0.0)
    }
    words = store.words_of(query.q)
    if not words:
        errors["q"] = ["must contain at least one letter or digit"]
    if errors:
        raise InvalidInput(errors)
    q = store.SearchQuery(caller.user_id, words, query.with_)
    page = await actions.search_messages(services, q, query.page, query.page_size)
    plain = f._replace(unread=False, before_id=None, after_id=None)
    return EncodedPage(
        meta=_meta(plain, query, page.count, took_ms(request)),
        messages=[services.messages.json(m) for m in page.messages],
    )


@route.patch("/{id:int}/", errors=(403, 404, 409))
async def edit_message(
    services: Services, caller: Caller, path: MessagePath, body: MessageEdit
) -> MessageOut:
    """Edit my message (the same text rules as sending); only the latest text is kept.

    The recipient gets 403, anyone else 404, a deleted message 409. Both users' streams
    get an ``edited`` event."""
    return await edits.edit_message(services, caller.user_id, path.id, body.message)


@route.delete("/{id:int}/", errors=(403, 404))
async def delete_message(services: Services, caller: Caller, path: MessagePath) -> None:
    """Delete my message: it stays in its place as a tombstone (``message`` null,
    ``deleted_at`` set) and its text is gone from the server.

    Deleting it again answers 204 too. The recipient gets 403, anyone else 404. Both
    users' streams get a ``deleted`` event."""
    await edits.delete_message(services, caller.user_id, path.id)


def _meta(f: MessageFilter, query: MessagesQuery, count: int, took: int) -> PageMeta:
    page, page_size = query.page, query.page_size
    if f.has_cursor:
        return PageMeta(count=count, next=None, current_page=str(page), took=took, previous=None)
    has_next = page * page_size < count
    return PageMeta(
        count=count,
        next=page + 1 if has_next else None,
        current_page=str(page),
        took=took,
        previous=page - 1 if page > 1 else None,
    )


HANDLERS = [send_message, read_messages, edit_message, delete_message]
router = Router("/api/v1/chats", route_handlers=HANDLERS, tags=["chats"])
