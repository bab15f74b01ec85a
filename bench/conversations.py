"""``conversations``: the conversation list of a user with 10 conversations beside that of a
user with 10,000 (1,000 in quick mode), compared as big-inbox compares inboxes.

Seeding: the people they talk to are written straight to the database with chatserver's
store functions (an argon2 hash each through the API would take minutes); then each of the
two users sends one message to each of their people through the API, so every
conversation row, counter and event is written by the real send path.
"""

from __future__ import annotations

import asyncio
import time

from bench import seed
from bench.report import Row
from bench.scenarios import Context, comparison_row, measure_path

SMALL = 10
PATH = "/api/v1/conversations/"


def scenario(ctx: Context) -> list[Row]:
    sizes = ctx.opts.sizes
    server = ctx.server
    t0 = time.monotonic()
    stamp = int(time.time()) % 100000
    small, big = asyncio.run(_users(ctx, stamp))
    t1 = time.monotonic()
    peers = asyncio.run(
        seed.insert_users(server.settings.database_url, f"peer{stamp}x", sizes.conversations_big)
    )
    t2 = time.monotonic()
    print(f"  inserted {len(peers):,} users in {t2 - t1:.1f}s", flush=True)
    small_ids = asyncio.run(seed.send_each(server, small, peers[:SMALL], "hello"))
    big_ids = asyncio.run(seed.send_each(server, big, peers, "hello"))
    print(f"  sent {SMALL + len(peers):,} messages in {time.monotonic() - t2:.1f}s", flush=True)
    seed_s = time.monotonic() - t0
    asyncio.run(_check_counts(ctx, big, len(peers)))
    # Both users' pages hold as many conversations, so only the list's size differs.
    calls = (
        ("list page 1", "page_size=10", "page_size=10"),
        (
            "a page deep in the list (before=)",
            f"page_size=5&before={_deep(small_ids, SMALL // 2)}",
            f"page_size=5&before={_deep(big_ids, len(big_ids) * 9 // 10)}",
        ),
    )
    rows = []
    for label, small_query, big_query in calls:
        small_res = measure_path(ctx, small, f"{PATH}?{small_query}")
        big_res = measure_path(ctx, big, f"{PATH}?{big_query}")
        row = comparison_row(ctx, "conversations", label, small_res, big_res)
        row.metrics.update(small_conversations=SMALL, big_conversations=len(peers))
        rows.append(row)
    rows[0].notes.append(
        f"{SMALL} and {len(peers):,} conversations (seeded in {seed_s:.1f} s); "
        f"{sizes.big_connections} connections"
    )
    return rows


def _deep(message_ids: list[int], depth: int) -> int:
    """A ``before`` cursor below the ``depth`` latest conversations (each conversation's
    latest message is the one message sent in it)."""
    return sorted(message_ids, reverse=True)[depth - 1]


async def _users(ctx: Context, stamp: int) -> tuple[seed.User, seed.User]:
    async with seed.client(ctx.server, 4) as http:
        small, big = await asyncio.gather(
            seed.create_user(http, f"conv10x{stamp}"), seed.create_user(http, f"convbig{stamp}")
        )
    return small, big


async def _check_counts(ctx: Context, user: seed.User, expected: int) -> None:
    """The seeded list is whole: its last page ends exactly at ``expected`` conversations."""
    seen, before = 0, ""
    async with seed.client(ctx.server, 1) as http:
        while True:
            body = seed.check(
                await http.get(
                    f"{PATH}?page_size=100{before}",
                    headers={"Authorization": f"Bearer {user.token}"},
                ),
                200,
                "conversations",
            )
            seen += len(body["conversations"])
            if body["next"] is None:
                break
            before = f"&before={body['next']}"
    if seen != expected:
        raise seed.SeedError(f"user {user.id} has {seen} conversations, expected {expected}")
