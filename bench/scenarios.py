"""The scenarios. Each takes the run context and returns result rows."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench import seed, ws
from bench.config import Options
from bench.report import Row
from bench.server import ChatServer
from bench.wrk import WrkResult, run_wrk
from testinfra import procs

# Targets for SQLite, one worker (reported, never asserted).
HTTP_TARGETS = {"send": 0.40, "inbox": 0.45, "conversation": 0.45, "sync": 0.45, "user": 0.55}
P99_TARGET_MS = 25.0
BIG_RATIO_TARGET = 1.5
FANOUT_P99_TARGET_MS = 50.0
IDLE_SOCKET_TARGET_KIB = 30.0
STARTUP_TARGET_S = 1.0
IDLE_RSS_TARGET_MIB = 80.0


@dataclass
class Context:
    opts: Options
    workdir: Path
    server: ChatServer
    data: seed.BenchData
    ceilings: dict[str, WrkResult] = field(default_factory=dict)
    # big-inbox's user with its bulk-loaded inbox, which search then searches
    big_user: seed.User | None = None
    big_count: int = 0
    # The server's CPU per request (µs) in each HTTP scenario's main run, for ``overhead``.
    http_cpu_us: dict[str, float] = field(default_factory=dict)

    @property
    def zero_errors_target(self) -> bool:
        """Outside the default setup the only target is "zero errors"."""
        return not self.opts.default_setup


def wrk_row(scenario: str, case: str, result: WrkResult, ctx: Context | None) -> Row:
    metrics: dict[str, Any] = result.to_json()
    if ctx is not None:
        like_for_like = "insert" if scenario in WRITE_SCENARIOS else "query"
        for name in ("raw", "litestar", like_for_like):
            metrics[f"vs_{name}"] = _ratio(result, ctx.ceilings.get(name))
    row = Row(scenario=scenario, case=case, kind="http", metrics=metrics, errors=result.errors)
    if ctx is not None and not case and result.rps and result.server_cpu:
        ctx.http_cpu_us[scenario] = result.server_cpu / result.rps * 1e6
    if result.errors:
        row.error_detail.append(
            f"{result.status_errors} responses with status >= 400, "
            f"{result.socket_errors} socket errors/timeouts out of {result.requests} requests"
        )
    _note_steal(row, result.steal)
    if result.generator_saturated:
        row.notes.append(
            "load generator saturated: busiest wrk thread at "
            f"{100 * result.generator_max_thread:.0f} % of a core — the number is a floor, "
            "not the server's limit"
        )
    return row


def _note_steal(row: Row, share: float) -> None:
    """The report names, in one line, the rows whose runs had this much steal."""
    row.metrics["machine_steal_share"] = round(share, 3)


def measure(
    ctx: Context,
    url: str,
    script: str,
    data_file: Path | None,
    server_pid: int | None,
    *,
    connections: int | None = None,
    threads: int | None = None,
    duration: float | None = None,
    warmup: float | None = None,
    timeout_s: float = 10.0,
) -> WrkResult:
    """A warm-up run (not kept; skipped when ``warmup`` is 0) then the measured run."""
    sizes = ctx.opts.sizes
    kwargs: dict[str, Any] = {
        "connections": connections or sizes.connections,
        "threads": threads or sizes.wrk_threads,
        "data_file": data_file,
        "server_pid": server_pid,
        "timeout_s": timeout_s,
    }
    warm = sizes.warmup if warmup is None else warmup
    if warm > 0:
        run_wrk(url, script, duration=warm, **kwargs)
    return run_wrk(url, script, duration=duration or sizes.duration, **kwargs)


# --------------------------------------------------------------------------- ceilings


REFERENCE_LABELS = {
    "raw": "ceiling: raw ASGI app",
    "litestar": "ceiling: smallest Litestar route",
    "query": "reference: Litestar route + one sqlite3 query",
    "insert": "reference: Litestar route + one durable INSERT",
}
# Compared with the one-insert route instead of the one-query route.
WRITE_SCENARIOS = frozenset({"send", "read", "edit"})


def ceiling_row(name: str, result: WrkResult, ceilings: dict[str, WrkResult]) -> Row:
    """A reference's row, with its ratio to each ceiling measured before it."""
    row = wrk_row(REFERENCE_LABELS[name], "", result, None)
    row.metrics.update(vs_query=None, vs_insert=None)
    for base in ("raw", "litestar"):
        row.metrics[f"vs_{base}"] = None if base == name else _ratio(result, ceilings.get(base))
    return row


