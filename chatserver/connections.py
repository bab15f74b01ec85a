"""Bounded connections for uvicorn: ``chatserver serve`` runs uvicorn with
``--http chatserver.connections:GuardedHttpToolsProtocol``.

uvicorn's httptools protocol waits forever for a request head, buffers a head of any size
and accepts connections until the process runs out of file descriptors. This subclass adds,
per worker process:

- a cap on open connections per client address and in total (the total is kept below the
  descriptor limit); a connection over either is closed at once, before it costs more;
- a deadline for the whole request head, from the connection's first byte (or its
  accept) to the end of the head, however slowly the bytes trickle in;
- a maximum head size: over it, ``431`` and the connection is closed, having buffered at
  most the limit plus one slice.

Idle keep-alive connections are closed by uvicorn's own ``--timeout-keep-alive``.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from chatserver.config import Settings, settings_from_env

log = logging.getLogger("chatserver")

# Descriptors kept for everything but client sockets: database and Redis connections,
# log files, the listening sockets, the loop's own.
RESERVED_DESCRIPTORS = 256
# The head is fed to the parser in slices of this size, so a head over the limit is
# refused before much more than the limit is buffered.
HEAD_SLICE = 8192
TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/problem+json\r\nconnection: close\r\n"
)
TOO_LARGE_BODY = (
    b'{"type":"https://chatserver.dev/problems/headers-too-large",'
    b'"title":"Request header fields too large","status":431,'
    b'"detail":"The request head is larger than the server accepts"}'
)


def raise_descriptor_limit() -> int:
    """Raise the soft limit on open files to the hard one; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # some containers refuse: keep what we have
            log.warning("could not raise the open-file limit from %d", soft)
    return soft


def connection_cap(settings: Settings) -> int:
    """The total connections one worker admits: the setting, but below the fd limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(1, min(settings.max_connections, soft - RESERVED_DESCRIPTORS))


class Admission:
    """Open connections of this process, per client address and in total."""

    def __init__(self, settings: Settings) -> None:
        self.per_address = settings.max_connections_per_address
        self.total = connection_cap(settings)
        self.head_timeout = settings.header_timeout_seconds
        self.max_head = settings.max_header_bytes
        self.open: Counter[str] = Counter()
        self.count = 0

    def admit(self, address: str) -> bool:
        if self.count >= self.total or self.open[address] >= self.per_address:
            return False
        self.open[address] += 1
        self.count += 1
        return True

    def release(self, address: str) -> None:
        self.count -= 1
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]


_admission: Admission | None = None


def admission() -> Admission:
    """This worker's admission, from the CHAT_* variables ``chatserver serve`` exported."""
    global _admission
    if _admission is None:
        _admission = Admission(settings_from_env())
    return _admission


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with connection caps, a head deadline and size limit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard = admission()
        self._address: str | None = None  # set while admitted
        self._head_bytes = 0
        self._in_head = True
        # When the head being received began (None between requests), and the one timer
        # that enforces its deadline: re-armed when it fires, not per request, so a busy
        # keep-alive connection creates and cancels no timer per request.
        self._head_started: float | None = None
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = self.client[0] if self.client else "unknown"
        if not self._guard.admit(address):
            transport.abort()  # no answer: an answer would cost what the cap saves
            return
        self._address = address
        self._begin_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        super().connection_lost(exc)

    def _release(self) -> None:
        self._cancel_head_timer()
        if self._address is not None:
            self._guard.release(self._address)
            self._address = None

    def data_received(self, data: bytes) -> None:
        if self._address is None:
            return  # refused: closing
        if not self._in_head:
            super().data_received(data)
            return
        for start in range(0, len(data), HEAD_SLICE):
            if not self._in_head:
                super().data_received(data[start:])
                return
            piece = data[start : start + HEAD_SLICE]
            super().data_received(piece)
            if self.transport.is_closing() or self.transport.get_protocol() is not self:
                return
            if self._in_head:
                self._head_bytes += len(piece)
                if self._head_bytes > self._guard.max_head:
                    self._refuse_large_head()
                    return

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        if self._head_started is None:  # else the connection's first head, timed from accept
            self._begin_head()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._head_started = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # whatever comes next is the next request's head

    def handle_websocket_upgrade(self) -> None:
        """The socket passes to the WebSocket protocol, which knows nothing of the caps:
        release the slot when that protocol loses the connection."""
        address, self._address = self._address, None
        self._cancel_head_timer()
        super().handle_websocket_upgrade()
        if address is None:
            return
        websocket = self.transport.get_protocol()
        lost = websocket.connection_lost
        guard = self._guard

        # Only the guard and the address, not ``self``: a closure over this HTTP protocol
        # would keep it (parser, the upgrade request's headers and scope, flow control)
        # alive as long as the socket, ~6 KiB per idle stream (the idle-sockets bench row).
        def release_then_lose(exc: Exception | None) -> None:
            guard.release(address)
            lost(exc)

        websocket.connection_lost = release_then_lose  # type: ignore[method-assign]

    def _begin_head(self) -> None:
        """A head begins (the connection's first, at accept): its deadline starts now."""
        self._head_started = self.loop.time()
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self._guard.head_timeout, self._check_head)

    def _cancel_head_timer(self) -> None:
        self._head_started = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _check_head(self) -> None:
        """The timer: a head past its deadline closes the connection (with nothing to
        answer, a client that trickles its head or sends nothing at all holds a descriptor
        until here); a later head is checked again at its own deadline; between requests
        the timer stops until the next head begins."""
        self._head_timer = None
        started = self._head_started
        if started is None or self.transport.is_closing():
            return
        left = started + self._guard.head_timeout - self.loop.time()
        if left > 0:
            self._head_timer = self.loop.call_later(left, self._check_head)
        else:
            self.transport.close()

    def _refuse_large_head(self) -> None:
        length = b"content-length: %d\r\n\r\n" % len(TOO_LARGE_BODY)
        self.transport.write(TOO_LARGE + length + TOO_LARGE_BODY)
        self.transport.close()
