"""Passwords (argon2id), tokens (random, stored hashed) and reading the caller's credentials."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

from chatserver import passwords, store, usernames
from chatserver.db import Database
from chatserver.errors import BadCredentials, NotAuthenticated, TooManyAttempts
from chatserver.metrics import ARGON2_QUEUE
from chatserver.passwords import HashGate
from chatserver.throttle import LoginThrottle

TOKEN_BYTES = 32  # 256 bits from secrets


@dataclass(frozen=True, slots=True)
class Logins:
    """What a password check goes through: the per-account throttle, then the hash gate."""

    throttle: LoginThrottle
    gate: HashGate


async def hash_password(password: str) -> str:
    """argon2id hash, computed off the event loop, outside any gate (command-line tools)."""
    with ARGON2_QUEUE.track_inprogress():
        return await asyncio.to_thread(passwords.HASHER.hash, password)


async def user_with_password(
    db: Database, logins: Logins, login: str, password: str, client: str
) -> store.UserRow:
    """The user whose username (or email) is ``login``, if ``password`` is theirs; else
    BadCredentials, after the same work whether or not the user exists.

    TooManyAttempts, without checking anything, while the account (or the unknown name)
    is throttled (see throttle.py)."""
    username_key, email_key = login_keys(login)
    async with db.read() as conn:
        user = await store.find_user_by_login(conn, username_key, email_key)
    account = f"user:{user.id}" if user else f"name:{username_key}"
    if (wait := await logins.throttle.acquire(account)) is not None:
        raise TooManyAttempts(wait)
    password_hash = user.password_hash if user else passwords.DUMMY_HASH
    if not await logins.gate.verify(client, password_hash, password) or user is None:
        await logins.throttle.failed(account)
        raise BadCredentials()
    await logins.throttle.succeeded(account)
    return user


def login_keys(login: str) -> tuple[str, str]:
    """(username key, email key) of what someone typed as their username or email."""
    return usernames.key(login) or login.casefold(), login.casefold()


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """Tokens carry 256 random bits, so one SHA-256 is as good as a slow hash, and fast."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


# ---------------------------------------------------------------- credentials


class BearerCredentials(NamedTuple):
    token_hash: str


class BasicCredentials(NamedTuple):
    username: str
    password: str

    def __repr__(self) -> str:  # never the password, in a log line or a traceback
        return f"BasicCredentials(username={self.username!r}, password='***')"


Credentials = BearerCredentials | BasicCredentials


def parse_authorization(header: str | None) -> Credentials:
    """Read an ``Authorization`` header; raise NotAuthenticated when it is missing or broken."""
    if not header:
        raise NotAuthenticated("Send 'Authorization: Bearer <token>' or Basic credentials")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return BearerCredentials(token_hash(value))
    if scheme.lower() == "basic" and value:
        return _parse_basic(value)
    raise NotAuthenticated("Unsupported Authorization scheme: use Bearer or Basic")


def _parse_basic(value: str) -> BasicCredentials:
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise NotAuthenticated("Malformed Basic credentials") from None
    username, sep, password = decoded.partition(":")
    # No account has a NUL in its name or password, and PostgreSQL cannot even compare one.
    if not sep or "\x00" in decoded:
        raise NotAuthenticated("Malformed Basic credentials")
    return BasicCredentials(username, password)


# ---------------------------------------------------------------- token cache


class TokenCache:
    """token hash -> user id, so a Bearer request usually costs no database round trip.

    Entries expire after ``ttl`` seconds; revocation and account deletion evict at once on
    this process (and, with several nodes, through the control channel's revoke events).
    An eviction also leaves a tombstone for one ``ttl``: a look-up that read the database
    just before the revocation committed cannot put the token back afterwards.
    """

    def __init__(self, ttl: float, max_entries: int = 100_000) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._revoked_tokens: dict[str, float] = {}
        self._revoked_users: dict[int, float] = {}

    def get(self, key: str) -> int | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] < time.monotonic():
            del self._entries[key]
            return None
        return entry[0]

    def put(self, key: str, user_id: int) -> None:
        now = time.monotonic()
        if self._revoked_tokens.get(key, 0) > now or self._revoked_users.get(user_id, 0) > now:
            return
        self._entries[key] = (user_id, now + self._ttl)
        self._entries.move_to_end(key)
        if len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def evict_token(self, key: str) -> None:
        self._entries.pop(key, None)
        self._revoked_tokens[key] = self._tombstone_until()

    def evict_user(self, user_id: int) -> None:
        # Rare (account deletion), so a scan is simpler than a second index.
        for key in [k for k, (uid, _) in self._entries.items() if uid == user_id]:
            del self._entries[key]
        self._revoked_users[user_id] = self._tombstone_until()

    def _tombstone_until(self) -> float:
        now = time.monotonic()
        for tombstones in (self._revoked_tokens, self._revoked_users):
            if len(tombstones) > 1000:  # revocations are rare: prune only when many piled up
                for key in [k for k, until in tombstones.items() if until <= now]:
                    del tombstones[key]  # type: ignore[arg-type]
        return now + self._ttl
