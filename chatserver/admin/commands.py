"""``chatserver users|tokens|invites|stats``: the operator's commands, on the database named
by ``CHAT_DATABASE_URL`` (or ``--database-url``), while the servers run.

Exit codes: 0 done; 1 refused (no such user or invite, a name taken, bad input, a
non-empty database to restore into); 2 bad usage or settings, or the database, Redis or a
tool it needs is unreachable or missing. Errors are one line on stderr; ``--json`` prints
results as JSON on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

from chatserver.admin import actions
from chatserver.admin.actions import Admin
from chatserver.config import ConfigError, Settings
from chatserver.db import open_database
from chatserver.errors import ChatError
from chatserver.schemas import to_datetime
from chatserver.store import admin as store_admin
from chatserver.store.admin import AccountRow, InviteRow

log = logging.getLogger("chatserver")
EXIT_REFUSED = 1
Command = Callable[[Admin, argparse.Namespace], Awaitable[Any]]


def add_commands(commands: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    """The sub-commands, each with the common flags (``add_common``) and ``--json``."""
    users = _group(commands, "users", "list, create, deactivate … accounts")
    for name, help_ in (
        ("list", "every account"),
        ("show", "one account"),
        ("set-password", "a new password (revokes the account's tokens)"),
        ("deactivate", "no login, no token; shown to others as deleted; messages stay"),
        ("reactivate", "undo deactivate"),
        ("delete", "delete the account as its owner would"),
    ):
        sub = _command(users, name, help_, add_common)
        if name != "list":
            sub.add_argument("name", help="username")
        if name == "set-password":
            _password_flag(sub)
    create = _command(users, "create", "a new account (whatever the registration mode)", add_common)
    create.add_argument("name", help="username")
    create.add_argument("--email", required=True)
    _password_flag(create)
    tokens = _group(commands, "tokens", "revoke tokens")
    revoke = _command(tokens, "revoke", "revoke every token of a user", add_common)
    revoke.add_argument("--user", required=True, help="username")
    _add_invite_commands(commands, add_common)
    _command(commands, "stats", "users, messages, database size", add_common)


def _add_invite_commands(
    commands: Any, add_common: Callable[[argparse.ArgumentParser], None]
) -> None:
    invites = _group(commands, "invites", "sign-up codes for CHAT_REGISTRATION=invite")
    create = _command(invites, "create", "a new code (shown once)", add_common)
    create.add_argument("--uses", type=int, default=1, help="sign-ups it allows (default 1)")
    create.add_argument("--expires-in", type=float, metavar="DAYS", help="default: never")
    _command(invites, "list", "every code's uses and expiry (not the codes)", add_common)
    revoke = _command(invites, "revoke", "delete a code", add_common)
    target = revoke.add_mutually_exclusive_group(required=True)
    target.add_argument("code", nargs="?", help="the code")
    target.add_argument("--id", type=int, dest="invite_id", help="or its id (invites list)")


def _group(commands: Any, name: str, help_: str) -> Any:
    parser = commands.add_parser(name, help=help_, description=__doc__.split("\n\n")[1])
    return parser.add_subparsers(dest="action", required=True)


def _command(
    group: Any, name: str, help_: str, add_common: Callable[[argparse.ArgumentParser], None]
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = group.add_parser(name, help=help_, description=help_)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_common(parser)
    return parser


def _password_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin (else: prompt)",
    )


ADMIN_COMMANDS = ("users", "tokens", "invites", "stats")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run one admin command; its exit code."""
    command = _COMMANDS[(args.command, getattr(args, "action", None))]
    try:
        result = asyncio.run(_run(settings, command, args))
    except ChatError as exc:
        print(f"chatserver: {exc.detail}", file=sys.stderr)
        return EXIT_REFUSED
    except (ConfigError, KeyboardInterrupt):
        raise
    except Exception as exc:  # the database or Redis failed under us: one line, not a trace
        log.debug("admin command failed", exc_info=exc)
        raise ConfigError(f"{args.command} failed: {first_line(exc)}") from exc
    _print(result, args.json)
    return 0


async def _run(settings: Settings, command: Command, args: argparse.Namespace) -> Any:
    async with admin_context(settings) as admin:
        return await command(admin, args)


@contextlib.asynccontextmanager
async def admin_context(settings: Settings) -> AsyncIterator[Admin]:
    db = await open_database(settings.database_url)
    redis = None
    if settings.redis_url is not None:
        from redis.asyncio import Redis

        redis = Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=5)
    try:
        yield Admin(db, redis)
    finally:
        if redis is not None:
            await redis.aclose()
        await db.close()


