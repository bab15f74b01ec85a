"""Throwaway PostgreSQL and Redis for ``--db postgres`` / ``--redis``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from bench import procs

PG_ROOT = Path("/usr/lib/postgresql")


def _pg_bin() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(
        (p for p in PG_ROOT.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        raise RuntimeError("PostgreSQL not found (looked for pg_ctl and /usr/lib/postgresql/*/bin)")
    return versions[-1]


def _as_postgres(argv: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root: drop to the postgres system user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


class Postgres:
    """initdb + pg_ctl in a temporary folder; trust auth on 127.0.0.1 only."""

    def __init__(self, registry: procs.ProcessRegistry) -> None:
        self.registry = registry
        self.bin = _pg_bin()
        self.port = procs.free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="chatbench-pg-"))
        self.data = self.dir / "data"
        self.started = False
        self.version = "unknown"

    @property
    def url(self) -> str:
        return f"postgresql://postgres:postgres@127.0.0.1:{self.port}/chat"

    def _run(self, argv: list[str]) -> str:
        out = subprocess.run(
            _as_postgres(argv), capture_output=True, text=True, check=False, cwd=self.dir
        )
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        # "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" -> "15.18"
        words = self._run([str(self.bin / "postgres"), "--version"]).split()
        self.version = words[2] if len(words) > 2 else "unknown"
        self._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ]
        )
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=300"
        )
        self._run(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.dir / "postgres.log"),
                "-o",
                options,
                "-w",
                "start",
            ]
        )
        self.started = True
        self._run(
            [
                str(self.bin / "psql"),
                "-h",
                str(self.dir),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-c",
                "CREATE DATABASE chat",
            ]
        )

    def stop(self) -> None:
        try:
            if self.started:
                self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"])
                self.started = False
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    """redis-server on a free port with persistence off."""

    def __init__(self, registry: procs.ProcessRegistry, workdir: Path) -> None:
        self.registry = registry
        self.port = procs.free_port()
        self.workdir = workdir
        self.managed: procs.Managed | None = None
        self.version = "unknown"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found (Debian/Ubuntu: apt-get install redis)")
        # "Redis server v=7.0.15 sha=… malloc=…" -> "7.0.15"
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
        self.version = next(
            (w[2:] for w in out.stdout.split() if w.startswith("v=")), out.stdout.strip()
        )
        self.managed = self.registry.spawn(
            "redis",
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            log_path=self.workdir / "redis.log",
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start:\n{self.managed.log_tail()}")

    def stop(self) -> None:
        if self.managed is not None:
            self.registry.stop(self.managed)
            self.managed = None
