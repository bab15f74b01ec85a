"""``presence``: server CPU when a user with 5,000 conversations (500 in quick mode) connects
and disconnects, beside a user with 10, while some of their peers stream.

Seeding: the peers are written straight to the database (``seed.insert_users``) and
``chatserver bulk-load --sender FIRST --last-sender LAST`` gives the user one conversation
with each. A few watchers, signed up through the API, write to both users and stream: each
connect and disconnect is delivered to them as a ``presence`` event.

One cycle: open the user's WebSocket, wait until every watcher has the ``online`` event,
close it, wait until every watcher has the ``offline`` event (the server's grace period,
3 s by default, comes first). The row is the server's CPU time per cycle (its whole process
tree, read from /proc), for both users; the difference is what the other conversations
cost. A warm-up cycle first proves every watcher's stream live.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial

from websockets.asyncio.client import ClientConnection, connect

from bench import seed
from bench.report import Row
from bench.scenarios import Context
from bench.ws import STREAM_PATH
from testinfra import procs

SMALL = 10
MESSAGE = 0  # queued for a message event (no user has id 0)
EVENT_TIMEOUT_S = 30.0


@dataclass
class Cycles:
    cpu_ms: float  # server CPU per connect + disconnect
    online_ms: list[float]  # connect started -> every watcher has the online event


def scenario(ctx: Context) -> list[Row]:
    sizes = ctx.opts.sizes
    t0 = time.monotonic()
    small, big, watchers = asyncio.run(
        _seed(ctx, sizes.presence_conversations, sizes.presence_watchers)
    )
    seed_s = time.monotonic() - t0
    small_run, big_run = asyncio.run(_measure(ctx, small, big, watchers, sizes.presence_cycles))
    online_p50 = statistics.median(big_run.online_ms)
    row = Row(
        scenario="presence",
        case=(
            f"a user with {sizes.presence_conversations:,} conversations connects and "
            f"disconnects: server CPU per cycle ({SMALL} conversations in brackets)"
        ),
        kind="other",
        metrics={
            "display": f"{big_run.cpu_ms:.1f} ms ({small_run.cpu_ms:.1f} ms)",
            "cpu_ms_per_cycle": big_run.cpu_ms,
            "small_cpu_ms_per_cycle": small_run.cpu_ms,
            "online_p50_ms": online_p50,
            "conversations": sizes.presence_conversations,
            "watchers": len(watchers),
            "cycles": sizes.presence_cycles,
        },
    )
    row.notes.append(
        f"{len(watchers)} of the peers streaming, {sizes.presence_cycles} cycles each; the "
        f"online event reached every watcher {online_p50:.0f} ms (p50) after the connect "
        f"began; seeded in {seed_s:.1f} s"
    )
    row.target = "0 errors"
    row.met = True
    return [row]


async def _seed(
    ctx: Context, conversations: int, watcher_count: int
) -> tuple[seed.User, seed.User, list[seed.User]]:
    server = ctx.server
    stamp = int(time.time()) % 100000
    async with seed.client(server, 8) as http:
        users = await seed.gather_limited(
            8,
            [partial(seed.create_user, http, f"pres{stamp}x{i}") for i in range(watcher_count + 2)],
        )
        small, big, watchers = users[0], users[1], users[2:]
        for watcher in watchers:
            await seed.send(http, watcher, small.id, "hi")
            await seed.send(http, watcher, big.id, "hi")
    peers = await seed.insert_users(server.settings.database_url, f"pp{stamp}x", conversations)
    if peers != list(range(peers[0], peers[0] + len(peers))):
        raise seed.SeedError("the inserted peers' ids are not consecutive")
    seed.bulk_load(server, peers[0], small.id, 1, last_sender=peers[SMALL - 1])
    seed.bulk_load(server, peers[0], big.id, 1, last_sender=peers[-1])
    return small, big, watchers


async def _measure(
    ctx: Context, small: seed.User, big: seed.User, watchers: list[seed.User], cycles: int
) -> tuple[Cycles, Cycles]:
    async with _watching(ctx.server.ws_url, watchers) as queues:
        await _cycle(ctx.server.ws_url, big, queues)  # warm-up: every watcher is live
        small_run = await _cycles(ctx, small, queues, cycles)
        big_run = await _cycles(ctx, big, queues, cycles)
    return small_run, big_run


async def _cycles(
    ctx: Context, user: seed.User, queues: list[asyncio.Queue[tuple[int, bool]]], cycles: int
) -> Cycles:
    cpu0 = procs.tree_cpu_seconds(ctx.server.pid)
    online = [await _cycle(ctx.server.ws_url, user, queues) for _ in range(cycles)]
    cpu_ms = (procs.tree_cpu_seconds(ctx.server.pid) - cpu0) * 1000 / cycles
    return Cycles(cpu_ms, online)


async def _cycle(
    ws_url: str, user: seed.User, queues: list[asyncio.Queue[tuple[int, bool]]]
) -> float:
    """Connect and disconnect once; ms from the connect to the last watcher's online event."""
    t0 = time.monotonic()
    async with _stream(ws_url, user.token):
        await _all_told(queues, user.id, online=True)
        online_ms = (time.monotonic() - t0) * 1000
    await _all_told(queues, user.id, online=False)
    return online_ms


async def _all_told(
    queues: list[asyncio.Queue[tuple[int, bool]]], user_id: int, online: bool
) -> None:
    async def told(queue: asyncio.Queue[tuple[int, bool]]) -> None:
        while await queue.get() != (user_id, online):
            pass

    async with asyncio.timeout(EVENT_TIMEOUT_S):
        await asyncio.gather(*(told(queue) for queue in queues))


@contextlib.asynccontextmanager
async def _stream(ws_url: str, token: str, query: str = "") -> AsyncIterator[ClientConnection]:
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(f"{ws_url}{STREAM_PATH}{query}", additional_headers=headers) as ws:
        yield ws


@contextlib.asynccontextmanager
async def _watching(
    ws_url: str, watchers: list[seed.User]
) -> AsyncIterator[list[asyncio.Queue[tuple[int, bool]]]]:
    """Each watcher's stream, its presence events queued as (user id, online). Streams
    replay from position 0 (the watcher's two messages): once those are here, the stream
    is subscribed (a feed subscribes before it replays)."""
    queues: list[asyncio.Queue[tuple[int, bool]]] = [asyncio.Queue() for _ in watchers]
    async with contextlib.AsyncExitStack() as stack:
        streams = [
            await stack.enter_async_context(_stream(ws_url, w.token, "?since=0")) for w in watchers
        ]
        readers = [asyncio.create_task(_read(ws, q)) for ws, q in zip(streams, queues, strict=True)]
        try:
            for _ in range(2):
                await _all_told(queues, MESSAGE, online=True)
            yield queues
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)


async def _read(ws: ClientConnection, queue: asyncio.Queue[tuple[int, bool]]) -> None:
    async for raw in ws:
        event = json.loads(raw)
        if event.get("type") == "presence":
            queue.put_nowait((int(event["user_id"]), bool(event["online"])))
        elif event.get("type") == "message":
            queue.put_nowait((MESSAGE, True))