# ---------------------------------------------------------------- the commands


async def _users_list(a: Admin, _: argparse.Namespace) -> list[dict[str, Any]]:
    async with a.db.read() as conn:
        return [_account_json(row) for row in await store_admin.list_accounts(conn)]


async def _users_show(a: Admin, args: argparse.Namespace) -> dict[str, Any]:
    return _account_json(await actions.account(a, args.name))


async def _users_create(a: Admin, args: argparse.Namespace) -> dict[str, Any]:
    password = read_password(args.password_stdin)
    return _account_json(await actions.create_account(a, args.name, args.email, password))


async def _users_set_password(a: Admin, args: argparse.Namespace) -> dict[str, Any]:
    password = read_password(args.password_stdin)
    return _account_json(await actions.set_password(a, args.name, password))


async def _users_deactivate(a: Admin, args: argparse.Namespace) -> dict[str, Any]:
    return _account_json(await actions.deactivate(a, args.name))


async def _users_reactivate(a: Admin, args: argparse.Namespace) -> dict[str, Any]:
    return _account_json(await actions.reactivate(a, args.name))


async def _users_delete(a: Admin, args: argparse.Namespace) -> dict[str, Any]:
    user = await actions.delete_account(a, args.name)
    return {"deleted": user.username, "id": user.id}


async def _tokens_revoke(a: Admin, args: argparse.Namespace) -> dict[str, Any]:
    return {"user": args.user, "revoked": await actions.revoke_tokens(a, args.user)}


async def _invites_create(a: Admin, args: argparse.Namespace) -> dict[str, Any]:
    code, row = await actions.create_invite(a, args.uses, args.expires_in)
    return {"code": code, **_invite_json(row)}


async def _invites_list(a: Admin, _: argparse.Namespace) -> list[dict[str, Any]]:
    async with a.db.read() as conn:
        return [_invite_json(row) for row in await store_admin.list_invites(conn)]


async def _invites_revoke(a: Admin, args: argparse.Namespace) -> dict[str, Any]:
    await actions.revoke_invite(a, args.code, args.invite_id)
    return {"revoked": args.code or args.invite_id}


async def _stats(a: Admin, _: argparse.Namespace) -> dict[str, Any]:
    async with a.db.read() as conn:
        stats = await store_admin.stats(conn, a.db.dialect)
    return stats._asdict()


_COMMANDS: dict[tuple[str, str | None], Command] = {
    ("users", "list"): _users_list,
    ("users", "show"): _users_show,
    ("users", "create"): _users_create,
    ("users", "set-password"): _users_set_password,
    ("users", "deactivate"): _users_deactivate,
    ("users", "reactivate"): _users_reactivate,
    ("users", "delete"): _users_delete,
    ("tokens", "revoke"): _tokens_revoke,
    ("invites", "create"): _invites_create,
    ("invites", "list"): _invites_list,
    ("invites", "revoke"): _invites_revoke,
    ("stats", None): _stats,
}


# ---------------------------------------------------------------- input and output


def read_password(from_stdin: bool) -> str:
    """The first line of stdin, or a prompt (twice) on a terminal."""
    if from_stdin:
        line = sys.stdin.readline()
        return line.removesuffix("\n").removesuffix("\r")
    if not sys.stdin.isatty():
        raise ConfigError("no terminal to prompt for the password: use --password-stdin")
    password = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != password:
        raise ConfigError("the two passwords differ")
    return password


def _time(micros: int | None) -> str | None:
    when: datetime | None = to_datetime(micros)
    return None if when is None else when.isoformat().replace("+00:00", "Z")


def _account_json(row: AccountRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "username": row.username,
        "email": row.email,
        "active": row.deactivated_at is None,
        "date_joined": _time(row.date_joined),
        "last_seen_at": _time(row.last_seen_at),
        "deactivated_at": _time(row.deactivated_at),
        "sent": row.sent_count,
        "received": row.received_count,
    }


def _invite_json(row: InviteRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "uses": row.uses,
        "used": row.used,
        "expires_at": _time(row.expires_at),
        "created_at": _time(row.created_at),
    }


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _print(result: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
    elif isinstance(result, list):
        for item in result:
            print("  ".join(f"{k}={_text(v)}" for k, v in item.items()))
    else:
        for key, value in result.items():
            print(f"{key}: {_text(value)}")


def _text(value: Any) -> str:
    return "-" if value is None else str(value)
