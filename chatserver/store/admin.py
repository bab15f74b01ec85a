"""What the command line reads and writes: every account (deactivated ones too), invite
codes, revocations for other processes, and the numbers of ``chatserver stats``."""

from __future__ import annotations

from typing import NamedTuple

from chatserver.db import Conn

# ---------------------------------------------------------------- accounts

ACCOUNT_COLUMNS = (
    "id, username, email, date_joined, last_seen_at, deactivated_at, sent_count, received_count"
)


class AccountRow(NamedTuple):
    id: int
    username: str
    email: str
    date_joined: int
    last_seen_at: int | None
    deactivated_at: int | None
    sent_count: int
    received_count: int


async def list_accounts(conn: Conn) -> list[AccountRow]:
    rows = await conn.fetch_all(f"SELECT {ACCOUNT_COLUMNS} FROM users ORDER BY id")
    return [AccountRow(*row) for row in rows]


async def find_account(conn: Conn, username_key: str) -> AccountRow | None:
    """The account with this (casefolded) username, deactivated or not."""
    sql = f"SELECT {ACCOUNT_COLUMNS} FROM users WHERE username_key = $1"
    row = await conn.fetch_one(sql, username_key)
    return None if row is None else AccountRow(*row)


async def set_deactivated(conn: Conn, user_id: int, at: int | None) -> None:
    await conn.execute("UPDATE users SET deactivated_at = $2 WHERE id = $1", user_id, at)


async def set_password_hash(conn: Conn, user_id: int, password_hash: str) -> None:
    await conn.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, password_hash)


async def delete_tokens_of(conn: Conn, user_id: int) -> int:
    """Delete every token of a user; how many there were."""
    return await conn.execute("DELETE FROM tokens WHERE user_id = $1", user_id)


# ---------------------------------------------------------------- revocations


class Revocation(NamedTuple):
    id: int
    user_id: int
    token_hash: str | None


async def insert_revocation(conn: Conn, user_id: int, token_hash: str | None, at: int) -> None:
    await conn.execute(
        "INSERT INTO revocations (user_id, token_hash, at) VALUES ($1, $2, $3)",
        user_id,
        token_hash,
        at,
    )


async def revocations_after(conn: Conn, after_id: int, limit: int) -> list[Revocation]:
    rows = await conn.fetch_all(
        "SELECT id, user_id, token_hash FROM revocations WHERE id > $1 ORDER BY id LIMIT $2",
        after_id,
        limit,
    )
    return [Revocation(*row) for row in rows]


async def last_revocation_id(conn: Conn) -> int:
    return int(await conn.fetch_val("SELECT coalesce(max(id), 0) FROM revocations"))


async def delete_revocations_before(conn: Conn, cutoff: int) -> int:
    return await conn.execute("DELETE FROM revocations WHERE at < $1", cutoff)


# ---------------------------------------------------------------- invites

INVITE_COLUMNS = "id, uses, used, expires_at, created_at"


class InviteRow(NamedTuple):
    id: int
    uses: int
    used: int
    expires_at: int | None
    created_at: int


async def insert_invite(
    conn: Conn, code_hash: str, uses: int, expires_at: int | None, now: int
) -> InviteRow:
    row = await conn.fetch_one(
        "INSERT INTO invites (code_hash, uses, expires_at, created_at) VALUES ($1, $2, $3, $4)"
        f" RETURNING {INVITE_COLUMNS}",
        code_hash,
        uses,
        expires_at,
        now,
    )
    assert row is not None
    return InviteRow(*row)


async def list_invites(conn: Conn) -> list[InviteRow]:
    rows = await conn.fetch_all(f"SELECT {INVITE_COLUMNS} FROM invites ORDER BY id")
    return [InviteRow(*row) for row in rows]


async def delete_invite(conn: Conn, code_hash: str | None, invite_id: int | None) -> bool:
    """Delete an invite by its code's hash or by its id; whether there was one."""
    deleted = await conn.execute(
        "DELETE FROM invites WHERE code_hash = $1 OR id = $2", code_hash, invite_id
    )
    return deleted > 0


async def use_invite(conn: Conn, code_hash: str, now: int) -> bool:
    """Take one use of an invite that is neither used up nor expired; whether it was."""
    used = await conn.execute(
        "UPDATE invites SET used = used + 1 WHERE code_hash = $1 AND used < uses"
        " AND (expires_at IS NULL OR expires_at > $2)",
        code_hash,
        now,
    )
    return used == 1


# ---------------------------------------------------------------- numbers


class Stats(NamedTuple):
    users: int
    deactivated: int
    messages: int
    database_bytes: int


async def stats(conn: Conn, dialect: str) -> Stats:
    users = await conn.fetch_one("SELECT count(*), count(deactivated_at) FROM users")
    assert users is not None
    # The newest id would overcount after deletions; a count is exact, and admin-only.
    messages = await conn.fetch_val("SELECT count(*) FROM messages")
    return Stats(int(users[0]), int(users[1]), int(messages), await database_bytes(conn, dialect))


async def database_bytes(conn: Conn, dialect: str) -> int:
    if dialect == "sqlite":
        sql = "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
    else:
        sql = "SELECT pg_database_size(current_database())"
    return int(await conn.fetch_val(sql))


async def has_data(conn: Conn, dialect: str) -> bool:
    """Whether any account or message is stored (a restore refuses such a database); a
    database without the tables yet has none."""
    if dialect == "sqlite":
        exists = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'users'"
    else:
        exists = "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
        exists += " AND tablename = 'users'"
    if not await conn.fetch_val(exists):
        return False
    sql = "SELECT EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM messages)"
    return bool(await conn.fetch_val(sql))


async def integrity_check(conn: Conn) -> str:
    """SQLite's own check of a database file: 'ok', or the first problem it found."""
    return str(await conn.fetch_val("PRAGMA integrity_check"))
