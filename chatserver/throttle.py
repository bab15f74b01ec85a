"""Brute-force throttling of password checks, per account (OWASP ASVS 2.2.1).

Every password check first takes a turn from the account's record; the turn counts as a
failure until the check succeeds (``succeeded`` gives it back). Counting before checking
makes concurrent guesses see each other: of 64 guesses sent at once, ``threshold`` are
checked and the rest are refused without hashing anything.

- After ``threshold`` consecutive failures, the account waits 1 s before its next check,
  then 2 s, 4 s … up to ``backoff_max`` seconds: ``acquire`` answers with the wait;
- at most ``per_hour`` failed checks per account in any hour-long window;
- a success clears the consecutive failures (and does not count toward the hour);
- a name that matches no account has a record of its own, treated the same way, so the
  answers do not say whether an account exists. Bearer tokens never come here: an account
  under attack keeps working through the tokens its owner already holds.

With Redis, records live there (one hash per account, updated by one Lua script, so every
worker and node shares them). While Redis cannot be reached the records of this process
are used instead: throttling goes on per node rather than failing open or locking out.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from redis.asyncio import Redis

from chatserver.broker import BROKER_ERRORS

log = logging.getLogger("chatserver")

WINDOW_MS = 3_600_000
# A record with no attempt for this long is forgotten (its failures are no longer consecutive).
FORGET_MS = 86_400_000
LOCAL_RECORDS = 100_000
# A Redis call that takes longer counts as failed; after a failure Redis is left alone a while.
CALL_TIMEOUT_SECONDS = 1.0
PAUSE_SECONDS = 1.0

# KEYS[1]: the record; ARGV: now (ms), threshold, per_hour, backoff_max (ms), forget (ms).
# Returns 0 to go ahead, else the milliseconds to wait.
_ACQUIRE = """
local now = tonumber(ARGV[1])
local r = redis.call('HMGET', KEYS[1], 'fails', 'until', 'window', 'count')
local fails, untl = tonumber(r[1]) or 0, tonumber(r[2]) or 0
local window, count = tonumber(r[3]) or now, tonumber(r[4]) or 0
if untl > now then return untl - now end
if window + 3600000 <= now then window = now; count = 0 end
if count >= tonumber(ARGV[3]) then return window + 3600000 - now end
fails = fails + 1
count = count + 1
if fails >= tonumber(ARGV[2]) then
  untl = now + math.min(1000 * 2 ^ (fails - tonumber(ARGV[2])), tonumber(ARGV[4]))
end
redis.call('HSET', KEYS[1], 'fails', fails, 'until', untl, 'window', window, 'count', count)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 0
"""
# A check failed: the wait starts again from now (the turn set it from the turn's start).
_FAILED = """
local r = redis.call('HMGET', KEYS[1], 'fails', 'until')
local fails, untl = tonumber(r[1]) or 0, tonumber(r[2]) or 0
if fails < tonumber(ARGV[2]) then return 0 end
local now = tonumber(ARGV[1])
local wait = math.min(1000 * 2 ^ (fails - tonumber(ARGV[2])), tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], 'until', math.max(untl, now + wait))
return 0
"""
_SUCCEEDED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local count = tonumber(redis.call('HGET', KEYS[1], 'count')) or 1
redis.call('HSET', KEYS[1], 'fails', 0, 'until', 0, 'count', math.max(count - 1, 0))
return 0
"""


@dataclass(frozen=True, slots=True)
class Limits:
    threshold: int
    per_hour: int
    backoff_max_ms: int


@dataclass(slots=True)
class Record:
    fails: int = 0
    until: int = 0
    window: int = 0
    count: int = 0


def take_turn(record: Record, now: int, limits: Limits) -> int:
    """The Lua script's rule on a local record: 0 to go ahead, else the ms to wait."""
    if record.until > now:
        return record.until - now
    if record.window + WINDOW_MS <= now:
        record.window, record.count = now, 0
    if record.count >= limits.per_hour:
        return record.window + WINDOW_MS - now
    record.fails += 1
    record.count += 1
    back_off(record, now, limits)
    return 0


def back_off(record: Record, now: int, limits: Limits) -> None:
    """From ``threshold`` consecutive failures on, no check before 1 s, 2 s, 4 s … from now."""
    if record.fails >= limits.threshold:
        backoff = 1000 * 2 ** min(record.fails - limits.threshold, 40)
        record.until = max(record.until, now + min(backoff, limits.backoff_max_ms))


class LoginThrottle:
    def __init__(self, limits: Limits, redis: Redis | None = None) -> None:
        self._limits = limits
        self._redis = redis
        self._local: OrderedDict[str, Record] = OrderedDict()
        self._paused_until = 0.0  # monotonic; no Redis calls before then

    async def acquire(self, account: str) -> int | None:
        """Take a turn to check a password for ``account`` (a user id or an unknown
        name); None to go ahead, else the whole seconds to wait."""
        key, now = record_key(account), now_ms()
        wait = await self._redis_call(_ACQUIRE, key, now, *self._args())
        if wait is None:  # no Redis, or unreachable: this process's records
            wait = take_turn(self._record(key, now), now, self._limits)
        return None if wait <= 0 else math.ceil(wait / 1000)

    async def failed(self, account: str) -> None:
        """The password was wrong: the account's wait counts from now."""
        key, now = record_key(account), now_ms()
        in_redis = await self._redis_call(_FAILED, key, now, *self._args()) is not None
        if not in_redis and (local := self._local.get(key)) is not None:
            back_off(local, now, self._limits)

    async def succeeded(self, account: str) -> None:
        """The password was right: clear the failures and give the turn back."""
        key = record_key(account)
        local = self._local.get(key)
        if local is not None:
            local.fails, local.until, local.count = 0, 0, max(local.count - 1, 0)
        await self._redis_call(_SUCCEEDED, key)

    async def _redis_call(self, script: str, key: str, *args: int) -> int | None:
        """Run a script on the record in Redis; None without Redis or while it fails
        (then Redis is left alone for PAUSE_SECONDS, so a login never waits on it long)."""
        if self._redis is None or time.monotonic() < self._paused_until:
            return None
        try:
            async with asyncio.timeout(CALL_TIMEOUT_SECONDS):
                return int(await self._redis.eval(script, 1, key, *args))
        except (*BROKER_ERRORS, TimeoutError):
            log.warning("login throttle: Redis unreachable, throttling on this node alone")
            self._paused_until = time.monotonic() + PAUSE_SECONDS
            return None

    def _args(self) -> tuple[int, int, int, int]:
        lim = self._limits
        return lim.threshold, lim.per_hour, lim.backoff_max_ms, FORGET_MS

    def _record(self, key: str, now: int) -> Record:
        """The local record (a new one after FORGET_MS of silence), kept in LRU order."""
        record = self._local.pop(key, None)
        if record is None or (record.window + FORGET_MS <= now and record.until <= now):
            record = Record(window=now)
        self._local[key] = record
        if len(self._local) > LOCAL_RECORDS:
            self._local.popitem(last=False)
        return record


def record_key(account: str) -> str:
    # Hashed: names that match no account are not written to Redis as they were typed.
    digest = hashlib.sha256(account.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"chatserver:login:{digest}"


def now_ms() -> int:
    return int(time.time() * 1000)
