"""This node's open streams: revocations close them, presence and last_seen_at follow them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec
from litestar.channels import ChannelsPlugin

from chatserver.auth import TokenCache
from chatserver.events import CONTROL_CHANNEL, ControlEvent, EvictEvent, RevokeEvent
from chatserver.lastseen import LastSeen
from chatserver.presence import Presence
from chatserver.views import MessageCache

log = logging.getLogger("chatserver")

CLOSE_REVOKED = 4401
PRESENCE_REFRESH_SECONDS = 20
LAST_SEEN_EVERY_SECONDS = 60
_decode_control = msgspec.json.Decoder(ControlEvent).decode


@dataclass(eq=False, slots=True)
class StreamHandle:
    """One open stream; the hub resolves ``closed`` with a close code to end it."""

    user_id: int
    token_hash: str | None
    stream_id: str = field(default_factory=lambda: secrets.token_hex(8))
    closed: asyncio.Future[int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def close(self, code: int) -> None:
        if not self.closed.done():
            self.closed.set_result(code)


class Hub:
    def __init__(
        self,
        channels: ChannelsPlugin,
        presence: Presence,
        tokens: TokenCache,
        last_seen: LastSeen,
        messages: MessageCache | None = None,
    ) -> None:
        self._channels = channels
        self._messages = messages
        self._last_seen = last_seen
        self.presence = presence
        self._tokens = tokens
        self._streams: dict[int, set[StreamHandle]] = defaultdict(set)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        subscriber = await self._channels.subscribe([CONTROL_CHANNEL])
        self._tasks = [
            asyncio.create_task(self._follow_control(subscriber.iter_events())),
            asyncio.create_task(self._housekeeping()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for handles in list(self._streams.values()):
            for handle in handles:
                handle.close(1001)  # going away: the client resumes elsewhere

    async def open(self, handle: StreamHandle) -> None:
        self._streams[handle.user_id].add(handle)
        await self.presence.connected(handle.user_id, handle.stream_id)
        # Written at once only for a user's first stream or fetch on this node: a storm of
        # reconnecting clients must not become a storm of commits.
        await self._last_seen.touch(handle.user_id)

    async def close(self, handle: StreamHandle) -> None:
        handles = self._streams.get(handle.user_id)
        if handles is not None:
            handles.discard(handle)
            if not handles:
                del self._streams[handle.user_id]
        with contextlib.suppress(Exception):  # a broker hiccup must not leak the handle
            await self.presence.disconnected(handle.user_id, handle.stream_id)

    def revoke(self, event: RevokeEvent) -> None:
        """Apply a revocation on this node: evict cached tokens, close the affected streams."""
        if event.token_hash is None:
            self._tokens.evict_user(event.user_id)
        else:
            self._tokens.evict_token(event.token_hash)
        for handle in list(self._streams.get(event.user_id, ())):
            if event.token_hash is None or handle.token_hash == event.token_hash:
                handle.close(CLOSE_REVOKED)

    async def _follow_control(self, events: AsyncIterator[bytes]) -> None:
        async for payload in events:
            try:
                event = _decode_control(payload)
            except msgspec.ValidationError:
                log.warning("ignored a malformed control event")
                continue
            if isinstance(event, EvictEvent):
                if self._messages is not None:
                    self._messages.forget(event.message_id)
            else:
                self.revoke(event)

    async def _housekeeping(self) -> None:
        """Keep presence entries fresh; move last_seen_at of connected users once a minute."""
        last_seen_due = time.monotonic() + LAST_SEEN_EVERY_SECONDS
        while True:
            await asyncio.sleep(PRESENCE_REFRESH_SECONDS)
            try:
                streams = [(h.user_id, h.stream_id) for hs in self._streams.values() for h in hs]
                await self.presence.refresh(streams)
                if time.monotonic() >= last_seen_due:
                    last_seen_due = time.monotonic() + LAST_SEEN_EVERY_SECONDS
                    for user_id in self._streams:
                        self._last_seen.note(user_id)
            except Exception:  # keep going: the next round may succeed
                log.exception("stream housekeeping failed")
