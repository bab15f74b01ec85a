"""The reference apps, served by the same ASGI server with the same flags as chatserver.

* ``raw_app``: a bare ASGI callable returning a fixed JSON body.
* ``litestar_app``: the smallest Litestar route returning the same body.
* ``query_app``: the smallest Litestar route that runs one indexed ``sqlite3`` query on the
  seeded database (``BENCH_DB_PATH``): the ten newest messages of a random one of the
  ``BENCH_USERS`` users, encoded as JSON. The issue's reference for "our code is not what
  holds a user back": no auth, no paging, no count, one statement, run directly.

The fixed body has the size of a real inbox page (``BENCH_BODY_SIZE`` bytes, measured by the
harness on the seeded server; a synthetic 10-message page when unset).
"""

from __future__ import annotations

import os
import random
import sqlite3
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar, MediaType, get

BODY_SIZE_ENV = "BENCH_BODY_SIZE"
DB_PATH_ENV = "BENCH_DB_PATH"
USERS_ENV = "BENCH_USERS"


def make_body(size: int | None = None) -> bytes:
    """A JSON inbox-page-shaped body, padded to exactly ``size`` bytes when possible."""
    messages = [
        {
            "id": 1000 + i,
            "sent_by": 7,
            "received_by": 42,
            "message": "",
            "sent_at": "2025-01-01T12:00:00.000000Z",
            "received_at": None,
        }
        for i in range(10)
    ]
    page: dict[str, Any] = {
        "meta": {"count": 100, "next": 2, "current_page": 1, "took": 0.001, "previous": None},
        "messages": messages,
    }
    base = len(msgspec.json.encode(page))
    target = size if size is not None else base + 10 * 48
    pad = max(0, target - base)
    for i, msg in enumerate(messages):
        msg["message"] = "x" * (pad // 10 + (1 if i < pad % 10 else 0))
    return msgspec.json.encode(page)


BODY = make_body(int(os.environ[BODY_SIZE_ENV]) if os.environ.get(BODY_SIZE_ENV) else None)
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
]


async def raw_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def litestar_route(body: bytes) -> Litestar:
    """The smallest Litestar app: one route returning ``body``.

    ``logging_config=None`` as in chatserver's app; Litestar's default would also set up
    the root logger as soon as this module is imported (the harness imports it)."""

    @get("/", media_type=MediaType.JSON)
    async def page() -> bytes:
        return body

    return Litestar(route_handlers=[page], logging_config=None)


litestar_app = litestar_route(BODY)


LATEST_MESSAGES = (
    "SELECT id, sender_id, recipient_id, body, sent_at, received_at FROM messages"
    " WHERE recipient_id = ? ORDER BY id DESC LIMIT 10"
)


@cache
def _database() -> tuple[sqlite3.Connection, int]:
    uri = Path(os.environ[DB_PATH_ENV]).resolve().as_uri() + "?mode=ro"
    return sqlite3.connect(uri, uri=True, check_same_thread=False), int(os.environ[USERS_ENV])


@get("/", media_type=MediaType.JSON)
async def latest_messages() -> bytes:
    conn, users = _database()
    rows = conn.execute(LATEST_MESSAGES, (random.randint(1, users),)).fetchall()
    return msgspec.json.encode(rows)


query_app = Litestar(route_handlers=[latest_messages], logging_config=None)