def _ratio(result: WrkResult, reference: WrkResult | None) -> float | None:
    return result.rps / reference.rps if reference and reference.rps else None


# --------------------------------------------------------------------------- HTTP scenarios


def http_scenario(ctx: Context, name: str) -> list[Row]:
    if name == "login":
        return [_login(ctx)]
    if name == "sync":
        return _sync(ctx)
    if name == "conversation":
        return _conversation(ctx)
    if name == "read":
        return [_read(ctx)]
    return [_targeted_run(ctx, name, "")]


def _login(ctx: Context) -> Row:
    data_file = ctx.data.write_lua(ctx.workdir / "bench-data.lua")
    connections = ctx.opts.sizes.login_connections
    url = ctx.server.base_url + "/"
    result = measure(
        ctx, url, "login.lua", data_file, ctx.server.pid, connections=connections, timeout_s=30
    )
    row = wrk_row("login", f"{connections} connections", result, ctx)
    row.target = "reported (argon2 cost not weakened)"
    row.notes.append(f"password hashing: {argon2_cost()}")
    return _zero_error_target(ctx, row)


def _sync(ctx: Context) -> list[Row]:
    """``?after_id=`` with cursors read just before (the scenarios before have sent many
    messages since seeding): a full page behind (the page and a count), then four messages
    behind (a page that holds every match). The latter cursors stay for ``mixed``."""
    full_page_behind, four_behind = asyncio.run(seed.sync_cursors(ctx.server, ctx.data, (14, 4)))
    ctx.data.after = full_page_behind
    rows = [_targeted_run(ctx, "sync", "a full page behind")]
    ctx.data.after = four_behind
    rows.append(_targeted_run(ctx, "sync", "4 new messages"))
    return rows


def _conversation(ctx: Context) -> list[Row]:
    """``?with=`` a neighbour. Each seeded conversation fits on a 10-message page, which is
    then its own count; pages one message shorter than the conversation are full, so they
    read its count too, as every page of a long conversation does but its last."""
    sizes = ctx.opts.sizes
    shortest = seed.shortest_conversation(sizes.users, sizes.messages_per_user, sizes.partners)
    full_page = max(1, shortest - 1)
    return [
        _targeted_run(ctx, "conversation", "fits on its page"),
        _targeted_run(
            ctx, "conversation", f"a full page of {full_page}", conversation_page_size=full_page
        ),
    ]


