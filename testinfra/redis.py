"""Throwaway Redis servers: ``redis-server`` on a free port, persistence off."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from testinfra import procs
from testinfra.procs import HOST

START_TIMEOUT_SECONDS = 10.0


class RedisNotFound(RuntimeError):
    """No redis-server on this machine."""


class RedisServer(procs.Service):
    """``redis-server`` in its own process group; `restart` keeps its port (and loses its
    data, like any restart without persistence)."""

    def __init__(
        self,
        workdir: Path,
        executable: str | None = None,
        *,
        registry: procs.ProcessRegistry | None = None,
    ) -> None:
        binary = shutil.which(executable or "redis-server")
        if binary is None:
            raise RedisNotFound(
                f"{executable or 'redis-server'} not found; install redis-server "
                "(Debian/Ubuntu: apt-get install redis-server)"
            )
        self.executable = binary
        self.workdir = workdir
        self.registry = registry
        self.host = HOST
        self.port = procs.free_port()
        self.managed: procs.Managed | None = None
        self.version = "unknown"

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Spawn redis-server and wait until it answers PING."""
        # "Redis server v=7.0.15 sha=… malloc=…" -> "7.0.15"
        out = subprocess.run(
            [self.executable, "--version"], capture_output=True, text=True, check=False
        )
        self.version = next(
            (w[2:] for w in out.stdout.split() if w.startswith("v=")), out.stdout.strip()
        )
        argv = [self.executable, "--port", str(self.port), "--bind", self.host]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        spawn = self.registry.spawn if self.registry is not None else procs.spawn
        self.managed = spawn("redis", argv, log_path=self.workdir / f"redis-{self.port}.log")
        try:
            self._wait_ready(self.managed, timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, managed: procs.Managed, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not managed.alive():
                break
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start:\n{managed.log_tail()}")

    def stop(self) -> None:
        if self.managed is None:
            return
        if self.registry is not None:
            self.registry.stop(self.managed)
        else:
            self.managed.stop()
        self.managed = None

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()
