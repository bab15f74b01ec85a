"""WebSocket load: many stream clients spread over helper processes, and a fixed-rate sender.

All timestamps are ``time.monotonic()``, which on Linux is one system-wide clock, so the
sender's "201 received" and a receiver's "frame received" can be subtracted across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing as mp
import random
import resource
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

import msgspec

STREAM_PATH = "/api/v1/stream"
SOCKETS_PER_PROCESS = 2500
_CTX = mp.get_context("spawn")


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class SocketLog:
    user_id: int
    received: list[tuple[int, float]] = field(default_factory=list)  # (message id, monotonic)
    error: str | None = None
    connected: bool = False


async def _wait_command(conn: Connection) -> Any:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def on_readable() -> None:
        if not fut.done():
            fut.set_result(conn.recv())

    loop.add_reader(conn.fileno(), on_readable)
    try:
        return await fut
    finally:
        loop.remove_reader(conn.fileno())


async def _receiver(
    conn: Connection, ws_url: str, assignments: list[tuple[int, str]], concurrency: int
) -> None:
    from websockets.asyncio.client import connect

    logs = [SocketLog(user_id=uid) for uid, _ in assignments]
    sockets: list[Any] = [None] * len(assignments)
    connect_sem = asyncio.Semaphore(concurrency)
    decoder = msgspec.json.Decoder()
    stopping = False

    async def run_socket(i: int, token: str) -> None:
        log = logs[i]
        try:
            async with connect_sem:
                ws = await connect(
                    ws_url + STREAM_PATH,
                    additional_headers={"Authorization": f"Bearer {token}"},
                    compression=None,
                    ping_interval=None,
                    open_timeout=60,
                    max_queue=None,
                )
            sockets[i] = ws
            log.connected = True
        except Exception as exc:
            log.error = f"connect: {type(exc).__name__}: {exc}"[:300]
            return
        try:
            async for frame in ws:
                now = time.monotonic()
                try:
                    event = decoder.decode(frame)
                    if event.get("type") == "message":
                        log.received.append((int(event["message"]["id"]), now))
                except (msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError):
                    continue
        except Exception as exc:
            if not stopping:
                log.error = f"closed: {type(exc).__name__}: {exc}"[:300]
            return
        if not stopping:
            log.error = f"closed by server: code {ws.close_code} {ws.close_reason}"[:300]

    tasks = [asyncio.create_task(run_socket(i, tok)) for i, (_, tok) in enumerate(assignments)]
    # Ready once every socket either connected or failed.
    while True:
        done = sum(1 for log in logs if log.connected or log.error)
        if done == len(logs):
            break
        await asyncio.sleep(0.05)
    pause_garbage_collector()
    conn.send(("ready", sum(log.connected for log in logs)))
    cpu0, t0 = _cpu_self(), time.monotonic()
    while (await _wait_command(conn)) != "stop":
        cpu0, t0 = _cpu_self(), time.monotonic()  # "measure": restart the CPU window
    cpu = (_cpu_self() - cpu0) / max(time.monotonic() - t0, 1e-6)
    stopping = True
    # Report first, then close every socket at once (closing them one by one is slow).
    conn.send(("done", [(lg.user_id, lg.received, lg.error, lg.connected) for lg in logs], cpu))
    with contextlib.suppress(Exception):
        await asyncio.wait_for(
            asyncio.gather(
                *(ws.close() for ws in sockets if ws is not None), return_exceptions=True
            ),
            10,
        )
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _receiver_main(
    conn: Connection, ws_url: str, assignments: list[tuple[int, str]], concurrency: int
) -> None:
    asyncio.run(_receiver(conn, ws_url, assignments, concurrency))


@dataclass
class FleetResult:
    logs: list[SocketLog]
    generator_cpu_max: float  # busiest receiver process, share of one core

    @property
    def errors(self) -> list[str]:
        return [log.error for log in self.logs if log.error]


class SocketFleet:
    """``len(assignments)`` stream sockets split across helper processes."""

    def __init__(self, ws_url: str, assignments: list[tuple[int, str]]) -> None:
        self.ws_url = ws_url
        self.assignments = assignments
        count = max(1, -(-len(assignments) // SOCKETS_PER_PROCESS))
        self.chunks = [assignments[i::count] for i in range(count)]
        self.procs: list[tuple[Any, Connection]] = []

    def connect(self, timeout: float) -> int:
        """Open every socket; return how many connected."""
        for chunk in self.chunks:
            parent, child = _CTX.Pipe()
            proc = _CTX.Process(
                target=_receiver_main, args=(child, self.ws_url, chunk, 100), daemon=True
            )
            proc.start()
            child.close()
            self.procs.append((proc, parent))
        connected = 0
        deadline = time.monotonic() + timeout
        for _proc, parent in self.procs:
            if not parent.poll(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"stream clients not connected after {timeout:.0f}s")
            msg = parent.recv()
            connected += int(msg[1])
        return connected

    def measure(self) -> None:
        for _, parent in self.procs:
            parent.send("measure")

    def stop(self, timeout: float = 60.0) -> FleetResult:
        logs: list[SocketLog] = []
        cpu_max = 0.0
        for _, parent in self.procs:
            parent.send("stop")
        for (_proc, parent), chunk in zip(self.procs, self.chunks, strict=True):
            try:
                if not parent.poll(timeout):
                    raise EOFError
                _, raw, cpu = parent.recv()
            except (EOFError, OSError):
                # A helper that never reported: all its sockets count as failed, not as absent.
                logs.extend(
                    SocketLog(user_id=uid, error="client process did not report", connected=True)
                    for uid, _ in chunk
                )
                continue
            cpu_max = max(cpu_max, float(cpu))
            logs.extend(
                SocketLog(user_id=uid, received=rec, error=err, connected=ok)
                for uid, rec, err, ok in raw
            )
        for proc, _ in self.procs:
            proc.join(15)
        self.close()
        return FleetResult(logs=logs, generator_cpu_max=cpu_max)

    def close(self) -> None:
        for proc, parent in self.procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
            parent.close()
        self.procs = []


def pause_garbage_collector() -> None:
    """Keep this load generator's own collections out of the latencies it measures.

    A helper holding thousands of sockets runs full collections of its own under fan-out
    (its connections, plus a timestamp tuple per frame received), and meanwhile its
    sockets' frames wait: the slow deliveries of a run came in bursts, one helper process
    at a time. The helpers live for one measurement, so they simply stop collecting
    (refcounting still frees almost everything).
    """
    gc.collect()
    gc.freeze()
    gc.disable()


# --------------------------------------------------------------------------- sender


@dataclass
class SentMessage:
    id: int
    sender: int
    recipient: int
    t_201: float


class HttpConnection:
    """A minimal keep-alive HTTP/1.1 client connection: the sender must not be the bottleneck
    (a general-purpose client spends far more CPU per request than this one)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post_json(self, path: str, body: bytes, token: str) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        try:
            status_line = await self.reader.readuntil(b"\r\n")
            headers = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.writer = None
            raise
        length = 0
        close = False
        for line in headers.split(b"\r\n"):
            name, _, value = line.partition(b":")
            lname = name.strip().lower()
            if lname == b"content-length":
                length = int(value.strip())
            elif lname == b"connection" and value.strip().lower() == b"close":
                close = True
        payload = await self.reader.readexactly(length) if length else b""
        if close:
            self.writer.close()
            self.writer = None
        return int(status_line.split()[1]), payload


