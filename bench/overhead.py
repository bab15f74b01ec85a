"""``overhead``: what the rate limits and the metrics add to each hot route's request.

A whole run on this machine moves by 10 % or more from one run to the next, more than the
few per cent these features cost, so two runs (on, then off) cannot tell them apart. Here
two apps on the server's database, alike but for the feature, are built in this process and
called in alternating rounds of the same kind of requests (as in ``in-process``), so the
machine's drift falls on both alike; each side's CPU per request is the median over its
rounds. The difference is what the feature adds to a request. Against the server's CPU per
request in the route's HTTP row of the same run (its CPU over the run / its requests), it is
the share of requests/s the feature costs the route (one worker is bound by its CPU); when
that row did not run, the share of the in-process request stands in, which bounds it from
above (over HTTP the same request also pays for uvicorn and the socket).
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

from bench.inprocess import SEND_BATCH, App, Call, Requests, run_calls
from bench.report import Row, pct
from bench.scenarios import Context
from chatserver.app import create_app
from chatserver.asgi import tune_garbage_collector
from chatserver.config import Settings
from testinfra import procs

ROUTES = ("user", "inbox", "send")
# What each feature may cost a hot route's requests/s (issues: rate limits 5 %, metrics 3 %).
BUDGETS = {"rate limits": 0.05, "metrics": 0.03}


@dataclass(frozen=True)
class Pair:
    """The same app with the feature on and off."""

    feature: str
    on: Settings
    off: Settings


def pairs(base: Settings) -> list[Pair]:
    """Rate limits on (set high enough never to refuse, as the bench's server) vs
    ``CHAT_RATE_LIMITS=off``, metrics off; metrics on (own port) vs off, limits on."""
    limits_off = dataclasses.replace(base, rate_limits="off")
    metrics_on = dataclasses.replace(base, metrics_addr=f"127.0.0.1:{procs.free_port()}")
    return [Pair("rate limits", base, limits_off), Pair("metrics", metrics_on, base)]


def scenario(ctx: Context) -> list[Row]:
    server = dataclasses.replace(ctx.server.settings, rate_limits="on", metrics="off")
    base = Settings(
        database_url=server.database_url, redis_url=server.redis_url, **server.limit_settings()
    )
    sizes = ctx.opts.sizes
    rounds, per_round = sizes.overhead_rounds, sizes.overhead_calls
    rows = []
    for pair in pairs(base):
        costs = asyncio.run(_alternate(pair, Requests(ctx.data, seed=4), rounds, per_round))
        for route in ROUTES:
            row = _row(pair.feature, route, costs[route], ctx.http_cpu_us.get(route))
            row.case += f" (median of {rounds} alternating rounds of {per_round:,} calls)"
            rows.append(row)
    return rows


async def _alternate(
    pair: Pair, requests: Requests, rounds: int, per_round: int
) -> dict[str, tuple[float, float, int]]:
    """Per route: (median µs on, median µs off, calls outside 2xx)."""
    tune_garbage_collector()  # as the server's worker does
    async with AsyncExitStack() as stack:
        apps = create_app(pair.on), create_app(pair.off)
        for litestar in apps:
            await stack.enter_async_context(litestar.lifespan())
        on, off = apps
        results = {}
        for route in ROUTES:
            batch = SEND_BATCH if route == "send" else 1
            warm = [requests.make(route) for _ in range(per_round)]
            for each in (on, off):
                await run_calls(each, warm, batch)
            on_us: list[float] = []
            off_us: list[float] = []
            errors = 0
            for calls in _rounds(requests, route, rounds, per_round):
                if batch == 1:
                    # A read marks what it returns received, a durable write, once: done
                    # here, so neither side's measured pass pays for it.
                    await run_calls(off, calls, batch)
                for target, into in _order(on, off, on_us, off_us, len(on_us)):
                    cpu, failed = await _cpu_per_call(target, calls, batch)
                    into.append(cpu)
                    errors += failed
            results[route] = (statistics.median(on_us), statistics.median(off_us), errors)
        return results


def _rounds(requests: Requests, route: str, rounds: int, per_round: int) -> Iterator[list[Call]]:
    for _ in range(rounds):
        yield [requests.make(route) for _ in range(per_round)]


def _order(
    on: App, off: App, on_us: list[float], off_us: list[float], index: int
) -> list[tuple[App, list[float]]]:
    """On first in even rounds, off first in odd ones: neither always runs on a warm cache."""
    both = [(on, on_us), (off, off_us)]
    return both if index % 2 == 0 else both[::-1]


async def _cpu_per_call(app: App, calls: list[Call], batch: int) -> tuple[float, int]:
    started = time.process_time()
    statuses = await run_calls(app, calls, batch)
    cpu = time.process_time() - started
    return cpu * 1e6 / len(calls), sum(1 for status in statuses if not 200 <= status < 300)


def _row(feature: str, route: str, cost: tuple[float, float, int], http_us: float | None) -> Row:
    on, off, errors = cost
    added = on - off
    # Of the HTTP request when its row ran in this run, else of the in-process one (above).
    share = added / (http_us or on)
    against = f"{http_us:.0f} µs of server CPU per HTTP request" if http_us else "in process"
    budget = BUDGETS[feature]
    row = Row(
        scenario="overhead",
        case=f"{route}: {feature} on vs off, CPU per request",
        kind="other",
        metrics={
            "display": f"{added:+.1f} µs ({on:.1f} vs {off:.1f} in process): {pct(share)} of"
            f" {against}",
            "on_us": on,
            "off_us": off,
            "http_us": http_us,
            "share": share,
        },
        errors=errors,
        target=f"≤ {pct(budget)} of requests/s",
        met=errors == 0 and share <= budget,
    )
    if errors:
        row.error_detail.append(f"{errors} calls answered outside 2xx")
    return row
