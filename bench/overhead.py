"""``overhead``: what the rate limits and the metrics add to each hot route's request.

A whole run on this machine moves by 10 % or more from one run to the next, more than the
few per cent these features cost, so two runs (on, then off) cannot tell them apart. Here
one app, built in this process on the server's database with the feature on, is called in
rounds of the same kind of requests (as in ``in-process``) with the feature switched off
and on between rounds — the rate limiter's rules emptied, as ``CHAT_RATE_LIMITS=off``
leaves them; the request observers emptied, as without ``CHAT_METRICS_ADDR`` — so the
machine's drift, the caches and the database fall on both sides alike; each side's CPU per
request (of the event loop's thread, where both features run) is the median over its
rounds. The difference is what the feature adds to a request. Against the server's CPU per
request in the route's HTTP row of the same run (its CPU over the run / its requests), it
is the share of requests/s the feature costs the route (one worker is bound by its CPU);
when that row did not run, the share of the in-process request stands in, which bounds it
from above (over HTTP the same request also pays for uvicorn and the socket).
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from bench.inprocess import SEND_BATCH, Call, Requests, run_calls
from bench.report import Row, pct
from bench.scenarios import Context
from chatserver.app import create_app
from chatserver.asgi import tune_garbage_collector
from chatserver.config import Settings
from testinfra import procs

ROUTES = ("user", "inbox", "send")
# What each feature may cost a hot route's requests/s (issues: rate limits 5 %, metrics 3 %).
BUDGETS = {"rate limits": 0.05, "metrics": 0.03}
HOUR = 3600.0
# Switches a feature of the running app on (True) or off.
Switch = Callable[[bool], None]


def switches(app: Any) -> dict[str, Switch]:
    """The features of ``app`` (built with both on), each as a switch."""
    limits, context = app.state.services.limits, app.request_context
    rules, observers = limits.rules, context.observers

    def rate_limits(on: bool) -> None:
        limits.rules = rules if on else {}

    def metrics(on: bool) -> None:
        context.observers = observers if on else ()

    return {"rate limits": rate_limits, "metrics": metrics}


def scenario(ctx: Context) -> list[Row]:
    server = dataclasses.replace(ctx.server.settings, rate_limits="on", metrics="off")
    settings = Settings(
        database_url=server.database_url,
        redis_url=server.redis_url,
        metrics_addr=f"127.0.0.1:{procs.free_port()}",
        # No background writes of last-seen times while measuring: they would fall in
        # some rounds and not others (a request writes what it must itself).
        last_seen_resolution_seconds=HOUR,
        token_use_resolution_seconds=HOUR,
        **server.limit_settings(),
    )
    sizes = ctx.opts.sizes
    rounds, per_round = sizes.overhead_rounds, sizes.overhead_calls
    costs = asyncio.run(_alternate(settings, Requests(ctx.data, seed=4), rounds, per_round))
    rows = []
    for (feature, route), cost in costs.items():
        row = _row(feature, route, cost, ctx.http_cpu_us.get(route))
        row.case += f" (median of {rounds} alternating rounds of {per_round:,} calls)"
        rows.append(row)
    return rows


async def _alternate(
    settings: Settings, requests: Requests, rounds: int, per_round: int
) -> dict[tuple[str, str], tuple[float, float, int]]:
    """Per feature and route: (median µs on, median µs off, calls outside 2xx)."""
    tune_garbage_collector()  # as the server's worker does
    app = create_app(settings)
    results = {}
    async with app.lifespan():
        for feature, switch in switches(app).items():
            for route in ROUTES:
                results[feature, route] = await _measure(
                    app, switch, requests, route, rounds, per_round
                )
            switch(True)
    return results


async def _measure(
    app: Any, switch: Switch, requests: Requests, route: str, rounds: int, per_round: int
) -> tuple[float, float, int]:
    batch = SEND_BATCH if route == "send" else 1
    await run_calls(app, [requests.make(route) for _ in range(per_round)], batch)  # warm-up
    times: dict[bool, list[float]] = {True: [], False: []}
    errors = 0
    for index, calls in enumerate(_rounds(requests, route, rounds, per_round)):
        if batch == 1:
            # A read marks what it returns received, a durable write, once: done here, so
            # neither side's measured pass pays for it.
            await run_calls(app, calls, batch)
        # On first in even rounds, off first in odd ones.
        for on in (True, False) if index % 2 == 0 else (False, True):
            switch(on)
            cpu, failed = await _cpu_per_call(app, calls, batch)
            times[on].append(cpu)
            errors += failed
    return statistics.median(times[True]), statistics.median(times[False]), errors


def _rounds(requests: Requests, route: str, rounds: int, per_round: int) -> Iterator[list[Call]]:
    for _ in range(rounds):
        yield [requests.make(route) for _ in range(per_round)]


async def _cpu_per_call(app: Any, calls: list[Call], batch: int) -> tuple[float, int]:
    """CPU of the event loop's thread per call: where both features run. The commit and
    checkpoint threads' work (fsyncs, WAL copies), which falls in rounds at random and
    would blur a send's few microseconds, is left out."""
    started = time.thread_time()
    statuses = await run_calls(app, calls, batch)
    cpu = time.thread_time() - started
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