async def _sender(
    base_url: str, users: list[tuple[int, str]], rate: float, duration: float
) -> tuple[list[tuple[int, int, int, float]], list[str], float, float]:
    """POST at a fixed rate (open loop: a slow server does not slow the schedule)."""
    sent: list[tuple[int, int, int, float]] = []
    errors: list[str] = []
    rng = random.Random(1234)
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    decode = msgspec.json.Decoder().decode

    async def worker() -> None:
        conn = HttpConnection(host, port)
        while (seq := await queue.get()) is not None:
            (sid, token), (rid, _) = rng.sample(users, 2)
            body = msgspec.json.encode({"user_id": rid, "message": f"fanout {seq}"})
            try:
                status, payload = await conn.post_json("/api/v1/chats/", body, token)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                errors.append(f"POST: {type(exc).__name__}: {exc}"[:200])
                continue
            t = time.monotonic()
            if status != 201:
                errors.append(f"POST: HTTP {status}: {payload[:150]!r}")
                continue
            sent.append((int(decode(payload)["id"]), sid, rid, t))

    workers = [asyncio.create_task(worker()) for _ in range(64)]
    pause_garbage_collector()
    cpu0 = _cpu_self()
    start = time.monotonic()
    total = int(rate * duration)
    for seq in range(total):
        delay = start + seq / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(seq)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    cpu = (_cpu_self() - cpu0) / max(time.monotonic() - start, 1e-6)
    # Completed 201s per second over the sending window (falls short when the server lags).
    last = max((row[3] for row in sent), default=start)
    achieved = len(sent) / max(last - start, total / rate) if total else 0.0
    if queue.qsize() == 0 and len(sent) + len(errors) < total:
        errors.append(f"{total - len(sent) - len(errors)} POSTs never completed")
    return sent, errors, cpu, achieved


def _sender_main(
    conn: Connection, base_url: str, users: list[tuple[int, str]], rate: float, duration: float
) -> None:
    conn.send(asyncio.run(_sender(base_url, users, rate, duration)))


@dataclass
class SenderResult:
    sent: list[SentMessage]
    errors: list[str]
    cpu: float
    achieved_rate: float


def run_sender(
    base_url: str, users: list[tuple[int, str]], rate: float, duration: float
) -> SenderResult:
    parent, child = _CTX.Pipe()
    proc = _CTX.Process(
        target=_sender_main, args=(child, base_url, users, rate, duration), daemon=True
    )
    proc.start()
    child.close()
    try:
        if not parent.poll(duration + 120):
            raise RuntimeError("fan-out sender did not finish")
        sent, errors, cpu, achieved = parent.recv()
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        parent.close()
    return SenderResult(
        sent=[SentMessage(*row) for row in sent], errors=errors, cpu=cpu, achieved_rate=achieved
    )
