"""``chatserver serve`` processes.

`ServerProcess` runs ``chatserver serve`` on a port in its own process group and waits (with a
deadline) until ``/healthz`` answers 200; `ServerProcess.stop` always takes the whole group
down (workers included): SIGTERM, then SIGKILL after a grace period. It can be started again
on the same port. `running_server` is the context manager tests use so a failing test cannot
leak a server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from chatserver.config import Settings
from testinfra import procs
from testinfra.procs import HOST

# Where every server's output goes, when set (the test suite sets it so one check at the end
# can read every log the run wrote); else each server's own workdir.
LOG_DIR_ENV = "TESTINFRA_LOG_DIR"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0


def chatserver_command() -> list[str]:
    """``chatserver`` as a user runs it: the venv's console script, else ``python -m``."""
    script = Path(sys.executable).with_name("chatserver")
    if script.exists():
        return [str(script)]
    found = shutil.which("chatserver")
    return [found] if found else [sys.executable, "-m", "chatserver"]


def serve_argv(port: int, args: Sequence[str] = ()) -> list[str]:
    return [*chatserver_command(), "serve", "--host", HOST, "--port", str(port), *args]


# Test suites sign up and log in many users from one address (127.0.0.1), far more than any
# real client: servers they start get higher per-address limits unless asked for the
# defaults (``defaults=True``) or given their own. The per-user limits keep their defaults.
SUITE_LIMITS = {"CHAT_SIGNUP_BURST": "1000000", "CHAT_TOKEN_BURST": "1000000"}


def server_env(extra: Mapping[str, str], defaults: bool = False) -> dict[str, str]:
    """This process's environment without any CHAT_* variable, plus ``extra`` (and the
    suite's per-address limits unless ``defaults``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    if not defaults:
        env.update(SUITE_LIMITS)
    env.update(extra)
    return env


class ServerProcess:
    """``chatserver serve`` with exactly ``env`` as its environment; each start's output goes
    to its own log file in ``workdir``. With a ``registry``, the process is also stopped by
    ``registry.stop_all()``."""

    def __init__(
        self,
        workdir: Path,
        env: Mapping[str, str],
        args: Sequence[str] = (),
        *,
        port: int | None = None,
        registry: procs.ProcessRegistry | None = None,
    ) -> None:
        self.workdir = workdir
        self.env = dict(env)
        self.args = list(args)
        self.port = port if port is not None else procs.free_port()
        self.registry = registry
        self.managed: procs.Managed | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    @property
    def http_server(self) -> str:
        """Which HTTP server it runs: --server, else CHAT_SERVER, else the default."""
        if "--server" in self.args:
            return self.args[self.args.index("--server") + 1]
        return self.env.get("CHAT_SERVER") or Settings().server

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self.managed is not None, "server not running"
        return self.managed.proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> float:
        """Start and wait for ``/healthz``; return seconds from spawn to first 200."""
        self.starts += 1
        spawn = self.registry.spawn if self.registry is not None else procs.spawn
        self.managed = spawn(
            "chatserver",
            serve_argv(self.port, self.args),
            log_path=log_dir(self.workdir) / f"chatserver-{self.port}-{self.starts}.log",
            env=self.env,
            cwd=self.workdir,
        )
        try:
            return procs.wait_healthy(f"{self.base_url}/healthz", self.managed, timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL whatever is left."""
        if self.managed is None:
            return
        if self.registry is not None:
            self.registry.stop(self.managed, timeout)
        else:
            self.managed.stop(timeout)
        self.managed = None

    def kill(self) -> None:
        """SIGKILL the whole process group at once (no chance to shut down) and reap it."""
        assert self.managed is not None, "server not running"
        self.managed.kill()

    def alive(self) -> bool:
        return self.managed is not None and self.managed.alive()

    def log(self) -> str:
        """Everything the current (or last) start wrote so far."""
        return self.managed.log() if self.managed is not None else ""

    def log_tail(self, lines: int = 40) -> str:
        return self.managed.log_tail(lines) if self.managed is not None else ""

    def server_command(self) -> list[str]:
        """The ASGI server's command line: ``chatserver serve`` execs it, so it is the
        server process's own cmdline (``python -m uvicorn|granian …``)."""
        if self.managed is None:
            return []
        for pid in procs.process_tree(self.managed.pid):
            try:
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
            if len(argv) > 2 and argv[1] == "-m" and argv[2] in ("uvicorn", "granian"):
                return argv
        return []


def log_dir(default: Path) -> Path:
    """$TESTINFRA_LOG_DIR if set, else ``default``."""
    shared = os.environ.get(LOG_DIR_ENV)
    return Path(shared) if shared else default


def start_server(
    workdir: Path,
    env: Mapping[str, str],
    args: Sequence[str] = (),
    timeout: float = START_TIMEOUT_SECONDS,
    defaults: bool = False,
) -> ServerProcess:
    """Start ``chatserver serve`` on a free port with a clean ``CHAT_*`` environment plus
    ``env``, and wait until it is healthy."""
    server = ServerProcess(workdir, server_env(env, defaults), args)
    server.start(timeout)
    return server


@contextlib.contextmanager
def running_server(
    workdir: Path,
    env: Mapping[str, str],
    args: Sequence[str] = (),
    timeout: float = START_TIMEOUT_SECONDS,
    defaults: bool = False,
) -> Iterator[ServerProcess]:
    """`start_server` as a context manager that always stops the process group."""
    server = start_server(workdir, env, args, timeout, defaults)
    try:
        yield server
    finally:
        server.stop()


def connection_owner(server: ServerProcess, client_port: int) -> int | None:
    """Which process of the server's group holds its end of the connection from
    ``client_port`` (to tell workers apart); None if not found."""
    return procs.socket_owner(server.pid, server.port, client_port)
