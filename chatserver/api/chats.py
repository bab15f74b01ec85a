"""/api/v1/chats/ — send a message, read the messages sent to me."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Router

from chatserver import actions
from chatserver.api import route
from chatserver.api.deps import Caller, took_ms
from chatserver.errors import InvalidInput
from chatserver.schemas import (
    MessageOut,
    MessagePage,
    MessagesQuery,
    NewMessage,
    PageMeta,
    SendHeaders,
)
from chatserver.services import Services
from chatserver.store import MessageFilter


@route.post("/", status_code=201, errors=(403, 404, 422))
async def send_message(
    services: Services, caller: Caller, headers: SendHeaders, body: NewMessage
) -> MessageOut:
    """Send a message to a user; durable when the 201 arrives.

    With an Idempotency-Key, a repeat of the same request returns the first message.
    403 when the recipient blocks you (nothing is stored)."""
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
    """The latest messages sent to me, newest first (paginated; filters and cursors combine)."""
    f = MessageFilter(caller.user_id, query.with_, query.unread, query.before_id, query.after_id)
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


router = Router("/api/v1/chats", route_handlers=[send_message, read_messages], tags=["chats"])