def _read(ctx: Context) -> Row:
    """Mark-read calls, each moving a mark (see lua/read.lua): a durable write of the mark,
    the unread counts and an event for each user. The measured run starts its marks past
    any the warm-up can have reached; the events written tell how many calls moved one."""
    sizes, server, data = ctx.opts.sizes, ctx.server, ctx.data
    threads = max(1, min(sizes.wrk_threads, sizes.connections))
    url = server.base_url + "/"

    def run(duration: float, start: int) -> WrkResult:
        data_file = data.write_lua(
            ctx.workdir / "bench-data.lua", threads=threads, read_start=start
        )
        return measure(ctx, url, "read.lua", data_file, server.pid, duration=duration, warmup=0)

    start = 1
    if sizes.warmup > 0:
        warm = run(sizes.warmup, start)
        per_thread = [
            sum(len(p) for i, p in enumerate(data.partners) if i % threads == t)
            for t in range(threads)
        ]
        start += -(-warm.requests // max(1, min(per_thread))) + 1
    before = sum(asyncio.run(seed.event_positions(server, data.users)))
    result = run(sizes.duration, start)
    moved = (sum(asyncio.run(seed.event_positions(server, data.users))) - before) // 2
    row = wrk_row("read", "mark read, moving the mark", result, ctx)
    row.metrics["marks_moved"] = moved
    row.notes.append(
        f"{moved:,} read marks moved for {result.requests:,} calls counted by wrk (calls "
        "still in flight when it stops land too; a call that moves none is a read)"
    )
    return _zero_error_target(ctx, row)


def _targeted_run(ctx: Context, name: str, case: str, **lua_data: Any) -> Row:
    """A wrk run of ``{name}.lua`` against its target; ``lua_data`` adds to its data table."""
    data_file = ctx.data.write_lua(ctx.workdir / "bench-data.lua", **lua_data)
    result = measure(ctx, ctx.server.base_url + "/", f"{name}.lua", data_file, ctx.server.pid)
    row = wrk_row(name, case, result, ctx)
    goal = HTTP_TARGETS.get(name)
    if ctx.zero_errors_target or goal is None:
        return _zero_error_target(ctx, row)
    ratio = row.metrics.get("vs_litestar")
    row.target = f"≥ {100 * goal:.0f} % of Litestar, p99 ≤ {P99_TARGET_MS:g} ms"
    row.met = (
        ratio is not None and ratio >= goal and result.p99_ms <= P99_TARGET_MS and not row.errors
    )
    return row


def _zero_error_target(ctx: Context, row: Row) -> Row:
    if not row.target:
        row.target = "0 errors"
    row.met = row.errors == 0
    return row


def argon2_cost() -> str:
    """The server's argon2 parameters, read from its password hasher (reported only)."""
    from chatserver.passwords import HASHER

    return (
        f"argon2 type {HASHER.type.name.lower()}, time_cost {HASHER.time_cost}, "
        f"memory_cost {HASHER.memory_cost} KiB, parallelism {HASHER.parallelism}"
    )


# --------------------------------------------------------------------------- big inbox

BIG_CALLS: tuple[tuple[str, Callable[[dict[str, int]], str]], ...] = (
    ("page 1", lambda p: "page=1&page_size=10"),
    ("unread=true", lambda p: "unread=true&page=1&page_size=10"),
    ("after_id near the end", lambda p: f"after_id={p['after_id']}&page_size=10"),
    ("before_id deep in history", lambda p: f"before_id={p['before_id']}&page_size=10"),
    ("page near the end", lambda p: f"page={p['last_page'] - 1}&page_size=10"),
)


async def _inbox_positions(server: ChatServer, user: seed.User) -> dict[str, int]:
    """Ids about 20 messages from either end of the user's inbox, and its last page."""
    async with seed.client(server, 4) as http:
        first = seed.check(await seed.inbox(http, user, "page=1&page_size=10"), 200, "page 1")
        count = int(first["meta"]["count"])
        last_page = max(1, -(-count // 10))
        ids: set[int] = set()
        for page in {1, 2, max(1, last_page - 1), last_page}:
            body = seed.check(
                await seed.inbox(http, user, f"page={page}&page_size=10"), 200, f"page {page}"
            )
            ids.update(int(m["id"]) for m in body["messages"])
    ordered = sorted(ids)
    if len(ordered) < 40:
        raise seed.SeedError(f"inbox of user {user.id} too small ({count} messages)")
    return {
        "after_id": ordered[-20],
        "before_id": ordered[19],
        "last_page": last_page,
        "count": count,
    }


def big_inbox(ctx: Context) -> list[Row]:
    sizes = ctx.opts.sizes
    server = ctx.server
    sender, small, big = asyncio.run(_big_inbox_users(server))
    asyncio.run(_send_many(server, sender, small.id, sizes.small_count))
    load_s = seed.bulk_load(server, sender.id, big.id, sizes.big_count)
    ctx.big_user, ctx.big_count = big, sizes.big_count
    pos_small = asyncio.run(_inbox_positions(server, small))
    pos_big = asyncio.run(_inbox_positions(server, big))
    rows = [_marking_row(ctx, small, big)]
    for label, query in BIG_CALLS:
        small_res = measure_path(ctx, small, f"/api/v1/chats/?{query(pos_small)}")
        big_res = measure_path(ctx, big, f"/api/v1/chats/?{query(pos_big)}")
        row = comparison_row(ctx, "big-inbox", label, small_res, big_res)
        row.metrics.update(big_messages=pos_big["count"], small_messages=pos_small["count"])
        rows.append(row)
    rows[1].notes.append(
        f"big inbox: {pos_big['count']:,} messages (bulk-loaded in {load_s:.1f} s); "
        f"small inbox: {pos_small['count']:,}; {sizes.big_connections} connections"
    )
    return rows


def measure_path(ctx: Context, user: seed.User, path: str) -> WrkResult:
    """GETs of one fixed path as ``user``, with the big-data sizes (few connections, so
    the p50 is the call's own time rather than a queue's)."""
    sizes = ctx.opts.sizes
    data_file = ctx.data.write_lua(ctx.workdir / "fixed-path.lua", users=[user], path=path)
    return measure(
        ctx,
        ctx.server.base_url + "/",
        "fixed.lua",
        data_file,
        ctx.server.pid,
        connections=sizes.big_connections,
        threads=1,
        duration=sizes.big_duration,
        warmup=sizes.big_warmup,
    )


def comparison_row(ctx: Context, scenario: str, case: str, small: WrkResult, big: WrkResult) -> Row:
    """A row of the small/big table: the same call on little and on much data, with the
    target that the p50 grows at most ``BIG_RATIO_TARGET`` times."""
    ratio = big.p50_ms / small.p50_ms if small.p50_ms else None
    errors = big.errors + small.errors
    row = Row(
        scenario=scenario,
        case=case,
        kind="big",
        errors=errors,
        metrics={
            "small_p50_ms": small.p50_ms,
            "big_p50_ms": big.p50_ms,
            "big_p99_ms": big.p99_ms,
            "big_rps": big.rps,
            "ratio": ratio,
            "small": small.to_json(),
            "big": big.to_json(),
        },
    )
    # The ratio compares two runs: a pause in either moves it.
    _note_steal(row, max(small.steal, big.steal))
    if errors:
        row.error_detail.append(f"{errors} failed requests (status >= 400 or socket errors)")
    if ctx.zero_errors_target:
        _zero_error_target(ctx, row)
    else:
        row.target = f"p50 ≤ {BIG_RATIO_TARGET:g}× small"
        row.met = ratio is not None and ratio <= BIG_RATIO_TARGET and not errors
    return row


MARKING_CALLS = 5


def _marking_row(ctx: Context, small: seed.User, big: seed.User) -> Row:
    """``unread=true`` where every call on both inboxes marks ten messages received.

    Under wrk the small inbox runs out of unread messages after a few calls and is only
    read from then on, while every call on the big one commits its marks durably: that row
    compares a write with a read. Here both sides make the same durable write, one call at a
    time, so the ratio shows only what the inbox's size costs (a scan would show here).
    """
    small_ms = asyncio.run(_marking_calls_ms(ctx.server, small))
    big_ms = asyncio.run(_marking_calls_ms(ctx.server, big))
    ratio = statistics.median(big_ms) / statistics.median(small_ms)
    row = Row(
        scenario="big-inbox",
        case=f"unread=true, every call marking ({MARKING_CALLS} calls, one at a time)",
        kind="big",
        metrics={
            "small_p50_ms": statistics.median(small_ms),
            "big_p50_ms": statistics.median(big_ms),
            "ratio": ratio,
            "small_calls_ms": small_ms,
            "big_calls_ms": big_ms,
        },
    )
    if ctx.zero_errors_target:
        _zero_error_target(ctx, row)
    else:
        row.target = f"p50 ≤ {BIG_RATIO_TARGET:g}× small"
        row.met = ratio <= BIG_RATIO_TARGET
    return row


async def _marking_calls_ms(server: ChatServer, user: seed.User) -> list[float]:
    """Time ``unread=true`` calls that each find ten unread messages and mark them."""
    times = []
    async with seed.client(server, 1) as http:
        for _ in range(MARKING_CALLS):
            start = time.perf_counter()
            response = await seed.inbox(http, user, "unread=true&page=1&page_size=10")
            times.append((time.perf_counter() - start) * 1000)
            body = seed.check(response, 200, "unread=true")
            if len(body["messages"]) != 10:
                raise seed.SeedError(f"user {user.id} ran out of unread messages")
    return times


async def _big_inbox_users(server: ChatServer) -> tuple[seed.User, seed.User, seed.User]:
    async with seed.client(server, 4) as http:
        stamp = int(time.time()) % 100000
        users = await asyncio.gather(
            *(seed.create_user(http, f"{n}{stamp}") for n in ("bigsend", "smallbox", "bigbox"))
        )
    return users[0], users[1], users[2]


async def _send_many(server: ChatServer, sender: seed.User, recipient: int, count: int) -> None:
    async with seed.client(server, 8) as http:
        await seed.gather_limited(
            8,
            [partial(seed.send, http, sender, recipient, f"small {i}") for i in range(count)],
        )


# --------------------------------------------------------------------------- sockets


def _assign(ctx: Context, sockets: int) -> list[tuple[int, str]]:
    users = ctx.data.users
    return [(users[i % len(users)].id, users[i % len(users)].token) for i in range(sockets)]


def idle_sockets(ctx: Context) -> list[Row]:
    sizes = ctx.opts.sizes
    server = ctx.server
    time.sleep(1)
    before = procs.tree_rss_kib(server.pid)
    fleet = ws.SocketFleet(server.ws_url, _assign(ctx, sizes.idle_sockets))
    try:
        connected = fleet.connect(timeout=180)
        time.sleep(3)
        after = procs.tree_rss_kib(server.pid)
        result = fleet.stop()
    finally:
        fleet.close()
    per_socket = (after - before) / connected if connected else None
    closed = sum(1 for log in result.logs if log.connected and log.error)
    errors = (sizes.idle_sockets - connected) + closed
    row = Row(
        scenario="idle-sockets",
        case=f"RSS per idle socket at {sizes.idle_sockets:,}",
        kind="other",
        errors=errors,
        metrics={
            "display": "–" if per_socket is None else f"{per_socket:.1f} KiB",
            "kib_per_socket": per_socket,
            "connected": connected,
            "rss_before_kib": before,
            "rss_after_kib": after,
        },
    )
    if connected < sizes.idle_sockets:
        row.error_detail.append(
            f"{sizes.idle_sockets - connected} of {sizes.idle_sockets} sockets did not connect"
            + _first_errors([e for e in result.errors if e.startswith("connect")])
        )
    if closed:
        row.error_detail.append(
            f"{closed} of {connected} connected sockets were closed while idle"
            + _first_errors([e for e in result.errors if not e.startswith("connect")])
        )
    row.notes.append(
        f"server RSS {before / 1024:.0f} MiB → {after / 1024:.0f} MiB with {connected:,} sockets"
    )
    if ctx.zero_errors_target:
        _zero_error_target(ctx, row)
    else:
        row.target = f"≤ {IDLE_SOCKET_TARGET_KIB:g} KiB"
        row.met = per_socket is not None and per_socket <= IDLE_SOCKET_TARGET_KIB and not errors
    return [row]


def _first_errors(errors: list[str]) -> str:
    if not errors:
        return ""
    distinct = sorted(set(errors))
    return f"; e.g. {distinct[0]}" + (
        f" (+{len(distinct) - 1} other kinds)" if len(distinct) > 1 else ""
    )


def fanout(ctx: Context) -> list[Row]:
    rows = []
    for sockets in ctx.opts.sizes.fanout_sockets:
        rows.extend(_fanout_once(ctx, sockets))
    return rows


def _fanout_once(ctx: Context, sockets: int) -> list[Row]:
    sizes = ctx.opts.sizes
    server = ctx.server
    assignments = _assign(ctx, sockets)
    per_user: dict[int, int] = {}
    for uid, _ in assignments:
        per_user[uid] = per_user.get(uid, 0) + 1
    tokens = {u.id: u.token for u in ctx.data.users}
    senders = [(uid, tokens[uid]) for uid in per_user]
    fleet = ws.SocketFleet(server.ws_url, assignments)
    try:
        connected = fleet.connect(timeout=300)
        time.sleep(1)
        fleet.measure()
        ticks = procs.machine_cpu_ticks()
        cpu0, t0 = procs.tree_cpu_seconds(server.pid), time.monotonic()
        sent = ws.run_sender(server.base_url, senders, sizes.fanout_rate, sizes.fanout_duration)
        server_cores = (procs.tree_cpu_seconds(server.pid) - cpu0) / (time.monotonic() - t0)
        time.sleep(sizes.fanout_grace)
        server_seconds = procs.tree_cpu_seconds(server.pid) - cpu0  # every delivery included
        steal = procs.steal_share(ticks, procs.machine_cpu_ticks())
        result = fleet.stop()
    finally:
        fleet.close()

    by_id = {m.id: m for m in sent.sent}
    latencies: list[float] = []
    early = 0
    received: dict[int, int] = {}  # message id -> deliveries seen
    for log in result.logs:
        seen: set[int] = set()
        for mid, t in log.received:
            msg = by_id.get(mid)
            if msg is None or mid in seen:
                continue
            seen.add(mid)
            received[mid] = received.get(mid, 0) + 1
            delta = t - msg.t_201
            if delta < 0:
                early += 1
            latencies.append(max(0.0, delta) * 1000)
    # Deliveries expected on the sockets that did connect (failed ones are counted apart).
    live: dict[int, int] = {}
    for log in result.logs:
        if log.connected:
            live[log.user_id] = live.get(log.user_id, 0) + 1
    expected = sum(live.get(m.sender, 0) + live.get(m.recipient, 0) for m in sent.sent)
    lost = expected - sum(received.values())
    not_connected = sockets - connected
    socket_errors = sum(1 for log in result.logs if log.connected and log.error)
    errors = lost + not_connected + socket_errors + len(sent.errors)
    latencies.sort()
    p50 = _percentile(latencies, 50)
    p99 = _percentile(latencies, 99)
    mx = latencies[-1] if latencies else None
    per_delivery_us = server_seconds / expected * 1e6 if expected else None
    metrics = {
        "sockets": sockets,
        "connected": connected,
        "sent": len(sent.sent),
        "send_rate_target": sizes.fanout_rate,
        "send_rate_achieved": sent.achieved_rate,
        "expected_deliveries": expected,
        "lost": lost,
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": mx,
        "delivered_before_201": early,
        "sender_errors": len(sent.errors),
        "socket_errors": socket_errors,
        "sender_cpu": sent.cpu,
        "receiver_cpu_max": result.generator_cpu_max,
        "server_cores": server_cores,
        "server_cpu_per_delivery_us": per_delivery_us,
    }
    row = Row(
        scenario="fanout",
        case=f"{sockets:,} sockets, {sizes.fanout_rate:g} msg/s: latency p50/p99/max, lost",
        kind="other",
        errors=errors,
        metrics=metrics,
    )
    row.metrics["display"] = f"{_ms(p50)} / {_ms(p99)} / {_ms(mx)} ms, {lost} lost"
    row.notes.append(
        f"{len(sent.sent):,} messages sent at {sent.achieved_rate:.0f}/s, {expected:,} deliveries "
        f"expected (every socket of sender and recipient), {early} arrived before the 201"
    )
    if per_delivery_us is not None:
        row.notes.append(
            f"server: {server_cores:.2f} of a core while the sender ran, "
            f"{per_delivery_us:.0f} µs of CPU per delivery (the POSTs included)"
        )
    _note_steal(row, steal)
    if result.generator_cpu_max >= 0.9 or sent.cpu >= 0.9:
        row.notes.append(
            f"load generator saturated (receiver process {100 * result.generator_cpu_max:.0f} %, "
            f"sender {100 * sent.cpu:.0f} % of a core)"
        )
    if sent.achieved_rate < 0.95 * sizes.fanout_rate:
        row.notes.append("sender could not keep the fixed rate")
    if not_connected:
        row.error_detail.append(
            f"{not_connected} of {sockets} sockets did not connect"
            + _first_errors([e for e in result.errors if e.startswith("connect")])
        )
    if socket_errors:
        row.error_detail.append(
            f"{socket_errors} sockets closed during the run"
            + _first_errors([e for e in result.errors if not e.startswith("connect")])
        )
    if sent.errors:
        row.error_detail.append(f"{len(sent.errors)} POSTs failed" + _first_errors(sent.errors))
    if lost:
        row.error_detail.append(f"{lost} of {expected} deliveries lost")
    if ctx.zero_errors_target:
        _zero_error_target(ctx, row)
    else:
        row.target = f"p99 ≤ {FANOUT_P99_TARGET_MS:g} ms, 0 lost"
        row.met = p99 is not None and p99 <= FANOUT_P99_TARGET_MS and errors == 0
    return [row]


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _percentile(ordered: list[float], pct: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


# --------------------------------------------------------------------------- startup


def startup(ctx: Context) -> list[Row]:
    server = ctx.server
    times = []
    for _ in range(ctx.opts.sizes.startup_repeats):
        server.stop()
        times.append(server.start())
    time.sleep(2)
    total = procs.tree_rss_kib(server.pid) / 1024
    workers = [procs.rss_kib(p) / 1024 for p in procs.leaf_processes(server.pid)]
    median = statistics.median(times)
    start_row = Row(
        scenario="startup",
        case="process start → first healthy /healthz (existing database)",
        kind="other",
        metrics={"display": f"{median:.2f} s", "seconds": times},
    )
    rss_row = Row(
        scenario="startup",
        case="idle RSS (whole process tree)",
        kind="other",
        metrics={"display": f"{total:.0f} MiB", "tree_mib": total, "worker_mib": workers},
    )
    rss_row.notes.append(
        "worker process RSS: "
        + ", ".join(f"{w:.0f} MiB" for w in workers)
        + f"; start-up times: {', '.join(f'{t:.2f}' for t in times)} s"
    )
    if ctx.zero_errors_target:
        _zero_error_target(ctx, start_row)
        _zero_error_target(ctx, rss_row)
    else:
        start_row.target = f"≤ {STARTUP_TARGET_S:g} s"
        start_row.met = median <= STARTUP_TARGET_S
        rss_row.target = f"≤ {IDLE_RSS_TARGET_MIB:g} MiB"
        rss_row.met = total <= IDLE_RSS_TARGET_MIB
    return [start_row, rss_row]


def inbox_page_bytes(server: ChatServer, user: seed.User) -> int:
    resp = httpx.get(
        f"{server.base_url}/api/v1/chats/?page=1&page_size=10",
        headers={"Authorization": f"Bearer {user.token}"},
        timeout=30,
    )
    seed.check(resp, 200, "inbox page 1")
    return len(resp.content)
