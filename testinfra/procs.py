"""Process helpers: spawn in own process groups, stop them, read CPU, memory and sockets
from /proc."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TCP_ESTABLISHED = "01"  # the state column of /proc/net/tcp


def raise_nofile_limit() -> int:
    """Raise the soft open-files limit to the hard limit; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1_048_576
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    """A TCP port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Managed:
    """A child process started in its own session (so its whole tree can be signalled)."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        """Everything the process wrote so far (stdout and stderr)."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        stop_group(self.proc, timeout)

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the whole process group at once (no chance to shut down) and reap it."""
        _signal_group(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=timeout)


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Managed:
    """Start ``argv`` in a new session, stdout and stderr appended to ``log_path``."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    return Managed(name=name, proc=proc, log_path=log_path)


class ProcessRegistry:
    """Everything a run starts is registered here and stopped in reverse order."""

    def __init__(self) -> None:
        self._procs: list[Managed] = []

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Managed:
        managed = spawn(name, argv, log_path=log_path, env=env, cwd=cwd)
        self._procs.append(managed)
        return managed

    def stop(self, managed: Managed, timeout: float = 10.0) -> None:
        managed.stop(timeout)
        with contextlib.suppress(ValueError):
            self._procs.remove(managed)

    def stop_all(self) -> None:
        while self._procs:
            self.stop(self._procs[-1])


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the process group led by ``proc`` (started in a new session), then SIGKILL."""
    pgid = proc.pid
    if proc.poll() is None:
        _signal_group(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(pgid, signal.SIGKILL)
            proc.wait(timeout=5)
    # Stragglers (workers) left in the group after the leader exited.
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        _signal_group(pgid, signal.SIGTERM if time.monotonic() < deadline else signal.SIGKILL)
        time.sleep(0.1)
        if time.monotonic() > deadline + 5:
            break


def _stat_fields(pid: int, tid: int | None = None) -> list[str] | None:
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        raw = Path(path).read_text()
    except OSError:
        return None
    # comm may contain spaces; everything after the last ')' is space separated.
    return raw[raw.rfind(")") + 2 :].split()


def group_members(pgid: int) -> list[int]:
    """Live processes in the process group ``pgid`` (a server and its workers)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        # fields[0] = state, [1] = ppid, [2] = pgrp
        if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def process_tree(root: int) -> list[int]:
    """``root`` and all of its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None or fields[0] == "Z":
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    tree: list[int] = []
    stack = [root]
    while stack:
        pid = stack.pop()
        if Path(f"/proc/{pid}").exists():
            tree.append(pid)
        stack.extend(children.get(pid, []))
    return tree


def leaf_processes(root: int) -> list[int]:
    """The processes of the tree without children: the workers (or the root if alone)."""
    tree = process_tree(root)
    parents = set()
    for pid in tree:
        fields = _stat_fields(pid)
        if fields is not None:
            parents.add(int(fields[1]))
    return [pid for pid in tree if pid not in parents]


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(root: int) -> int:
    return sum(rss_kib(pid) for pid in process_tree(root))


def cpu_seconds(pid: int) -> float:
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # utime, stime are fields 14 and 15 (1-based) -> index 11, 12 after the comm split.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(root: int) -> float:
    return sum(cpu_seconds(pid) for pid in process_tree(root))


def machine_cpu_ticks() -> tuple[int, int]:
    """(steal, total) clock ticks of all CPUs since boot, from /proc/stat.

    Steal is time a virtual CPU was ready to run but the hypervisor ran something else:
    on a shared VM it comes in pauses that every latency measured meanwhile includes."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return 0, 0
    # cpu user nice system idle iowait irq softirq steal (guest time is already in user)
    ticks = [int(value) for value in first[1:9]]
    return (ticks[7] if len(ticks) > 7 else 0), sum(ticks)


def steal_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of all CPUs' time the hypervisor took between two ``machine_cpu_ticks``."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    out: dict[int, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        fields = _stat_fields(pid, int(tid))
        if fields is not None:
            out[int(tid)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


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


def socket_owner(pgid: int, local_port: int, remote_port: int) -> int | None:
    """Which process of the group ``pgid`` holds the socket local_port <-> remote_port."""
    connection = tcp_connection(local_port, remote_port)
    if connection is None:
        return None
    target = f"socket:[{connection[1]}]"
    for pid in group_members(pgid):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == target:
                        return pid
    return None


def http_status(url: str, timeout: float = 1.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (local URL)
            status: int = resp.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def wait_healthy(url: str, managed: Managed, timeout: float) -> float:
    """Poll ``url`` until it answers 200; return seconds since the process was spawned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not managed.alive():
            raise RuntimeError(
                f"{managed.name} exited with code {managed.proc.returncode} before becoming "
                f"healthy; log tail:\n{managed.log_tail()}"
            )
        if http_status(url, timeout=0.5) == 200:
            return time.monotonic() - managed.started_at
        time.sleep(0.01)
    raise RuntimeError(
        f"{managed.name} not healthy at {url} after {timeout:.0f}s; log tail:\n{managed.log_tail()}"
    )


class Service:
    """A throwaway server: ``with`` starts it and stops it again."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
