"""The real server (``chatserver serve``, started by `testinfra.server`) with the bench's
settings, and the ceiling apps, which run under the same ASGI server with the same flags (read
from the server's own command line)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatserver.config import FIELD_TYPES
from testinfra import procs
from testinfra.server import ServerProcess

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ServerEnv:
    database_url: str
    redis_url: str | None
    workers: int
    log_level: str | None = None  # None: the server's default, as a user runs it
    server: str | None = None  # CHAT_SERVER; None: the default
    # "on": the rate limits run (as by default) but far above what the bench sends, so they
    # cost what they cost and never refuse; "off": CHAT_RATE_LIMITS=off.
    rate_limits: str = "on"
    # "on": Prometheus metrics served on a free loopback port (CHAT_METRICS_ADDR), so every
    # request is observed; "off" (the server's default): no CHAT_METRICS_ADDR.
    metrics: str = "off"

    def environ(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.limits())
        for name in (
            "CHAT_REDIS_URL",
            "CHAT_HOST",
            "CHAT_PORT",
            "CHAT_WORKERS",
            "CHAT_LOG_LEVEL",
            "CHAT_METRICS_ADDR",
        ):
            env.pop(name, None)
        if self.metrics == "on":
            env["CHAT_METRICS_ADDR"] = f"127.0.0.1:{procs.free_port()}"
        env.pop("CHAT_SERVER", None)
        if self.server:
            env["CHAT_SERVER"] = self.server
        env["CHAT_DATABASE_URL"] = self.database_url
        if self.log_level:
            env["CHAT_LOG_LEVEL"] = self.log_level
        if self.redis_url:
            env["CHAT_REDIS_URL"] = self.redis_url
        return env

    def limits(self) -> dict[str, str]:
        """Every limit above what the bench does from its one address (thousands of idle
        sockets, one user's many streams); the rate limits on or off."""
        high = dict.fromkeys(UNREACHED, str(10**6))
        if self.rate_limits == "off":
            return {**high, "CHAT_RATE_LIMITS": "off"}
        rates = {f"CHAT_{rule}_{part}": str(10**9) for rule in RATES for part in ("RATE", "BURST")}
        return {**high, **rates, "CHAT_RATE_LIMITS": "on"}

    def limit_settings(self) -> dict[str, Any]:
        """The same limits as Settings fields (for the in-process scenario's app)."""
        fields = {
            name.removeprefix("CHAT_").lower(): value for name, value in self.limits().items()
        }
        return {name: FIELD_TYPES[name](value) for name, value in fields.items()}

    def app_settings(self) -> dict[str, Any]:
        """Settings fields for an app built in the bench's own process (the in-process
        scenario): the limits, and the metrics on their own free port when on."""
        metrics = {"metrics_addr": f"127.0.0.1:{procs.free_port()}"} if self.metrics == "on" else {}
        return {**self.limit_settings(), **metrics}


RATES = ("SEND", "READ", "SIGNUP", "TOKEN")
UNREACHED = (
    "CHAT_MAX_STREAMS_PER_USER",
    "CHAT_MAX_CONNECTIONS_PER_ADDRESS",
    "CHAT_MAX_CONNECTIONS",
)


class ChatServer(ServerProcess):
    """One ``chatserver serve`` process tree on a fixed port, started with ``settings``."""

    registry: procs.ProcessRegistry  # always given: the ceiling servers join it

    def __init__(
        self, registry: procs.ProcessRegistry, settings: ServerEnv, workdir: Path, port: int
    ) -> None:
        args = ["--workers", str(settings.workers)]
        super().__init__(workdir, settings.environ(), args, port=port, registry=registry)
        self.settings = settings


def ceiling_command(server_command: list[str], app: str, port: int) -> list[str]:
    """The server's command line with our app swapped for a ceiling app and a new port."""
    out: list[str] = []
    args = iter(server_command)
    for arg in args:
        if arg == "--port":
            next(args)
            out += ["--port", str(port)]
        elif arg == "--factory":
            continue  # the ceiling apps are plain ASGI callables
        elif arg == "--http":
            next(args)  # our guarded protocol is our code: the ceilings run uvicorn's own
        elif arg.startswith("chatserver.asgi:"):
            out.append(f"bench.ceiling:{app}")
        else:
            out.append(arg)
    return out


class CeilingServer:
    """The server's ASGI server serving one of the ``bench.ceiling`` reference apps."""

    def __init__(
        self,
        registry: procs.ProcessRegistry,
        workdir: Path,
        app: str,
        server_command: list[str],
        body_size: int,
        env: dict[str, str] | None = None,
    ) -> None:
        self.registry = registry
        self.env = env or {}
        self.workdir = workdir
        self.app = app
        self.server_command = server_command
        self.body_size = body_size
        self.port = procs.free_port()
        self.managed: procs.Managed | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def argv(self) -> list[str]:
        return ceiling_command(self.server_command, self.app, self.port)

    def start(self) -> None:
        env = dict(os.environ, BENCH_BODY_SIZE=str(self.body_size), **self.env)
        self.managed = self.registry.spawn(
            f"ceiling-{self.app}",
            self.argv(),
            log_path=self.workdir / f"ceiling-{self.app}.log",
            env=env,
            cwd=REPO_ROOT,
        )
        procs.wait_healthy(self.url, self.managed, 30)

    @property
    def pid(self) -> int:
        assert self.managed is not None
        return self.managed.pid

    def stop(self) -> None:
        if self.managed is not None:
            self.registry.stop(self.managed)
            self.managed = None
