"""Start and stop the real server (``chatserver serve``) and the ceiling apps (granian)."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from bench import procs

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN_DIR = Path(sys.executable).parent


def chatserver_argv() -> list[str]:
    """``chatserver`` as a user runs it: the venv's console script, else ``python -m``."""
    script = BIN_DIR / "chatserver"
    if script.exists():
        return [str(script)]
    found = shutil.which("chatserver")
    return [found] if found else [sys.executable, "-m", "chatserver"]


def granian_argv() -> list[str]:
    script = BIN_DIR / "granian"
    return [str(script)] if script.exists() else [sys.executable, "-m", "granian"]


@dataclass
class ServerEnv:
    database_url: str
    redis_url: str | None
    workers: int
    log_level: str = "warning"

    def environ(self, port: int) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("CHAT_REDIS_URL", "CHAT_HOST", "CHAT_PORT", "CHAT_WORKERS"):
            env.pop(name, None)
        env["CHAT_DATABASE_URL"] = self.database_url
        env["CHAT_LOG_LEVEL"] = self.log_level
        if self.redis_url:
            env["CHAT_REDIS_URL"] = self.redis_url
        return env


class ChatServer:
    """One ``chatserver serve`` process tree on a fixed port."""

    def __init__(
        self, registry: procs.ProcessRegistry, settings: ServerEnv, workdir: Path, port: int
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.workdir = workdir
        self.port = port
        self.managed: procs.Managed | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.managed is not None, "server not running"
        return self.managed.pid

    def start(self, timeout: float = 60.0) -> float:
        """Start and wait for ``/healthz``; return seconds from spawn to first 200."""
        self.starts += 1
        argv = [
            *chatserver_argv(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.settings.workers),
        ]
        self.managed = self.registry.spawn(
            "chatserver",
            argv,
            log_path=self.workdir / f"chatserver-{self.starts}.log",
            env=self.settings.environ(self.port),
            cwd=self.workdir,
        )
        return procs.wait_healthy(f"{self.base_url}/healthz", self.managed, timeout)

    def stop(self) -> None:
        if self.managed is not None:
            self.registry.stop(self.managed, timeout=15)
            self.managed = None

    def alive(self) -> bool:
        return self.managed is not None and self.managed.alive()

    def granian_flags(self) -> list[str]:
        """The granian flags the running server uses, read from its process tree if granian
        was exec'd with a command line; empty when the server embeds granian."""
        if self.managed is None:
            return []
        for pid in procs.process_tree(self.managed.pid):
            try:
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
            if any(Path(a).name == "granian" for a in argv[:3]):
                return _strip_target(argv)
        return []

    def log_tail(self, lines: int = 40) -> str:
        return self.managed.log_tail(lines) if self.managed is not None else ""


def _strip_target(argv: list[str]) -> list[str]:
    """Drop the executable, the app target, host and port from a granian command line."""
    start = next(i for i, a in enumerate(argv) if Path(a).name == "granian") + 1
    out: list[str] = []
    skip_next = False
    for arg in argv[start:]:
        if skip_next:
            skip_next = False
            continue
        if arg in ("--host", "--port", "--uds", "--working-dir", "--pid-file"):
            skip_next = True
            continue
        if arg.startswith(("--host=", "--port=", "--uds=", "--working-dir=", "--pid-file=")):
            continue
        if not arg.startswith("-") and ":" in arg:
            continue  # the app target
        out.append(arg)
    return out


class CeilingServer:
    """granian serving ``bench.ceiling:raw_app`` or ``bench.ceiling:litestar_app``."""

    def __init__(
        self,
        registry: procs.ProcessRegistry,
        workdir: Path,
        app: str,
        workers: int,
        flags: list[str],
        body_size: int,
    ) -> None:
        self.registry = registry
        self.workdir = workdir
        self.app = app
        self.workers = workers
        self.flags = flags
        self.body_size = body_size
        self.port = procs.free_port()
        self.managed: procs.Managed | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def argv(self) -> list[str]:
        flags = list(self.flags)
        if not any(f == "--interface" or f.startswith("--interface=") for f in flags):
            flags = ["--interface", "asgi", *flags]
        if not any(f == "--workers" or f.startswith("--workers=") for f in flags):
            flags += ["--workers", str(self.workers)]
        return [
            *granian_argv(),
            *flags,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--working-dir",
            str(REPO_ROOT),
            f"bench.ceiling:{self.app}",
        ]

    def start(self) -> None:
        env = dict(os.environ, BENCH_BODY_SIZE=str(self.body_size))
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
