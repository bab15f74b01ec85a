"""``python -m bench``: start everything, run the scenarios, report, stop everything."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from bench import (
    ceiling,
    conversations,
    inprocess,
    overhead,
    presence,
    report,
    resume,
    scenarios,
    search,
    seed,
)
from bench.config import HTTP_SCENARIOS, SCENARIOS, SOCKET_SCENARIOS, Options
from bench.report import Row
from bench.server import CeilingServer, ChatServer, ServerEnv
from bench.wrk import WrkResult, wrk_version
from chatserver.config import database_scheme, sqlite_path
from testinfra import procs
from testinfra.postgres import PostgresServer
from testinfra.redis import RedisServer

OTHER_SCENARIOS: dict[str, Callable[[scenarios.Context], list[Row]]] = {
    "big-inbox": scenarios.big_inbox,
    "search": search.scenario,
    "conversations": conversations.scenario,
    "resume": resume.scenario,
    "presence": presence.scenario,
    "idle-sockets": scenarios.idle_sockets,
    "fanout": scenarios.fanout,
    "in-process": inprocess.scenario,
    "overhead": overhead.scenario,
}


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark chatserver against the ASGI and Litestar ceilings.",
    )
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--redis", action="store_true", help="start a throwaway Redis and use it")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument(
        "--server", choices=("uvicorn", "granian"), help="ASGI server (default: the server's)"
    )
    parser.add_argument("--quick", action="store_true", help="about a minute; for CI")
    parser.add_argument(
        "--rate-limits",
        choices=("on", "off"),
        default="on",
        help="on (default): limits run, set too high to refuse; off: CHAT_RATE_LIMITS=off",
    )
    parser.add_argument(
        "--duration",
        type=float,
        help="seconds per measured wrk run (default: 10, quick 2); longer runs resolve"
        " smaller differences",
    )
    parser.add_argument(
        "--metrics",
        choices=("on", "off"),
        default="off",
        help="off (default, as the server): no metrics; on: CHAT_METRICS_ADDR on a free port",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIOS,
        metavar="NAME",
        help=f"run only this scenario (repeatable); one of: {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="rewrite the 'Latest results' section of docs/performance.md with this run",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be positive")
    chosen = tuple(s for s in SCENARIOS if s in set(args.scenario)) if args.scenario else SCENARIOS
    return Options(
        db=args.db,
        redis=args.redis,
        workers=args.workers,
        server=args.server,
        quick=args.quick,
        scenarios=chosen,
        write_docs=args.write_docs,
        rate_limits=args.rate_limits,
        metrics=args.metrics,
        duration=args.duration,
    )


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    procs.raise_nofile_limit()
    registry = procs.ProcessRegistry()
    workdir = Path(tempfile.mkdtemp(prefix="chatbench-"))
    postgres: PostgresServer | None = None
    redis: RedisServer | None = None
    rows: list[Row] = []
    started_at = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    extra_versions = {"wrk": wrk_version()}
    flags: list[str] = []
    t_start = time.monotonic()
    try:
        if opts.db == "postgres":
            print("starting a throwaway PostgreSQL", flush=True)
            postgres = PostgresServer({"max_connections": "300"})
            postgres.start()
            extra_versions["postgresql"] = postgres.version
            database_url = postgres.url(postgres.create_database("chat"))
        else:
            database_url = f"sqlite:///{workdir}/chat.db"
        if opts.redis:
            print("starting a throwaway Redis", flush=True)
            redis = RedisServer(workdir, registry=registry)
            redis.start()
            extra_versions["redis-server"] = redis.version
        env = ServerEnv(
            database_url,
            redis.url() if redis else None,
            opts.workers,
            server=opts.server,
            rate_limits=opts.rate_limits,
            metrics=opts.metrics,
        )
        server = ChatServer(registry, env, workdir, procs.free_port())
        rows, flags = run(opts, server, workdir)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", flush=True)
        rows.append(Row("harness", "interrupted", "other", errors=1))
    except Exception as exc:
        traceback.print_exc()
        rows.append(
            Row(
                "harness", "setup", "other", errors=1, error_detail=[f"{type(exc).__name__}: {exc}"]
            )
        )
    finally:
        registry.stop_all()
        if redis is not None:
            redis.stop()
        if postgres is not None:
            postgres.stop()

    sizes = opts.sizes
    info: dict[str, Any] = {
        "started_at": started_at,
        "wall_seconds": round(time.monotonic() - t_start, 1),
        "machine": report.machine_info(),
        "versions": report.versions(extra_versions),
        "settings": {
            "command": report.command_line(),
            "db": opts.db,
            "redis": opts.redis,
            "rate_limits": opts.rate_limits,
            "metrics": opts.metrics,
            "workers": opts.workers,
            "quick": opts.quick,
            "scenarios": list(opts.scenarios),
            "connections": sizes.connections,
            "wrk_threads": sizes.wrk_threads,
            "duration_s": sizes.duration,
            "warmup_s": sizes.warmup,
            "users": sizes.users,
            "big_inbox_messages": sizes.big_count,
            "big_conversations": sizes.conversations_big,
            "resume_behind": sizes.resume_behind,
            "fanout_sockets": list(sizes.fanout_sockets),
            "idle_sockets": sizes.idle_sockets,
            "server_command": flags,
            "notes": list(sizes.notes),
        },
    }
    table = report.markdown(rows, info)
    errors = sum(r.errors for r in rows)
    if errors:
        _keep_logs(workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(table)
    json_path, md_path = report.save(rows, info, table)
    print(f"saved {json_path} and {md_path.name}")
    if opts.write_docs:
        report.write_docs(table)
        print(f"updated {report.DOCS_FILE}")
    if errors:
        print(f"FAILED: {errors} error(s) — see the error lines above", flush=True)
        return 1
    print(f"OK: every scenario ran with zero errors ({info['wall_seconds']:.0f} s)")
    return 0


def _keep_logs(workdir: Path) -> None:
    logs = sorted(workdir.glob("*.log"))
    if not logs:
        return
    dest = report.RESULTS_DIR / f"logs-{dt.datetime.now():%Y%m%d-%H%M%S}"
    dest.mkdir(parents=True, exist_ok=True)
    for log in logs:
        shutil.copy2(log, dest / log.name)
    print(f"server logs kept in {dest}", flush=True)


def run(opts: Options, server: ChatServer, workdir: Path) -> tuple[list[Row], list[str]]:
    sizes = opts.sizes
    rows: list[Row] = []
    print(f"starting chatserver (fresh database, {opts.workers} worker(s))", flush=True)
    server.start(timeout=60)
    command = server.server_command()
    if not command:
        raise RuntimeError("could not read the ASGI server's command line")
    print(f"ASGI server command (the ceilings use it too): {' '.join(command)}", flush=True)
    print(
        f"seeding {sizes.users} users, {sizes.users * sizes.messages_per_user} messages", flush=True
    )
    data = asyncio.run(seed.seed(server, sizes.users, sizes.messages_per_user, sizes.partners))
    server.stop()
    ctx = scenarios.Context(opts=opts, workdir=workdir, server=server, data=data)

    if any(s in HTTP_SCENARIOS for s in opts.scenarios):
        rows += _references(ctx, command)

    if "startup" in opts.scenarios:
        rows += _guarded(ctx, "startup", lambda: scenarios.startup(ctx))
    if not server.alive():
        server.start(timeout=60)

    remaining = [name for name in opts.scenarios if name != "startup"]
    for i, name in enumerate(remaining):
        runner: Callable[[], list[Row]]
        if name in HTTP_SCENARIOS:
            runner = partial(scenarios.http_scenario, ctx, name)
        else:
            runner = partial(OTHER_SCENARIOS[name], ctx)
        rows += _guarded(ctx, name, runner)
        if name in SOCKET_SCENARIOS and i + 1 < len(remaining):
            # A socket scenario leaves its freed memory in the worker (CPython keeps its
            # heap), and the next scenario ran slower on it: each scenario starts from a
            # restarted server on the same database, as after a deploy.
            server.stop()
            server.start(timeout=60)
    return rows, command


def _references(ctx: scenarios.Context, command: list[str]) -> list[Row]:
    """The reference apps under the same ASGI server: the two ceilings, and on SQLite the
    one-query route (on the seeded database, which no server writes to meanwhile) and the
    one-insert route (on a copy of it, under the send's load)."""
    server, data = ctx.server, ctx.data
    apps: list[tuple[str, str, dict[str, str]]] = [
        ("raw", "raw_app", {}),
        ("litestar", "litestar_app", {}),
    ]
    database_url = server.settings.database_url
    if database_scheme(database_url) == "sqlite":
        users = {"BENCH_USERS": str(len(data.users))}
        apps.append(("query", "query_app", {"BENCH_DB_PATH": sqlite_path(database_url), **users}))
        copy = ctx.workdir / "insert-reference.db"
        ceiling.copy_database(Path(sqlite_path(database_url)), copy)
        apps.append(("insert", "insert_app", {ceiling.WRITE_DB_PATH_ENV: str(copy), **users}))
    rows = []
    for name, app, env in apps:
        print(f"reference: {app} ({data.page_bytes}-byte page)", flush=True)
        reference = CeilingServer(
            server.registry, ctx.workdir, app, command, data.page_bytes, env=env
        )
        try:
            reference.start()
            result = _measure_reference(ctx, name, reference)
        finally:
            reference.stop()
        rows.append(scenarios.ceiling_row(name, result, ctx.ceilings))
        ctx.ceilings[name] = result
    return rows


def _measure_reference(ctx: scenarios.Context, name: str, reference: CeilingServer) -> WrkResult:
    """The one-insert route gets the send's requests; the others answer every GET alike."""
    if name == "insert":
        data_file = ctx.data.write_lua(ctx.workdir / "bench-data.lua")
        return scenarios.measure(ctx, reference.url, "send.lua", data_file, reference.pid)
    return scenarios.measure(ctx, reference.url, "fixed.lua", None, reference.pid)


def _guarded(ctx: scenarios.Context, name: str, runner: Callable[[], list[Row]]) -> list[Row]:
    """Run one scenario; an exception becomes an error row and the next scenario still runs."""
    print(f"scenario: {name}", flush=True)
    t0 = time.monotonic()
    try:
        rows = runner()
    except Exception as exc:
        traceback.print_exc()
        kind = "http" if name in HTTP_SCENARIOS else "other"
        rows = [Row(name, "", kind, errors=1, error_detail=[f"{type(exc).__name__}: {exc}"])]
    server = ctx.server
    if not server.alive():
        rows.append(
            Row(
                name,
                "server died",
                "other",
                errors=1,
                error_detail=[f"chatserver exited during {name}; log tail: {server.log_tail(10)}"],
            )
        )
        server.stop()
        server.start(timeout=60)
    for row in rows:
        status = "ok" if not row.errors else f"{row.errors} error(s)"
        print(f"  {row.scenario} {row.case}: {status}", flush=True)
    print(f"  ({time.monotonic() - t0:.1f}s)", flush=True)
    return rows
