"""The WebSocket sender (api/stream.Sender): a task only while there is something to send."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from chatserver.api.stream import Sender
from chatserver.streams import Feed, StreamEvent


class QueueFeed:
    """A feed's polling side over a plain list (what Sender uses of Feed)."""

    def __init__(self) -> None:
        self.queued: list[StreamEvent] = []
        self.notify: Callable[[], None] = lambda: None

    def on_event(self, callback: Callable[[], None]) -> None:
        self.notify = callback

    async def poll(self) -> StreamEvent | None:
        return self.queued.pop(0) if self.queued else None

    def push(self, payload: bytes) -> None:
        self.queued.append(StreamEvent(payload, None))
        self.notify()


class RecordingSocket:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[bytes] = []
        self.fail = fail

    async def send_data(self, data: bytes, mode: str = "text") -> None:
        if self.fail:
            raise ConnectionResetError("the client is gone")
        await asyncio.sleep(0)  # a real send may suspend
        self.sent.append(data)


def make_sender(feed: QueueFeed, socket: RecordingSocket, failures: list[str]) -> Sender:
    return Sender(cast(Any, socket), cast(Feed, feed), on_failure=lambda: failures.append("x"))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_sends_queued_events_in_order_and_keeps_no_task_while_idle() -> None:
    feed, socket, failures = QueueFeed(), RecordingSocket(), []
    feed.queued.append(StreamEvent(b"replayed", 1))
    sender = make_sender(feed, socket, failures)
    await settle()
    assert socket.sent == [b"replayed"]
    assert sender._task is None  # idle: nothing waits, nothing is held between events

    feed.push(b"a")
    feed.push(b"b")  # queued while the first send is under way: one task sends both
    await settle()
    assert socket.sent == [b"replayed", b"a", b"b"]
    assert sender._task is None
    assert failures == []
    await sender.stop()


async def test_an_event_queued_after_the_last_poll_is_sent_too() -> None:
    feed, socket, failures = QueueFeed(), RecordingSocket(), []
    sender = make_sender(feed, socket, failures)
    await settle()
    for i in range(3):  # each arrives after the previous task ended
        feed.push(f"m{i}".encode())
        await settle()
    assert socket.sent == [b"m0", b"m1", b"m2"]
    await sender.stop()


async def test_a_failed_send_ends_the_stream_and_stop_sends_nothing_more() -> None:
    feed, socket, failures = QueueFeed(), RecordingSocket(fail=True), []
    sender = make_sender(feed, socket, failures)
    feed.push(b"lost")
    await settle()
    assert failures == ["x"]
    await sender.stop()
    socket.fail = False
    feed.push(b"after stop")
    await settle()
    assert socket.sent == []
