"""``search``: ``GET /api/v1/chats/?q=`` over the big inbox's 1,000,000 bulk-loaded messages
(20,000 in quick mode), beside the same user's inbox page 1 on the same database.

The bulk loader writes "bulk message N" (N = 1, 2, 3 …): a one-word query for a number
deep in history and a two-word one ("message N") each find one message among all the
user's, so the rows show what finding a message costs however large the history is. A
third row asks for a word every message holds: its ``count`` counts them all, which no
index makes O(1); reported, without a target.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import quote

from bench import seed
from bench.report import Row
from bench.scenarios import Context, comparison_row, measure_path

SEARCH_RATIO_TARGET = 3.0


def scenario(ctx: Context) -> list[Row]:
    user, count = ctx.big_user, ctx.big_count
    if user is None:  # big-inbox did not run: load the same inbox here
        user, count = _load(ctx)
    inbox = measure_path(ctx, user, "/api/v1/chats/?page=1&page_size=10")
    calls = (
        (f"one word, 1 match (q={count // 2})", str(count // 2), True),
        (f"two words, 1 match (q=message {count // 3})", f"message {count // 3}", True),
        (f"one word in every message (q=bulk, count {count:,})", "bulk", False),
    )
    rows = []
    for label, q, targeted in calls:
        asyncio.run(_check(ctx, user, q, 1 if targeted else count))
        result = measure_path(ctx, user, f"/api/v1/chats/?q={quote(q)}&page_size=10")
        row = comparison_row(ctx, "search", f"{label} vs inbox page 1", inbox, result)
        if not ctx.zero_errors_target:
            ratio = row.metrics["ratio"]
            row.target = f"p50 ≤ {SEARCH_RATIO_TARGET:g}× inbox page" if targeted else "reported"
            row.met = not row.errors and (
                not targeted or (ratio is not None and ratio <= SEARCH_RATIO_TARGET)
            )
        rows.append(row)
    rows[0].notes.append(
        f"{count:,} messages in the searched user's inbox; 'small' is that inbox's page 1"
    )
    return rows


def _load(ctx: Context) -> tuple[seed.User, int]:
    count = ctx.opts.sizes.big_count
    sender, user = asyncio.run(_users(ctx))
    seed.bulk_load(ctx.server, sender.id, user.id, count)
    return user, count


async def _users(ctx: Context) -> tuple[seed.User, seed.User]:
    stamp = int(time.time()) % 100000
    async with seed.client(ctx.server, 2) as http:
        sender = await seed.create_user(http, f"searchsend{stamp}")
        return sender, await seed.create_user(http, f"searchbox{stamp}")


async def _check(ctx: Context, user: seed.User, q: str, expected: int) -> None:
    """The query finds what the row says it does (a search that found nothing is cheap)."""
    async with seed.client(ctx.server, 1) as http:
        body = seed.check(await seed.inbox(http, user, f"q={quote(q)}"), 200, f"search {q}")
    if body["meta"]["count"] != expected:
        raise seed.SeedError(f"q={q!r} found {body['meta']['count']} messages, not {expected}")
