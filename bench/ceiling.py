"""The reference apps, served by the same ASGI server with the same flags as chatserver.

* ``raw_app``: a bare ASGI callable returning a fixed JSON body.
* ``litestar_app``: the smallest Litestar route returning the same body.
* ``query_app``: the smallest Litestar route that runs one indexed ``sqlite3`` query on the
  seeded database (``BENCH_DB_PATH``): the ten newest messages of a random one of the
  ``BENCH_USERS`` users, encoded as JSON. The issue's reference for "our code is not what
  holds a user back": no auth, no paging, no count, one statement, run directly.
* ``insert_app``: the same for a send: the smallest Litestar route that stores one message
  durably. It decodes the send's JSON body, INSERTs the row into a copy of the seeded
  database (``BENCH_WRITE_DB_PATH``; same table, same indexes) from a random sender, and
  commits it through chatserver's own group commit before answering 201. No auth, no
  counters, no conversation number, no idempotency, no events: one statement and the
  durable commit that every send needs.

The fixed body has the size of a real inbox page (``BENCH_BODY_SIZE`` bytes, measured by the
harness on the seeded server; a synthetic 10-message page when unset).
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from contextlib import closing
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar, MediaType, Request, get, post

from chatserver.asgi import tune_garbage_collector
from chatserver.db import SqliteDatabase

BODY_SIZE_ENV = "BENCH_BODY_SIZE"
DB_PATH_ENV = "BENCH_DB_PATH"
WRITE_DB_PATH_ENV = "BENCH_WRITE_DB_PATH"
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


# The two reference routes start as chatserver's worker does (chatserver.asgi): with its
# garbage-collector settings, so that they differ from our routes only by our work.
query_app = Litestar(
    route_handlers=[latest_messages], on_startup=[tune_garbage_collector], logging_config=None
)


class NewMessage(msgspec.Struct):
    user_id: int
    message: str


class StoredMessage(msgspec.Struct):
    id: int
    sent_by: int
    received_by: int
    message: str
    sent_at: int


# The recipient's sequence number is the only value the table needs that the request does
# not carry: one seek on its unique index (chatserver keeps it on the user's row instead).
INSERT_MESSAGE = (
    "INSERT INTO messages (sender_id, recipient_id, body, sent_at, recipient_seq, peer_lo,"
    " peer_hi) VALUES ($1, $2, $3, $4,"
    " coalesce((SELECT max(recipient_seq) FROM messages WHERE recipient_id = $2), 0) + 1,"
    " $5, $6) RETURNING id"
)
_decode_new_message = msgspec.json.Decoder(NewMessage).decode
_encode = msgspec.json.Encoder().encode


def insert_route() -> Litestar:
    """The one-insert route (``insert_app``), with its own database handle.

    ``GET /`` answers the fixed body, for the harness's health check."""
    state: dict[str, Any] = {}

    async def open_database() -> None:
        # Read once here, not per request: the reference should pay only for its insert.
        state["users"] = int(os.environ[USERS_ENV])
        state["db"] = SqliteDatabase(os.environ[WRITE_DB_PATH_ENV])
        tune_garbage_collector()

    async def close_database() -> None:
        await state["db"].close()

    @post("/api/v1/chats/", status_code=201, media_type=MediaType.JSON)
    async def insert_message(request: Request[Any, Any, Any]) -> bytes:
        body = _decode_new_message(await request.body())
        sender = _other_user(body.user_id, state["users"])
        now = time.time_ns() // 1000
        lo, hi = sorted((sender, body.user_id))
        db: SqliteDatabase = state["db"]
        async with db.transaction() as conn:
            message_id = await conn.fetch_val(
                INSERT_MESSAGE, sender, body.user_id, body.message, now, lo, hi
            )
        return _encode(StoredMessage(message_id, sender, body.user_id, body.message, now))

    @get("/", media_type=MediaType.JSON)
    async def health() -> bytes:
        return BODY

    return Litestar(
        route_handlers=[insert_message, health],
        on_startup=[open_database],
        on_shutdown=[close_database],
        logging_config=None,
    )


def _other_user(user_id: int, users: int) -> int:
    """A random user id in 1..users other than ``user_id`` (send.lua's pairs differ too)."""
    other = random.randint(1, users - 1)
    return other + 1 if other >= user_id else other


insert_app = insert_route()


def copy_database(source: Path, dest: Path) -> None:
    """A consistent copy of a live SQLite database (its WAL included), for ``insert_app``."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(dest)) as dst:
        src.backup(dst)
