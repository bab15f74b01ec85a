"""This node's open streams: revocations close them, presence and last_seen_at follow them.

Presence changes go to the user's peers: when a user's first stream opens (on any node), and
a grace period after their last one closes if none opened meanwhile, the node that sees the
change (presence.py makes it exactly one) reads who may hear of it — the user's
conversations minus those they block, one index range — and publishes one notice on the
control channel. Every node delivers it to the streams of that audience it holds (a
dictionary look-up per peer), so a change costs one read and one broker message however
many conversations the user has, and peers who are not streaming cost nothing more.
"""

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

from chatserver import store
from chatserver.auth import TokenCache
from chatserver.broker import ChatChannels
from chatserver.db import Database, now_us
from chatserver.errors import RateLimited
from chatserver.events import (
    CONTROL_CHANNEL,
    ControlEvent,
    EvictEvent,
    PresenceNotice,
    RevokeEvent,
    user_channel,
)
from chatserver.lastseen import LastSeen
from chatserver.presence import Presence
from chatserver.tasks import cancel_and_wait
from chatserver.views import MessageCache

log = logging.getLogger("chatserver")

CLOSE_REVOKED = 4401
CLOSE_TOO_MANY_STREAMS = 4429  # the user already has max_streams_per_user open
PRESENCE_REFRESH_SECONDS = 20
LAST_SEEN_EVERY_SECONDS = 60
_decode_control = msgspec.json.Decoder(ControlEvent).decode
_encode = msgspec.json.Encoder().encode


class TooManyStreams(RateLimited):
    code = "too-many-streams"
    title = "Too many open streams"


