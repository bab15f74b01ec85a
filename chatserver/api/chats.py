"""/api/v1/chats/ — send a message, read the messages sent to me."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request, Router, get, post
from litestar.enums import ParamType
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example, OpenAPIType, Schema
from litestar.openapi.spec import Parameter as OpenAPIParameter

from chatserver import actions
from chatserver.api import docs
from chatserver.api.body import JsonInput
from chatserver.api.deps import JsonBody, caller_of, header, services_of, took_ms
from chatserver.api.query import Param, Query
from chatserver.errors import InvalidInput
from chatserver.schemas import (
    MAX_ID,
    MessageOut,
    MessagePage,
    NewMessage,
    PageMeta,
    check_message,
)
from chatserver.store import MessageFilter

IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,255}")
MAX_PAGE = 10**9
SEND_EXAMPLE = Example(summary="Send a message", value={"user_id": 1, "message": "hai 12"})
MESSAGE = {
    "id": 13,
    "sent_by": 2,
    "received_by": 1,
    "message": "hai 12",
    "sent_at": "2015-12-25T09:13:40Z",
    "received_at": "2015-12-25T09:14:02Z",
}
PAGE_EXAMPLE = Example(
    summary="The seed's documented inbox page",
    value={
        "meta": {"count": 13, "next": 2, "current_page": "1", "took": 10, "previous": None},
        "messages": [MESSAGE],
    },
)

PAGE_RESPONSE = ResponseSpec(
    data_container=MessagePage,
    description="A page of messages, in the seed's documented shape",
    generate_examples=False,
    examples=[PAGE_EXAMPLE],
)


SENT_RESPONSE = ResponseSpec(
    data_container=MessageOut,
    description="The message as stored (a repeated Idempotency-Key returns the first one)",
    generate_examples=False,
    examples=[Example(summary="A sent message", value={**MESSAGE, "received_at": None})],
)


NEW_MESSAGE = JsonInput(NewMessage, SEND_EXAMPLE)
IDEMPOTENCY_KEY = OpenAPIParameter(
    name="Idempotency-Key",
    param_in=ParamType.HEADER,
    schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=255),
    description="1–255 visible ASCII characters; a repeat returns the first response",
)


@post(
    "/",
    status_code=201,
    responses={
        201: SENT_RESPONSE,
        **docs.WITH_BODY,
        **docs.AUTHED,
        404: docs.NOT_FOUND,
        422: docs.KEY_REUSED,
    },
    operation_class=docs.operation_class(
        parameters=[IDEMPOTENCY_KEY], body=NEW_MESSAGE.request_body()
    ),
)
async def send_message(request: Request[Any, Any, Any]) -> JsonBody:
    """Send a message to a user; durable when the 201 arrives."""
    data = await NEW_MESSAGE.read(request)
    services = services_of(request)
    caller = await caller_of(request, services)
    idempotency_key = header(request.scope, b"idempotency-key")
    if idempotency_key is not None and not IDEMPOTENCY_KEY_RE.fullmatch(idempotency_key):
        raise InvalidInput({"Idempotency-Key": ["1–255 visible ASCII characters"]})
    check_message(data.message)
    result = await actions.send_message(services, caller.user_id, data, idempotency_key)
    return JsonBody(result.body, result.status)


READ_QUERY = Query(
    Param("page", OpenAPIType.INTEGER, default=1, minimum=1, maximum=MAX_PAGE),
    Param("page_size", OpenAPIType.INTEGER, default=10, minimum=1, maximum=100),
    Param(
        "with",
        OpenAPIType.INTEGER,
        minimum=1,
        maximum=MAX_ID,
        description="Only the conversation with them",
    ),
    Param(
        "unread", OpenAPIType.BOOLEAN, default=False, description="Only messages not fetched before"
    ),
    Param(
        "before_id",
        OpenAPIType.INTEGER,
        minimum=0,
        maximum=MAX_ID,
        description="Older than this id, newest first",
    ),
    Param(
        "after_id",
        OpenAPIType.INTEGER,
        minimum=0,
        maximum=MAX_ID,
        description="Newer than this id, oldest first",
    ),
    Param(
        "wait",
        OpenAPIType.NUMBER,
        default=0.0,
        minimum=0.0,
        maximum=30.0,
        description="Long-poll: with after_id, hold up to this many seconds"
        " until a message arrives",
    ),
)


@get(
    "/",
    responses={200: PAGE_RESPONSE, **docs.WITH_QUERY, **docs.AUTHED},
    operation_class=docs.operation_class(parameters=READ_QUERY.openapi()),
)
async def read_messages(request: Request[Any, Any, Any]) -> JsonBody:
    """The latest messages sent to me, newest first (paginated; filters and cursors combine)."""
    services = services_of(request)
    caller = await caller_of(request, services)
    q = READ_QUERY.parse(request.scope)
    page, page_size, wait, after_id = q["page"], q["page_size"], q["wait"], q["after_id"]
    f = MessageFilter(caller.user_id, q["with"], q["unread"], q["before_id"], after_id)
    if wait and after_id is None:
        raise InvalidInput({"wait": ["long-polling needs after_id (the last id you have)"]})
    if wait:
        result = await actions.wait_for_messages(services, caller.user_id, f, page_size, wait)
    else:
        result = await actions.read_messages(services, caller.user_id, f, page, page_size)
    # Encoded here (documented as MessagePage): each message is spliced in as stored JSON.
    body = _encode_page(
        EncodedPage(
            meta=_meta(f, page, page_size, result.count, took_ms(request)),
            messages=[services.messages.json(m) for m in result.messages],
        )
    )
    return JsonBody(body)


class EncodedPage(msgspec.Struct):
    """``MessagePage`` with its messages already encoded."""

    meta: PageMeta
    messages: list[msgspec.Raw]


_encode_page = msgspec.json.Encoder().encode


def _meta(f: MessageFilter, page: int, page_size: int, count: int, took: int) -> PageMeta:
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


HANDLERS = docs.summarized(send_message, read_messages)
router = Router("/api/v1/chats", route_handlers=HANDLERS, tags=["chats"])
