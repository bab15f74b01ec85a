"""``resume``: a WebSocket stream opened with ``?since=`` a position 1,000 events behind,
timed from the connection's start to the last replayed event, several times.

Seeding: a new user sends a little over 1,000 messages through the API (one event each in
their stream). Every repetition replays the same events, checking that each position comes
once, in order, with nothing missing.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

import msgspec

from bench import seed
from bench.report import Row
from bench.scenarios import Context
from bench.ws import STREAM_PATH

TIMEOUT_S = 30.0
EXTRA = 10  # events older than the resume point, so it is not the stream's start


@dataclass
class Replay:
    open_ms: float  # the WebSocket handshake
    total_ms: float  # connection start → the last replayed event


class ReplayError(RuntimeError):
    pass


def scenario(ctx: Context) -> list[Row]:
    sizes = ctx.opts.sizes
    behind = sizes.resume_behind
    user, since, last = asyncio.run(_seed(ctx, behind))
    replays: list[Replay] = []
    errors: list[str] = []
    for _ in range(sizes.resume_repeats):
        try:
            replays.append(asyncio.run(replay(ctx.server.ws_url, user.token, since, last)))
        except Exception as exc:  # a gap, a timeout, a refused or closed socket
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
    return [_row(ctx, behind, replays, errors)]


def _row(ctx: Context, behind: int, replays: list[Replay], errors: list[str]) -> Row:
    totals = [r.total_ms for r in replays]
    p50 = statistics.median(totals) if totals else None
    row = Row(
        scenario="resume",
        case=(
            f"WebSocket ?since= {behind:,} events behind: time to the last replayed event "
            f"(p50 of {len(totals)})"
        ),
        kind="other",
        errors=len(errors),
        metrics={
            "display": "–" if p50 is None else f"{p50:.1f} ms",
            "p50_ms": p50,
            "max_ms": max(totals, default=None),
            "open_p50_ms": statistics.median(r.open_ms for r in replays) if replays else None,
            "total_ms": totals,
            "behind": behind,
        },
    )
    if replays:
        row.notes.append(
            f"handshake p50 {row.metrics['open_p50_ms']:.1f} ms, slowest replay "
            f"{row.metrics['max_ms']:.1f} ms; {behind:,} message events, read back by one "
            "Python client on the same machine"
        )
    row.error_detail.extend(errors[:3])
    row.target = "0 errors"
    row.met = not errors
    return row


async def _seed(ctx: Context, behind: int) -> tuple[seed.User, int, int]:
    """A user with ``behind + EXTRA`` events; the position ``behind`` before their latest."""
    stamp = int(time.time()) % 100000
    async with seed.client(ctx.server, 4) as http:
        user, peer = await asyncio.gather(
            seed.create_user(http, f"resume{stamp}"), seed.create_user(http, f"resumed{stamp}")
        )
    await seed.send_each(ctx.server, user, [peer.id] * (behind + EXTRA), "resume")
    async with seed.client(ctx.server, 1) as http:
        last = await seed.event_position(http, user)
    if last != behind + EXTRA:
        raise seed.SeedError(f"user {user.id} is at position {last}, expected {behind + EXTRA}")
    return user, last - behind, last


async def replay(ws_url: str, token: str, since: int, last: int) -> Replay:
    """Open a stream after ``since`` and read until position ``last``; every position in
    between must come once, in order."""
    from websockets.asyncio.client import connect

    decode = msgspec.json.Decoder().decode
    start = time.perf_counter()
    async with asyncio.timeout(TIMEOUT_S):
        async with connect(
            f"{ws_url}{STREAM_PATH}?since={since}",
            additional_headers={"Authorization": f"Bearer {token}"},
            compression=None,
            ping_interval=None,
            max_queue=None,
        ) as ws:
            opened = time.perf_counter()
            expected = since + 1
            async for frame in ws:
                event = decode(frame)
                if event.get("pos") != expected:
                    raise ReplayError(f"expected position {expected}, got {str(event)[:120]}")
                if expected == last:
                    break
                expected += 1
            else:
                raise ReplayError(f"the stream closed at position {expected - 1} of {last}")
            done = time.perf_counter()
    return Replay(open_ms=(opened - start) * 1000, total_ms=(done - start) * 1000)
