"""``in-process``: what each hot route costs with no server and no network in between.

The HTTP rows measure our code together with uvicorn, the kernel's TCP path and wrk on the
same two cores. Here the harness builds the same app (``create_app``, with the server's
database and Redis) in its own process, runs its lifespan and calls it as an ASGI app with
the requests the wrk scripts make: reads one at a time, after one pass over the same calls
(so no measured read marks messages received: that durable write is the HTTP rows'
business); sends 32 at a time (so that group commit batches them as under load), after a
warm-up. The smallest Litestar route and, on SQLite, the one-query route (with GETs) and
the one-insert route (with the sends, on a copy of the database) are called the same way,
so each route's cost beside theirs says what our code costs beside the framework's, with
the server and the network taken out. The machine's own speed still varies between runs
(compare within one run, as with the HTTP rows). Reported, not a target: the
targets are the HTTP ratios.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import ceiling, seed
from bench.report import Row, pct
from bench.scenarios import Context
from bench.seed import BenchData
from chatserver.app import create_app
from chatserver.asgi import tune_garbage_collector
from chatserver.config import Settings, database_scheme, sqlite_path

SEND_BATCH = 32
App = Callable[..., Any]
Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Call:
    """One request as the ASGI app receives it."""

    method: str
    path: str
    query: bytes = b""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""


async def status_of(app: App, call: Call) -> int:
    """Call ``app`` once; the response's status (0 when it sent none)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": call.method,
        "scheme": "http",
        "path": call.path,
        "raw_path": call.path.encode(),
        "query_string": call.query,
        "root_path": "",
        "headers": [(b"host", b"bench"), *call.headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": call.body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


class Requests:
    """The wrk scripts' requests (bench/lua/common.lua), drawn from the seeded data."""

    def __init__(self, data: BenchData, seed: int = 1) -> None:
        self._data = data
        self._rng = random.Random(seed)

    def make(self, route: str) -> Call:
        i = self._rng.randrange(len(self._data.users))
        user = self._data.users[i]
        auth: Headers = [(b"authorization", f"Bearer {user.token}".encode())]
        if route == "inbox":
            return Call("GET", "/api/v1/chats/", b"page=1&page_size=10", tuple(auth))
        if route == "conversation":
            other = self._rng.choice(self._data.partners[i])
            query = f"with={other}&page=1&page_size=10".encode()
            return Call("GET", "/api/v1/chats/", query, tuple(auth))
        if route == "sync":
            query = f"after_id={self._data.after[i]}&page_size=10".encode()
            return Call("GET", "/api/v1/chats/", query, tuple(auth))
        if route == "user":
            other_id = self._rng.choice(self._data.users).id
            return Call("GET", "/api/v1/users/", f"user_id={other_id}".encode(), tuple(auth))
        if route == "send":
            j = self._rng.randrange(len(self._data.users) - 1)
            other_id = self._data.users[j + 1 if j >= i else j].id
            body = f'{{"user_id":{other_id},"message":"in-process message"}}'.encode()
            json_type = (b"content-type", b"application/json")
            return Call("POST", "/api/v1/chats/", b"", (*auth, json_type), body)
        raise ValueError(f"no such route: {route}")


@dataclass(frozen=True)
class Cost:
    cpu_us: float  # CPU time of this process per request, every thread included
    errors: int


async def measure(app: App, calls: list[Call], warmup: list[Call], batch: int = 1) -> Cost:
    """CPU per request over ``calls``, after ``warmup``; ``batch`` requests at a time."""
    await run_calls(app, warmup, batch)
    started = time.process_time()
    statuses = await run_calls(app, calls, batch)
    cpu = time.process_time() - started
    errors = sum(1 for status in statuses if not 200 <= status < 300)
    return Cost(cpu * 1e6 / len(calls), errors)


async def run_calls(app: App, calls: list[Call], batch: int) -> list[int]:
    """Call ``app`` with each of ``calls``, ``batch`` at a time; their statuses."""
    if batch == 1:
        return [await status_of(app, call) for call in calls]
    statuses: list[int] = []
    for start in range(0, len(calls), batch):
        chunk = calls[start : start + batch]
        statuses += await asyncio.gather(*(status_of(app, call) for call in chunk))
    return statuses


ROUTES = ("inbox", "conversation", "sync", "user", "send")


def scenario(ctx: Context) -> list[Row]:
    server = ctx.server.settings
    settings = Settings(
        database_url=server.database_url, redis_url=server.redis_url, **server.app_settings()
    )
    # Cursors four messages behind, read now (the scenarios before have sent since): the
    # usual sync of a connected client, as in the HTTP row "sync (4 new messages)".
    (four_behind,) = asyncio.run(seed.sync_cursors(ctx.server, ctx.data, (4,)))
    data = dataclasses.replace(ctx.data, after=four_behind)
    sizes = ctx.opts.sizes
    insert_db = None
    if database_scheme(settings.database_url) == "sqlite":
        insert_db = ctx.workdir / "insert-reference-in-process.db"
        ceiling.copy_database(Path(sqlite_path(settings.database_url)), insert_db)
    count, warmup = sizes.inprocess_calls, sizes.inprocess_warmup
    results = asyncio.run(costs(settings, data, count, warmup, insert_db))
    return rows(results, count)


async def costs(
    settings: Settings, data: BenchData, count: int, warmup: int, insert_db: Path | None
) -> dict[str, Cost]:
    """Each reference's and each route's cost, the references first (on SQLite, the
    one-insert route on ``insert_db``, a copy of the database)."""
    app = create_app(settings)
    tune_garbage_collector()  # as the server's worker does (chatserver.asgi)
    references: dict[str, App] = {
        "litestar": ceiling.litestar_route(ceiling.make_body(data.page_bytes or None))
    }
    if database_scheme(settings.database_url) == "sqlite":
        os.environ[ceiling.DB_PATH_ENV] = sqlite_path(settings.database_url)
        os.environ[ceiling.USERS_ENV] = str(len(data.users))
        references["query"] = ceiling.query_app
    ceiling_call = Call("GET", "/")
    results = {
        name: await measure(reference, [ceiling_call] * count, [ceiling_call] * warmup)
        for name, reference in references.items()
    }
    if insert_db is not None:
        results["insert"] = await _insert_cost(insert_db, data, count, warmup)
    requests = Requests(data)
    if insert_db is not None:
        copy = insert_db.with_name("no-search-index.db")
        results["send without search index"] = await _send_without_search(
            settings, copy, data, (count, warmup)
        )
    async with app.lifespan():
        for route in ROUTES:
            calls = [requests.make(route) for _ in range(count)]
            if route == "send":
                warm = [requests.make(route) for _ in range(warmup)]
                results[route] = await measure(app, calls, warm, SEND_BATCH)
            else:
                # The same calls first: then none of the measured ones marks messages
                # received (that durable write is in the HTTP rows), whatever ran before.
                results[route] = await measure(app, calls, calls)
    return results


async def _send_without_search(
    settings: Settings, copy: Path, data: BenchData, sizes: tuple[int, int]
) -> Cost:
    """The send on a copy of the database whose search index is not kept (its mark of the
    last indexed message set beyond any id, so each COMMIT finds nothing to index): beside
    the send row, what keeping the FTS5 index costs a send. The same settings as the send
    row (its limits too), on the copy."""
    count, warmup = sizes
    ceiling.copy_database(Path(sqlite_path(settings.database_url)), copy)
    with closing(sqlite3.connect(copy)) as conn:
        conn.execute("UPDATE search_indexed SET up_to = ?", (2**62,))
        conn.commit()
    requests = Requests(data, seed=3)
    app = create_app(dataclasses.replace(settings, database_url=f"sqlite:///{copy}"))
    async with app.lifespan():
        calls = [requests.make("send") for _ in range(count)]
        warm = [requests.make("send") for _ in range(warmup)]
        return await measure(app, calls, warm, SEND_BATCH)


async def _insert_cost(path: Path, data: BenchData, count: int, warmup: int) -> Cost:
    """The one-insert route with the send's calls, 32 at a time as the sends."""
    os.environ[ceiling.WRITE_DB_PATH_ENV] = str(path)
    requests = Requests(data, seed=2)
    insert = ceiling.insert_route()
    async with insert.lifespan():
        calls = [requests.make("send") for _ in range(count)]
        warm = [requests.make("send") for _ in range(warmup)]
        return await measure(insert, calls, warm, SEND_BATCH)


LABELS = {
    "litestar": "smallest Litestar route",
    "query": "Litestar route + one sqlite3 query",
    "insert": "Litestar route + one durable INSERT",
    "sync": "sync (4 new messages)",
    "send without search index": "send, search index not kept",
}


def rows(results: dict[str, Cost], count: int) -> list[Row]:
    """One row per route: µs of CPU per request and its ratio to the Litestar route's."""
    base = results["litestar"].cpu_us
    out = []
    for name, cost in results.items():
        label = LABELS.get(name, name)
        ratio = "" if name == "litestar" else f" ({pct(base / cost.cpu_us)} of the route's rate)"
        row = Row(
            scenario="in-process",
            case=f"{label}: CPU per request, {count:,} calls",
            kind="other",
            metrics={"cpu_us": cost.cpu_us, "display": f"{cost.cpu_us:.1f} µs{ratio}"},
            errors=cost.errors,
            target="reported",
            met=cost.errors == 0,
        )
        if cost.errors:
            row.error_detail.append(f"{cost.errors} of {count} calls answered outside 2xx")
        out.append(row)
    return out
