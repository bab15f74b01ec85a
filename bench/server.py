"""Start and stop the real server (``chatserver serve``) and the ceiling apps (granian)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
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
    log_level: str | None = None  # None: the server's default, as a user runs it

    def environ(self, port: int) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("CHAT_REDIS_URL", "CHAT_HOST", "CHAT_PORT", "CHAT_WORKERS", "CHAT_LOG_LEVEL"):
            env.pop(name, None)
        env["CHAT_DATABASE_URL"] = self.database_url
        if self.log_level:
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

    def embedded_granian_flags(self) -> list[str]:
        """When ``chatserver serve`` embeds granian (``granian.Granian(...)``), run the CLI once
        with that class replaced by a probe that prints its keyword arguments, and turn them
        into the equivalent granian command-line flags."""
        argv = [sys.executable, "-c", _PROBE, "--port", str(self.port)]
        argv += ["--workers", str(self.settings.workers)]
        out = subprocess.run(
            argv,
            env=self.settings.environ(self.port),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_GRANIAN ")), "")
        if not line:
            return []
        return kwargs_to_flags(json.loads(line.removeprefix("BENCH_GRANIAN ")))


_PROBE = """
import json, sys
import granian

class _Probe:
    def __init__(self, target, *args, **kwargs):
        simple = {k: getattr(v, "value", v) for k, v in kwargs.items()}
        simple = {k: v for k, v in simple.items() if isinstance(v, (str, int, float, bool))}
        print("BENCH_GRANIAN " + json.dumps(simple), flush=True)
        sys.exit(0)

granian.Granian = _Probe
from chatserver.cli import main
sys.exit(main(["serve", "--host", "127.0.0.1", *sys.argv[1:]]))
"""

# Granian keyword argument -> CLI option, where the names differ; None = not a serving flag.
_KWARG_FLAGS: dict[str, str | None] = {
    "address": None,
    "port": None,
    "uds": None,
    "factory": None,  # the ceiling apps are plain ASGI callables
    "working_dir": None,
    "pid_file": None,
    "websockets": "ws",
    "log_enabled": "log",
    "log_access": "access-log",
    "log_access_format": "access-log-fmt",
}


def kwargs_to_flags(kwargs: dict[str, object]) -> list[str]:
    flags: list[str] = []
    for key, value in sorted(kwargs.items()):
        option = _KWARG_FLAGS.get(key, key.replace("_", "-"))
        if option is None:
            continue
        if isinstance(value, bool):
            flags.append(f"--{option}" if value else f"--no-{option}")
        else:
            flags += [f"--{option}", str(value)]
    return flags


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
