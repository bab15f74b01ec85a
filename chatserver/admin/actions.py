"""The command line's writes: like ``chatserver/actions.py``, each one checks, writes through
``store``, commits, and only then tells the running servers.

A revocation (deactivating, deleting, revoking tokens, a new password) reaches the servers
two ways: the same ``revoke`` control event the API publishes, sent to Redis when
``CHAT_REDIS_URL`` is set, and a row in ``revocations`` that every node polls
(``chatserver/revocations.py``), so a lone SQLite server without Redis hears of it too.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from chatserver import actions, auth, store
from chatserver.db import Conn, Database, now_us
from chatserver.errors import InvalidInput, NotFound
from chatserver.events import CONTROL_CHANNEL, RevokeEvent
from chatserver.schemas import NewUser, check_new_user, password_problem
from chatserver.store import admin as store_admin
from chatserver.store.admin import AccountRow, InviteRow

log = logging.getLogger("chatserver")
INVITE_BYTES = 16  # 128 random bits: one SHA-256 is enough to store it
DAY_US = 86_400_000_000


@dataclass(slots=True)
class Admin:
    """What the command line's actions use: the database, and Redis when configured."""

    db: Database
    redis: Redis | None = None

    async def announce_revoked(self, user_id: int) -> None:
        """Publish the API's own revoke event to every node listening on Redis. The change
        is committed already: with Redis unreachable, the nodes read it from the
        revocations table instead (within a second), so this only warns."""
        if self.redis is None:
            return
        try:
            await self.redis.publish(CONTROL_CHANNEL, msgspec.json.encode(RevokeEvent(user_id)))
        except (RedisError, OSError) as exc:
            log.warning(
                "could not publish to Redis (%s): nodes read the revocation from the "
                "database instead",
                exc,
            )


async def account(a: Admin, username: str) -> AccountRow:
    async with a.db.read() as conn:
        return await _account(conn, username)


async def _account(conn: Conn, username: str) -> AccountRow:
    found = await store_admin.find_account(conn, username.casefold())
    if found is None:
        raise NotFound(f"there is no user named {username!r}")
    return found


async def create_account(a: Admin, username: str, email: str, password: str) -> AccountRow:
    """A new account, whatever the server's registration mode."""
    name, address = check_new_user(NewUser(username, email, password))
    user = await actions.add_user(a.db, name, address, await auth.hash_password(password))
    return await account(a, user.username)


async def set_password(a: Admin, username: str, password: str) -> AccountRow:
    """A new password; the account's tokens are revoked (every device logs in again)."""
    if problem := password_problem(password):
        raise InvalidInput({"password": [problem]}, f"password: {problem}")
    password_hash = await auth.hash_password(password)
    async with a.db.transaction() as conn:
        user = await _account(conn, username)
        await store_admin.set_password_hash(conn, user.id, password_hash)
        await _revoke_all(conn, user.id)
    await a.announce_revoked(user.id)
    return user


async def deactivate(a: Admin, username: str) -> AccountRow:
    """Deactivate: no login, no token, shown to others as deleted; messages stay."""
    async with a.db.transaction() as conn:
        user = await _account(conn, username)
        await store_admin.set_deactivated(conn, user.id, user.deactivated_at or now_us())
        await _revoke_all(conn, user.id)
    await a.announce_revoked(user.id)
    return await account(a, username)


async def reactivate(a: Admin, username: str) -> AccountRow:
    async with a.db.transaction() as conn:
        user = await _account(conn, username)
        await store_admin.set_deactivated(conn, user.id, None)
    return await account(a, username)


async def delete_account(a: Admin, username: str) -> AccountRow:
    """Delete as the account's owner would (``DELETE /api/v1/users/``)."""
    async with a.db.transaction() as conn:
        user = await _account(conn, username)
        await store.delete_user(conn, user.id)
        await store_admin.insert_revocation(conn, user.id, None, now_us())
    await a.announce_revoked(user.id)
    return user


async def revoke_tokens(a: Admin, username: str) -> int:
    """Revoke every token of an account; how many there were."""
    async with a.db.transaction() as conn:
        user = await _account(conn, username)
        count = await _revoke_all(conn, user.id)
    await a.announce_revoked(user.id)
    return count


async def _revoke_all(conn: Conn, user_id: int) -> int:
    count = await store_admin.delete_tokens_of(conn, user_id)
    await store_admin.insert_revocation(conn, user_id, None, now_us())
    return count


async def create_invite(
    a: Admin, uses: int, expires_in_days: float | None
) -> tuple[str, InviteRow]:
    """A new invite code (shown only now: the database keeps its hash) and its row."""
    if uses < 1:
        raise InvalidInput({"uses": ["must be at least 1"]}, "--uses must be at least 1")
    if expires_in_days is not None and not expires_in_days > 0:
        raise InvalidInput({"expires_in": ["must be above 0"]}, "--expires-in must be above 0")
    code = secrets.token_urlsafe(INVITE_BYTES)
    now = now_us()
    expires = None if expires_in_days is None else now + int(expires_in_days * DAY_US)
    async with a.db.transaction() as conn:
        row = await store_admin.insert_invite(conn, auth.token_hash(code), uses, expires, now)
    return code, row


async def revoke_invite(a: Admin, code: str | None, invite_id: int | None) -> None:
    code_hash = None if code is None else auth.token_hash(code)
    async with a.db.transaction() as conn:
        if not await store_admin.delete_invite(conn, code_hash, invite_id):
            raise NotFound("there is no such invite")


async def forget_old_revocations(db: Database, keep_seconds: float) -> int:
    """Revocations older than every node's poll can need (servers purge them hourly)."""
    async with db.transaction() as conn:
        return await store_admin.delete_revocations_before(
            conn, now_us() - int(keep_seconds * 1_000_000)
        )
