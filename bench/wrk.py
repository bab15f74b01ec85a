"""Run wrk with one of the Lua scripts in bench/lua and parse its machine-readable summary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testinfra import procs

LUA_DIR = Path(__file__).resolve().parent / "lua"
SATURATION = 0.9  # share of one core per wrk thread above which the generator is the limit


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    status_errors: int  # HTTP status >= 400
    socket_errors: int  # connect/read/write/timeout
    generator_cpu: float  # cores used by wrk over the run
    generator_max_thread: float  # busiest wrk thread, share of one core
    server_cpu: float  # cores used by the server tree over the run (when known)
    steal: float = 0.0  # share of the machine's CPU time the hypervisor took over the run

    @property
    def errors(self) -> int:
        return self.status_errors + self.socket_errors

    @property
    def generator_saturated(self) -> bool:
        return self.generator_max_thread >= SATURATION

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "duration_s": round(self.duration_s, 3),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p90_ms": round(self.p90_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "max_ms": round(self.max_ms, 3),
            "status_errors": self.status_errors,
            "socket_errors": self.socket_errors,
            "generator_cpu_cores": round(self.generator_cpu, 3),
            "generator_busiest_thread": round(self.generator_max_thread, 3),
            "generator_saturated": self.generator_saturated,
            "server_cpu_cores": round(self.server_cpu, 3),
        }


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk not found: install it (Debian/Ubuntu: apt-get install wrk)")
    return found


def wrk_version() -> str:
    out = subprocess.run([wrk_binary(), "-v"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).splitlines()
    # "wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer" -> "debian/4.1.0-3+b2"
    words = first[0].split() if first else []
    return words[1] if len(words) > 1 else "unknown"


class _CpuSampler(threading.Thread):
    """Samples per-thread CPU time of the generator, and the server tree, while wrk runs."""

    def __init__(self, gen_pid: int, server_pid: int | None) -> None:
        super().__init__(daemon=True)
        self.gen_pid = gen_pid
        self.server_pid = server_pid
        self.stop_event = threading.Event()
        self.t0 = time.monotonic()
        self.server_cpu0 = procs.tree_cpu_seconds(server_pid) if server_pid else 0.0
        self.last_threads: dict[int, float] = {}
        self.last_server = self.server_cpu0
        self.last_t = self.t0
        self.ticks0 = self.last_ticks = procs.machine_cpu_ticks()

    def run(self) -> None:
        while not self.stop_event.wait(0.25):
            threads = procs.thread_cpu_seconds(self.gen_pid)
            if not threads:
                break
            server = procs.tree_cpu_seconds(self.server_pid) if self.server_pid else 0.0
            # wrk's worker threads exit before the process prints its summary: keep the last
            # value seen per thread and the time of the last sample where anything moved.
            moved = any(cpu > self.last_threads.get(tid, 0.0) for tid, cpu in threads.items())
            self.last_threads.update(threads)
            if moved:
                self.last_server, self.last_t = server, time.monotonic()
                self.last_ticks = procs.machine_cpu_ticks()

    def result(self) -> tuple[float, float, float]:
        elapsed = max(self.last_t - self.t0, 1e-6)
        gen_total = sum(self.last_threads.values()) / elapsed
        busiest = max(self.last_threads.values(), default=0.0) / elapsed
        server = (self.last_server - self.server_cpu0) / elapsed
        return gen_total, busiest, server

    def steal(self) -> float:
        """The share of all CPUs' time stolen by the hypervisor while wrk ran."""
        return procs.steal_share(self.ticks0, self.last_ticks)


def run_wrk(
    url: str,
    script: str,
    *,
    duration: float,
    connections: int = 64,
    threads: int = 2,
    data_file: Path | None = None,
    server_pid: int | None = None,
    timeout_s: float = 10.0,
) -> WrkResult:
    """One wrk run; ``script`` is a file name in bench/lua (e.g. ``"send.lua"``)."""
    threads = max(1, min(threads, connections))
    argv = [
        wrk_binary(),
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={max(1, round(duration))}s",
        f"--timeout={round(timeout_s)}s",
        f"--script={LUA_DIR / script}",
        url,
    ]
    env = dict(os.environ, BENCH_LUA_DIR=str(LUA_DIR))
    if data_file is not None:
        env["BENCH_DATA"] = str(data_file)
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True
    )
    sampler = _CpuSampler(proc.pid, server_pid)
    sampler.start()
    try:
        stdout, stderr = proc.communicate(timeout=duration + timeout_s + 30)
    finally:
        if proc.poll() is None:
            procs.stop_group(proc)
        sampler.stop_event.set()
        sampler.join()
    text = stdout.decode(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed (exit {proc.returncode}) for {script} {url}:\n"
            f"{text[-2000:]}\n{stderr.decode(errors='replace')[-2000:]}"
        )
    data = json.loads(line.removeprefix("BENCH_JSON "))
    gen_total, busiest, server_cpu = sampler.result()
    duration_s = data["duration_us"] / 1e6
    return WrkResult(
        requests=data["requests"],
        duration_s=duration_s,
        rps=data["requests"] / duration_s if duration_s else 0.0,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        status_errors=data["status"],
        socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
        generator_cpu=gen_total,
        generator_max_thread=busiest,
        server_cpu=server_cpu,
        steal=sampler.steal(),
    )