def _too_many(open_now: int) -> TooManyStreams:
    return TooManyStreams(
        f"You already have {open_now} streams open; close one first", retry_after=5
    )


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
        channels: ChatChannels,
        presence: Presence,
        tokens: TokenCache,
        last_seen: LastSeen,
        db: Database,
        grace_seconds: float,
        messages: MessageCache | None = None,
        max_streams: int | None = None,
    ) -> None:
        self._channels = channels
        self._messages = messages
        self._max_streams = max_streams
        self._last_seen = last_seen
        self.presence = presence
        self._tokens = tokens
        self._db = db
        self._grace = grace_seconds
        self._streams: dict[int, set[StreamHandle]] = defaultdict(set)
        self._tasks: list[asyncio.Task[None]] = []
        self._offline_checks: dict[int, asyncio.TimerHandle] = {}
        self._announcing: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def start(self) -> None:
        subscriber = await self._channels.subscribe([CONTROL_CHANNEL])
        self._tasks = [
            asyncio.create_task(self._follow_control(subscriber.iter_events())),
            asyncio.create_task(self._housekeeping()),
        ]

    async def stop(self) -> None:
        self._stopping = True  # streams closing from now on are not checked for offline
        for timer in self._offline_checks.values():
            timer.cancel()  # another node (or the expiry sweep) announces these
        await cancel_and_wait(*self._tasks, *self._announcing)
        for handles in list(self._streams.values()):
            for handle in handles:
                handle.close(1001)  # going away: the client resumes elsewhere

    def admit(self, user_id: int) -> None:
        """Raise TooManyStreams when the user already has as many streams open as allowed
        on this worker (one user's thousands of sockets must not slow everyone else); a
        cheap early answer, before a stream is accepted. ``open`` checks every node."""
        open_now = len(self._streams.get(user_id, ()))
        if self._max_streams is not None and open_now >= self._max_streams:
            raise _too_many(open_now)

    async def open(self, handle: StreamHandle) -> None:
        """Count the stream here and in presence, which refuses it (TooManyStreams) when
        the user has the most streams allowed open on any node (with Redis: all of them)."""
        self.admit(handle.user_id)
        self._streams[handle.user_id].add(handle)
        first = await self.presence.connected(handle.user_id, handle.stream_id, self._max_streams)
        if first is None:
            self._forget(handle)
            raise _too_many(self._max_streams or 0)
        # Written at once only for a user's first stream or fetch on this node: a storm of
        # reconnecting clients must not become a storm of commits.
        await self._last_seen.touch(handle.user_id)
        if first:
            self._announce_later(handle.user_id, online=True)

    async def close(self, handle: StreamHandle) -> None:
        user_id = handle.user_id
        if self._forget(handle):
            self._last_seen.queue(user_id)  # the offline event reads it after the grace
        with contextlib.suppress(Exception):  # a broker hiccup must not leak the handle
            if await self.presence.disconnected(user_id, handle.stream_id):
                self._check_offline_later(user_id)

    def _forget(self, handle: StreamHandle) -> bool:
        """Drop the stream from this node's streams; True when it was the user's last."""
        handles = self._streams.get(handle.user_id)
        if handles is None or handle not in handles:
            return False
        handles.discard(handle)
        if handles:
            return False
        del self._streams[handle.user_id]
        return True

    def _check_offline_later(self, user_id: int) -> None:
        """After the grace period, announce the user offline if no stream opened since."""
        if self._stopping:
            return  # with Redis, another node's expiry sweep announces them
        if (earlier := self._offline_checks.pop(user_id, None)) is not None:
            earlier.cancel()

        def due() -> None:
            del self._offline_checks[user_id]
            self._announce_later(user_id, online=False, check=True)

        self._offline_checks[user_id] = asyncio.get_running_loop().call_later(self._grace, due)

    def _announce_later(self, user_id: int, online: bool, check: bool = False) -> None:
        task = asyncio.create_task(self._announce(user_id, online, check))
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)

    async def _announce(self, user_id: int, online: bool, check: bool) -> None:
        try:
            if check and not await self.presence.went_offline(user_id):
                return  # back online meanwhile, or another node announced it
            await self.announce(user_id, online)
        except Exception:  # the database may be down: this change goes untold
            log.exception("announcing presence of user %d failed", user_id)

    async def announce(
        self, user_id: int, online: bool, audience: list[int] | None = None, hide: bool = False
    ) -> None:
        """Tell ``audience`` (by default, everyone who may see the user's presence) on every
        node that the user is online or offline; ``hide`` tells it as a block shows it."""
        async with self._db.read() as conn:
            user = await store.get_user(conn, user_id)
            if audience is None:
                audience = await store.presence_audience(conn, user_id)
        if user is None or not audience:
            return
        # Online: seen now. Offline: the close, written within last_seen's resolution.
        seen = None if hide else now_us() if online else user.last_seen_at
        notice = PresenceNotice(user_id, online and not hide, seen, audience)
        self._channels.publish(_encode(notice), CONTROL_CHANNEL)

    def deliver(self, notice: PresenceNotice) -> None:
        """Queue a presence event into the local streams of the notice's audience."""
        payload: bytes | None = None
        for peer_id in notice.audience:
            if peer_id in self._streams:
                payload = payload or notice.event()
                self._channels.deliver_here(payload, user_channel(peer_id))

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
            if isinstance(event, RevokeEvent):
                self.revoke(event)
            elif isinstance(event, EvictEvent):
                if self._messages is not None:
                    self._messages.forget(event.message_id)
            else:
                self.deliver(event)

    async def _housekeeping(self) -> None:
        """Keep presence entries fresh; move last_seen_at of connected users once a minute."""
        last_seen_due = time.monotonic() + LAST_SEEN_EVERY_SECONDS
        while True:
            await asyncio.sleep(PRESENCE_REFRESH_SECONDS)
            try:
                streams = [(h.user_id, h.stream_id) for hs in self._streams.values() for h in hs]
                await self.presence.refresh(streams)
                await self._announce_expired()
                if time.monotonic() >= last_seen_due:
                    last_seen_due = time.monotonic() + LAST_SEEN_EVERY_SECONDS
                    for user_id in self._streams:
                        self._last_seen.queue(user_id)
            except Exception:  # keep going: the next round may succeed
                log.exception("stream housekeeping failed")

    async def _announce_expired(self) -> None:
        """Announce offline the users whose node went away without closing their streams."""
        for user_id in await self.presence.expired():
            if await self.presence.went_offline(user_id):
                await self.announce(user_id, online=False)
