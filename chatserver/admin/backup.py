"""``chatserver backup PATH`` and ``chatserver restore PATH``.

SQLite: the online backup API copies the live database in one step, a consistent
snapshot (in WAL mode the server's writers go on meanwhile), then the copy is checked
with ``PRAGMA integrity_check``. PostgreSQL: ``pg_dump --format=custom`` (one snapshot
too), and ``pg_restore``. A restore goes only into a database without accounts or
messages (a fresh one, or one a server has just migrated), then migrates it to this
version.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit

from chatserver.config import ConfigError, Settings, database_scheme, redact, sqlite_path
from chatserver.db import SqliteConn, open_database
from chatserver.store import admin as store_admin

BACKUP_COMMANDS = ("backup", "restore")
EXIT_REFUSED = 1


class Refused(Exception):
    """The backup or restore cannot be done as asked (one line for the operator)."""


def add_backup_commands(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_common: Callable[[argparse.ArgumentParser], None],
) -> None:
    backup = commands.add_parser(
        "backup", help="copy the live database to PATH", description=__doc__.split("\n\n")[1]
    )
    backup.add_argument("path", help="the file to write (must not exist)")
    add_common(backup)
    restore = commands.add_parser(
        "restore", help="restore a backup into the (empty) database", description=__doc__
    )
    restore.add_argument("path", help="a file written by chatserver backup")
    add_common(restore)


def run_backup(settings: Settings, args: argparse.Namespace) -> int:
    path = Path(args.path)
    try:
        if args.command == "backup":
            backup(settings.database_url, path)
            print(f"backed up to {path}")
        else:
            restore(settings.database_url, path)
            print(f"restored {path} into {redact(settings.database_url)}")
    except Refused as exc:
        print(f"chatserver: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    return 0


def backup(database_url: str, path: Path) -> None:
    if path.exists():
        raise Refused(f"{path} already exists: give a new file name")
    if not path.parent.is_dir():
        raise Refused(f"{path.parent} is not a folder")
    if database_scheme(database_url) == "sqlite":
        sqlite_backup(sqlite_path(database_url), path)
    else:
        _pg_tool("pg_dump", ["--format=custom", "--file", str(path)], database_url)


def restore(database_url: str, path: Path) -> None:
    from chatserver.migrations import upgrade

    if not path.is_file():
        raise Refused(f"there is no backup at {path}")
    fresh = (
        database_scheme(database_url) == "sqlite" and not Path(sqlite_path(database_url)).exists()
    )
    if not fresh and asyncio.run(_has_data(database_url)):
        raise Refused(
            f"the database at {redact(database_url)} has accounts or messages: restore only "
            "into an empty database"
        )
    if database_scheme(database_url) == "sqlite":
        sqlite_restore(path, sqlite_path(database_url))
    else:
        # --clean: drop the tables a server may already have created (they are empty).
        args = ["--clean", "--if-exists", "--no-owner", "--no-privileges", "--single-transaction"]
        _pg_tool("pg_restore", [*args, str(path)], database_url)
    upgrade(database_url)  # a backup from an older version is brought up to this one


async def _has_data(database_url: str) -> bool:
    db = await open_database(database_url)
    try:
        async with db.read() as conn:
            return await store_admin.has_data(conn, db.dialect)
    finally:
        await db.close()


# ---------------------------------------------------------------- SQLite


def sqlite_backup(source: str, path: Path) -> None:
    """Copy the live database in one step of the backup API, check the copy, then move
    it into place (a failed backup leaves no file that looks like one)."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(partial)) as dst:
            src.backup(dst)  # pages=-1: one step, one snapshot; never restarted by writers
            _check(dst, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def sqlite_restore(path: Path, target: str) -> None:
    """Copy the backup into the target through the backup API, so a server that already
    has the target open sees the restored pages (its file is not swapped under it)."""
    with closing(sqlite3.connect(path)) as src:
        _check(src, path)
        with closing(sqlite3.connect(target)) as dst:
            src.backup(dst)
            _check(dst, Path(target))


def _check(conn: sqlite3.Connection, path: Path) -> None:
    result = asyncio.run(store_admin.integrity_check(SqliteConn(conn)))
    if result != "ok":
        raise Refused(f"{path} failed SQLite's integrity check: {result}")


# ---------------------------------------------------------------- PostgreSQL


def _pg_tool(name: str, args: list[str], database_url: str) -> None:
    """Run pg_dump or pg_restore on the database; the password goes in the environment,
    not on the command line (where other users of the machine could read it)."""
    tool = find_pg_tool(name)
    url, password = _without_password(database_url)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    result = subprocess.run(  # noqa: S603 (our own argv, no shell)
        [tool, *args, "--dbname", url], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise Refused(f"{name} failed: {reason}")


def find_pg_tool(name: str) -> str:
    """The tool on PATH, else the newest one Debian's packages install."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version)
    if candidates:
        return candidates[-1]
    raise ConfigError(
        f"{name} is not installed: install the PostgreSQL client tools "
        f"(Debian: apt-get install postgresql-client) or put {name} on PATH"
    )


def _version(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


def _without_password(url: str) -> tuple[str, str | None]:
    parts = urlsplit("postgresql://" + url.split("://", 1)[1])
    if parts.password is None:
        return parts.geturl(), None
    netloc = parts.netloc.replace(f":{parts.password}@", "@", 1)
    return parts._replace(netloc=netloc).geturl(), parts.password
