"""Password hashing (argon2id), bounded: at most ``slots`` hashes at once, the waiting ones
served in turn by client address; and the shipped list of common passwords.

Each argon2id computation holds its memory cost (64 MiB by default) for its whole run, so
unbounded concurrency let a burst of wrong passwords grow the process by that much per
request and starve every real login behind it. ``HashGate`` caps the hashes in flight, and
hands a freed slot to the *address* served least recently rather than to the next
request: one address sending 64 requests at once waits behind itself, not in front of
everyone else.
"""

from __future__ import annotations

import asyncio
import gzip
from collections import deque
from functools import cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from chatserver.metrics import ARGON2_QUEUE

DATA = Path(__file__).parent / "data"
# argon2-cffi's defaults: argon2id with RFC 9106's low-memory profile (t=3, m=64 MiB, p=4),
# stronger than OWASP's minimums (m=19 MiB t=2, or m=46 MiB t=1).
HASHER = PasswordHasher()
# Checked when a username does not exist, so that costs the same as a wrong password.
DUMMY_HASH = HASHER.hash("not a real password, only here to spend time")
MAX_REMEMBERED_CLIENTS = 10_000


class HashGate:
    """At most ``slots`` hash computations at once; a freed slot goes to the waiting address
    whose last turn is oldest (one never served first), then to its oldest request."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}
        self._last_turn: dict[str, int] = {}
        self._turns = 0

    async def hash(self, client: str, password: str) -> str:
        with ARGON2_QUEUE.track_inprogress():  # waiting for a slot counts as queued
            await self._acquire(client)
            try:
                return await asyncio.to_thread(HASHER.hash, password)
            finally:
                self._release()

    async def verify(self, client: str, password_hash: str, password: str) -> bool:
        with ARGON2_QUEUE.track_inprogress():
            await self._acquire(client)
            try:
                return await asyncio.to_thread(_verify, password_hash, password)
            finally:
                self._release()

    async def _acquire(self, client: str) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            self._took_turn(client)
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(client, deque()).append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # the slot was handed over just as the request went away
            else:
                self._forget(client, turn)
            raise

    def _release(self) -> None:
        """Hand the slot on (see the class), or free it when nobody waits."""
        while self._waiting:
            client = min(self._waiting, key=lambda c: self._last_turn.get(c, 0))
            queue = self._waiting[client]
            turn = queue.popleft()
            if not queue:
                del self._waiting[client]
            if not turn.done():
                turn.set_result(None)
                self._took_turn(client)
                return
        self._free += 1

    def _took_turn(self, client: str) -> None:
        self._turns += 1
        self._last_turn[client] = self._turns
        if len(self._last_turn) > MAX_REMEMBERED_CLIENTS:
            # Only waiting addresses need their last turn remembered.
            self._last_turn = {c: t for c, t in self._last_turn.items() if c in self._waiting}

    def _forget(self, client: str, turn: asyncio.Future[None]) -> None:
        queue = self._waiting.get(client)
        if queue is not None and turn in queue:
            queue.remove(turn)
            if not queue:
                del self._waiting[client]


def _verify(password_hash: str, password: str) -> bool:
    try:
        return HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with other (older) parameters than HASHER's."""
    try:
        return HASHER.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


def is_common(password: str) -> bool:
    """True when the password (in any case) is on the shipped list of common passwords."""
    return password.lower() in _common_passwords()


@cache
def _common_passwords() -> frozenset[str]:
    raw = gzip.decompress((DATA / "common-passwords.txt.gz").read_bytes())
    return frozenset(raw.decode("utf-8").split())
