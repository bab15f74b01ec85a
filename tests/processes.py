"""Real ``chatserver serve`` processes for end-to-end tests.

`start_server` spawns ``python -m chatserver serve`` on a free port in its own process
group, with a clean ``CHAT_*`` environment plus the variables a test passes, and waits
(with a deadline) until ``/healthz`` answers 200. `ServerProcess.stop` always takes the
whole process group down (workers included): SIGTERM, then SIGKILL after a grace period.
Use `running_server` (a context manager) so a failing test cannot leak a server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from chatserver.config import Settings

HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0


def free_port() -> int:
    """A TCP port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any CHAT_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env.update(extra)
    return env


@dataclass
class ServerProcess:
    """A running ``chatserver serve``; its output goes to ``log_path``."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    http_server: str  # "granian" or "uvicorn"

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        """Everything the server wrote so far (stdout and stderr)."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL the whole process group at once (no chance to shut down) and reap it."""
        _signal_group(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT_SECONDS)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL whatever is left."""
        _signal_group(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=timeout)
        # Workers can outlive the leader for a moment; never leave one behind.
        _signal_group(self.proc.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 (local URL)
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def wait_healthy(server: ServerProcess, timeout: float = START_TIMEOUT_SECONDS) -> None:
    """Poll ``/healthz`` until 200; fail with the log tail if it exits or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(
                f"chatserver exited with code {server.proc.returncode} before it was healthy:"
                f"\n{server.log_tail()}"
            )
        if _http_status(f"{server.base_url}/healthz") == 200:
            return
        time.sleep(0.05)
    raise RuntimeError(f"chatserver not healthy after {timeout:.0f} s:\n{server.log_tail()}")


def chatserver_command() -> list[str]:
    """The installed console script, as a user runs it (``python -m`` if it is missing)."""
    script = Path(sys.executable).with_name("chatserver")
    return [str(script)] if script.exists() else [sys.executable, "-m", "chatserver"]


def serve_argv(port: int, args: Sequence[str] = ()) -> list[str]:
    return [*chatserver_command(), "serve", "--host", HOST, "--port", str(port), *args]


def http_server(env: Mapping[str, str], args: Sequence[str]) -> str:
    """Which HTTP server ``chatserver serve`` runs: --server, else CHAT_SERVER, else the
    default."""
    if "--server" in args:
        return args[list(args).index("--server") + 1]
    return env.get("CHAT_SERVER") or Settings().server


def start_server(
    workdir: Path,
    env: Mapping[str, str],
    args: Sequence[str] = (),
    timeout: float = START_TIMEOUT_SECONDS,
) -> ServerProcess:
    """Spawn ``chatserver serve`` with ``env`` (CHAT_* variables) and wait until healthy."""
    port = free_port()
    log_path = workdir / f"chatserver-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            serve_argv(port, args),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=server_env(env),
            cwd=workdir,
            start_new_session=True,  # its own process group, so stop() reaches workers
        )
    server = ServerProcess(proc, port, log_path, http_server(env, args))
    try:
        wait_healthy(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def group_pids(pgid: int) -> list[int]:
    """Live processes in the process group ``pgid`` (a server and its workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            state, _ppid, pgrp = stat[stat.rfind(")") + 2 :].split()[:3]
            if state != "Z" and int(pgrp) == pgid:
                pids.append(int(entry.name))
    return pids


TCP_ESTABLISHED = "01"  # the state column of /proc/net/tcp


def tcp_connection(local_port: int, remote_port: int) -> tuple[str, str] | None:
    """(state, socket inode) of the IPv4 TCP socket local_port <-> remote_port, if any."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == local_port and int(remote.split(":")[1], 16) == (
            remote_port
        ):
            return fields[3], fields[9]
    return None


def connection_owner(server: ServerProcess, client_port: int) -> int | None:
    """Which process of the server's group holds its end of the connection from
    ``client_port`` (to tell workers apart); None if not found."""
    connection = tcp_connection(server.port, client_port)
    if connection is None:
        return None
    target = f"socket:[{connection[1]}]"
    for pid in group_pids(server.proc.pid):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == target:
                        return pid
    return None


@contextlib.contextmanager
def running_server(
    workdir: Path,
    env: Mapping[str, str],
    args: Sequence[str] = (),
    timeout: float = START_TIMEOUT_SECONDS,
) -> Iterator[ServerProcess]:
    """`start_server` as a context manager that always stops the process group."""
    server = start_server(workdir, env, args, timeout)
    try:
        yield server
    finally:
        server.stop()
