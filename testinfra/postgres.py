"""Throwaway PostgreSQL clusters: initdb + pg_ctl in a temporary directory.

Trust auth on the cluster's unix socket (for the admin connection), password auth
(scram-sha-256) over TCP on 127.0.0.1, so code that loses the password somewhere (e.g. by
passing ``str(sqlalchemy_url)``, which masks it as ``***``) fails instead of passing.

initdb and pg_ctl refuse to run as root: as root every PostgreSQL command runs as the
``postgres`` OS user (``runuser``) in a directory that user owns.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from testinfra import procs
from testinfra.procs import HOST, free_port

PG_ROOT = Path("/usr/lib/postgresql")
PG_BINDIR_ENV = "CHAT_PG_BINDIR"
OS_USER = "postgres"  # the unprivileged account the Debian package creates
USER = "postgres"
PASSWORD = "postgres"
# pytest-postgresql's choice: UTF-8 with byte-order collation, on every Linux.
LOCALE = "C.UTF-8"


class PostgresNotFound(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def _version_key(version_dir: Path) -> tuple[int, ...]:
    """Sort "9.6" < "15" < "16" numerically (as strings "9.6" would win); junk sorts first."""
    try:
        return tuple(int(part) for part in version_dir.name.split("."))
    except ValueError:
        return ()


def find_bindir() -> Path:
    """$CHAT_PG_BINDIR, else the newest /usr/lib/postgresql/*/bin, else pg_ctl on PATH.

    Debian/Ubuntu keep the server binaries off PATH, hence the versioned-directory search.
    """
    if override := os.environ.get(PG_BINDIR_ENV):
        if (Path(override) / "pg_ctl").is_file():
            return Path(override)
        raise PostgresNotFound(
            f"{PG_BINDIR_ENV}={override} contains no pg_ctl; point it at PostgreSQL's bin dir"
        )
    candidates = sorted(PG_ROOT.glob("*/bin/pg_ctl"), key=lambda p: _version_key(p.parent.parent))
    if candidates:
        return candidates[-1].parent
    if on_path := shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    raise PostgresNotFound(
        f"PostgreSQL binaries not found under {PG_ROOT}; install postgresql "
        f"or set {PG_BINDIR_ENV} to a directory containing pg_ctl"
    )


def _as_postgres_user() -> list[str]:
    """The prefix that runs a command as the postgres OS user when we are root."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError("running as root, but runuser (util-linux) is not on PATH")
    return [runuser, "-u", OS_USER, "--"]


class PostgresServer(procs.Service):
    """A running throwaway cluster plus an admin connection for creating databases.

    ``settings`` become ``-c name=value`` server options (tests turn durability off, the
    benchmark raises max_connections); ``parent`` is where the temporary directory goes.
    """

    def __init__(
        self, settings: Mapping[str, str] | None = None, parent: str | Path | None = None
    ) -> None:
        self.bindir = find_bindir()
        self.settings = dict(settings or {})
        self.parent = parent
        self.host = HOST
        self.port = 0
        self.user = USER
        self.password = PASSWORD
        self.version = "unknown"
        self.dir: Path | None = None
        self._admin: psycopg.Connection[TupleRow] | None = None
        self._names = itertools.count(1)

    @property
    def data(self) -> Path:
        assert self.dir is not None, "cluster not started"
        return self.dir / "data"

    @property
    def admin(self) -> psycopg.Connection[TupleRow]:
        """An autocommit superuser connection over the unix socket."""
        assert self._admin is not None, "cluster not started"
        return self._admin

    def url(self, dbname: str) -> str:
        """Plain libpq URL: asyncpg takes it as is, SQLAlchemy after adding +driver."""
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"

    def start(self) -> None:
        """initdb, start the server (pg_ctl -w) and open the admin connection."""
        self.dir = Path(tempfile.mkdtemp(prefix="chat-pg-", dir=self.parent))
        try:
            if os.geteuid() == 0:
                shutil.chown(self.dir, OS_USER, OS_USER)
            # "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" -> "15.18"
            words = self._run([str(self.bindir / "postgres"), "--version"]).split()
            self.version = words[2] if len(words) > 2 else "unknown"
            self._initdb()
            self.port = free_port()
            pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path)]
            self._run([*pg_ctl, "-o", self._server_options(), "-w", "start"])
            self._admin = psycopg.connect(
                host=str(self.dir), port=self.port, user=USER, dbname="postgres", autocommit=True
            )
        except BaseException:
            self.stop()
            raise

    @property
    def log_path(self) -> Path:
        assert self.dir is not None, "cluster not started"
        return self.dir / "postgresql.log"

    def _initdb(self) -> None:
        assert self.dir is not None
        # Written by us, read by initdb (maybe as the postgres user), deleted right after.
        pwfile = self.dir / "pwfile"
        pwfile.write_text(PASSWORD)
        pwfile.chmod(0o644)
        try:
            auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
            locale = ["--encoding=UTF8", f"--locale={LOCALE}", "--no-sync"]
            self._run(
                [str(self.bindir / "initdb"), "-D", str(self.data), "-U", USER, *auth, *locale]
            )
        finally:
            pwfile.unlink()

    def _server_options(self) -> str:
        """postgres's command line, which pg_ctl passes through a shell."""
        assert self.dir is not None
        options = [f"-p {self.port}", f"-k {shlex.quote(str(self.dir))}"]
        settings = {"listen_addresses": HOST, **self.settings}
        options += [f"-c {shlex.quote(f'{name}={value}')}" for name, value in settings.items()]
        return " ".join(options)

    def _run(self, argv: Sequence[str]) -> str:
        env = {**os.environ, "LC_ALL": LOCALE, "LANG": LOCALE}
        env.pop("PGDATA", None)
        out = subprocess.run(
            [*_as_postgres_user(), *argv],
            capture_output=True,
            text=True,
            check=False,
            cwd=self.dir,
            env=env,
        )
        if out.returncode != 0:
            log = ""
            with contextlib.suppress(OSError, AssertionError):
                log = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(
                f"{shlex.join(argv)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}\n{log}"
            )
        return out.stdout

    def crash(self) -> None:
        """Stop the server as a crash would (pg_ctl stop -m immediate: no checkpoint, the
        next start replays the WAL)."""
        if self._admin is not None:
            with contextlib.suppress(psycopg.Error):
                self._admin.close()
            self._admin = None
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"])

    def restart(self) -> None:
        """Start the stopped server again on the same port and reopen the admin connection."""
        assert self.dir is not None, "cluster not started"
        pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path)]
        self._run([*pg_ctl, "-o", self._server_options(), "-w", "start"])
        self._admin = psycopg.connect(
            host=str(self.dir), port=self.port, user=USER, dbname="postgres", autocommit=True
        )

    def create_database(self, name: str | None = None) -> str:
        """Create a new empty database (``test_N`` unless named) and return its name."""
        name = name or f"test_{next(self._names)}"
        # template0 is pristine even if some test (wrongly) modified template1.
        self.admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
        )
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database even if the code under test leaked open connections to it."""
        self.admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def stop(self) -> None:
        """Stop the server (pg_ctl stop -m fast) and delete its directory."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self.dir is None:
            return
        try:
            if (self.data / "postmaster.pid").exists():
                self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"])
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
