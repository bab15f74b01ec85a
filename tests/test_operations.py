"""Operations: /healthz, the OpenAPI document and /docs, configuration, the CLI."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient, TestClient
from psycopg import sql

from chatserver.app import create_app
from chatserver.config import ConfigError, Settings, database_scheme, redact, settings_from_env
from chatserver.migrations import HEAD, alembic_config, upgrade
from testinfra.postgres import PostgresServer
from tests.helpers import concurrent_app, query_database

Client = AsyncTestClient  # type: ignore[type-arg]

CLI_TIMEOUT = 60


# ---------------------------------------------------------------- /healthz


async def test_healthz_is_200_when_the_database_answers(client: Client) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ok"


async def test_healthz_needs_no_authentication(client: Client) -> None:
    r = await client.get("/healthz", headers={"Authorization": "Bearer junk"})
    assert r.status_code == 200, r.text


class BrokenDatabase:
    """Stands in for a database whose every statement fails."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.dialect = inner.dialect

    async def ping(self) -> None:
        raise OSError("connection refused")

    async def close(self) -> None:
        await self.inner.close()


async def test_healthz_is_503_when_the_database_fails(settings: Settings) -> None:
    async with concurrent_app(settings) as (app, client):
        services = app.state.services
        real = services.db
        services.db = BrokenDatabase(real)
        try:
            r = await client.get("/healthz")
        finally:
            services.db = real
        assert r.status_code == 503, r.text
        assert (await client.get("/healthz")).status_code == 200


def _block_connections(server: PostgresServer, dbname: str, blocked: bool) -> None:
    allow = sql.SQL("false" if blocked else "true")
    server.admin.execute(
        sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(sql.Identifier(dbname), allow)
    )
    if blocked:
        server.admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (dbname,),
        )


async def test_healthz_follows_a_real_postgres_outage(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    settings = Settings(database_url=postgres_url)
    dbname = postgres_url.rsplit("/", 1)[1]
    async with concurrent_app(settings) as (_, client):
        assert (await client.get("/healthz")).status_code == 200
        await asyncio.to_thread(_block_connections, postgres_server, dbname, True)
        try:
            down = await client.get("/healthz")
        finally:
            await asyncio.to_thread(_block_connections, postgres_server, dbname, False)
        assert down.status_code == 503, down.text
        assert (await client.get("/healthz")).status_code == 200


# ---------------------------------------------------------------- OpenAPI and /docs


@pytest.fixture
async def openapi(client: Client) -> dict[str, Any]:
    r = await client.get("/openapi.json")
    assert r.status_code == 200, r.text
    assert "json" in r.headers["content-type"]
    document: dict[str, Any] = r.json()
    return document


def operation(document: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    paths = document["paths"]
    found = paths.get(path) or paths.get(path.rstrip("/")) or paths.get(path.rstrip("/") + "/")
    assert found, f"{path} is missing from {sorted(paths)}"
    assert method in found, f"{method.upper()} {path} is missing"
    op: dict[str, Any] = found[method]
    return op


ROUTES = {
    ("/api/v1/users/", "post"): {"201", "400", "409", "413", "415"},
    ("/api/v1/users/", "get"): {"200", "400", "401", "404"},
    ("/api/v1/users/", "delete"): {"204", "401"},
    ("/api/v1/auth/token/", "post"): {"200", "400", "401", "413", "415"},
    ("/api/v1/auth/token/", "delete"): {"204", "401"},
    ("/api/v1/chats/", "post"): {"201", "400", "401", "404", "413", "415", "422"},
    ("/api/v1/chats/", "get"): {"200", "400", "401"},
    ("/healthz", "get"): {"200", "503"},
}


def test_openapi_is_version_3_1(openapi: dict[str, Any]) -> None:
    assert openapi["openapi"].startswith("3.1")


@pytest.mark.parametrize(("path", "method"), list(ROUTES))
def test_openapi_documents_every_route_and_response(
    openapi: dict[str, Any], path: str, method: str
) -> None:
    op = operation(openapi, path, method)
    assert set(op["responses"]) >= ROUTES[(path, method)]
    assert op.get("summary") or op.get("description")


@pytest.mark.parametrize(
    ("path", "method", "parameters"),
    [
        ("/api/v1/users/", "get", {"user_id", "username"}),
        ("/api/v1/chats/", "get", {"page", "page_size", "with", "unread", "before_id", "after_id"}),
        ("/api/v1/chats/", "post", {"Idempotency-Key"}),
    ],
)
def test_openapi_documents_the_parameters(
    openapi: dict[str, Any], path: str, method: str, parameters: set[str]
) -> None:
    names = {p["name"] for p in operation(openapi, path, method).get("parameters", [])}
    assert names >= parameters


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/api/v1/users/", ["username", "email", "password"]),
        ("/api/v1/auth/token/", ["username", "password"]),
        ("/api/v1/chats/", ["user_id", "message"]),
    ],
)
def test_openapi_documents_the_request_bodies(
    openapi: dict[str, Any], path: str, fields: list[str]
) -> None:
    body = operation(openapi, path, "post")["requestBody"]
    assert body["required"] is True
    content = body["content"]["application/json"]
    assert content["schema"]["required"] == fields
    assert set(content["schema"]["properties"]) == set(fields)
    assert content["examples"], "an example body"


@pytest.mark.parametrize(
    ("path", "method", "status", "schema"),
    [
        ("/api/v1/chats/", "post", "201", "MessageOut"),
        ("/api/v1/chats/", "get", "200", "MessagePage"),
        ("/api/v1/users/", "get", "200", "UserOut"),
    ],
)
def test_openapi_documents_the_success_bodies(
    openapi: dict[str, Any], path: str, method: str, status: str, schema: str
) -> None:
    content = operation(openapi, path, method)["responses"][status]["content"]
    assert content["application/json"]["schema"]["$ref"] == f"#/components/schemas/{schema}"


def test_openapi_errors_are_problem_json(openapi: dict[str, Any]) -> None:
    for (path, method), statuses in ROUTES.items():
        for status in statuses - {"200", "201", "204", "503"}:
            response = operation(openapi, path, method)["responses"][status]
            assert "application/problem+json" in response["content"], (path, method, status)


def test_openapi_carries_the_seed_examples_and_both_auth_schemes(openapi: dict[str, Any]) -> None:
    text = str(openapi)
    assert "hai 12" in text
    assert "current_page" in text
    schemes = {s["scheme"] for s in openapi["components"]["securitySchemes"].values()}
    assert {"bearer", "basic"} <= schemes


async def test_docs_serve_interactive_html(client: Client) -> None:
    r = await client.get("/docs", follow_redirects=False)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "openapi" in r.text.lower() or "swagger" in r.text.lower()


# ---------------------------------------------------------------- configuration


def test_defaults() -> None:
    settings = settings_from_env({})
    assert settings.database_url == "sqlite:///chat.db"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)


def test_settings_come_from_chat_variables() -> None:
    settings = settings_from_env(
        {
            "CHAT_DATABASE_URL": "postgresql://u:p@db:5432/chat",
            "CHAT_HOST": "10.1.2.3",
            "CHAT_PORT": "9000",
            "CHAT_LOG_LEVEL": "DEBUG",
        }
    )
    assert settings.database_url == "postgresql://u:p@db:5432/chat"
    assert (settings.host, settings.port, settings.log_level.lower()) == ("10.1.2.3", 9000, "debug")


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("sqlite:///chat.db", "sqlite"),
        ("sqlite:////var/lib/chat/chat.db", "sqlite"),
        ("postgresql://user:password@host:5432/dbname", "postgresql"),
        ("postgresql+asyncpg://user:password@host:5432/dbname", "postgresql"),
        ("postgres://user:password@host/dbname", "postgresql"),
    ],
)
def test_accepted_database_urls(url: str, scheme: str) -> None:
    settings = settings_from_env({"CHAT_DATABASE_URL": url})
    assert database_scheme(settings.database_url) == scheme


@pytest.mark.parametrize(
    ("env", "mentions"),
    [
        ({"CHAT_PORT": "abc"}, "CHAT_PORT"),
        ({"CHAT_PORT": "0"}, "CHAT_PORT"),
        ({"CHAT_PORT": "65536"}, "CHAT_PORT"),
        ({"CHAT_DATABASE_URL": "mysql://u:p@h/db"}, "CHAT_DATABASE_URL"),
        ({"CHAT_DATABASE_URL": "chat.db"}, "CHAT_DATABASE_URL"),
        ({"CHAT_DATABASE_URL": "sqlite:chat.db"}, "CHAT_DATABASE_URL"),
        ({"CHAT_LOG_LEVEL": "loud"}, "CHAT_LOG_LEVEL"),
        ({"CHAT_WORKERS": "0"}, "CHAT_WORKERS"),
        ({"CHAT_REDIS_URL": "http://localhost"}, "CHAT_REDIS_URL"),
    ],
)
def test_bad_settings_raise_one_line_config_errors(env: dict[str, str], mentions: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_env(env)
    message = str(caught.value)
    assert mentions in message
    assert "\n" not in message


def test_config_errors_never_show_the_database_password() -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_env({"CHAT_DATABASE_URL": "mysql://user:hunter2@host/db"})
    assert "hunter2" not in str(caught.value)
    assert redact("postgresql://user:hunter2@host/db") == "postgresql://user:***@host/db"


# ---------------------------------------------------------------- the CLI


def run_cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = CLI_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``chatserver ARGS`` with only the given CHAT_* variables set."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    return subprocess.run(
        [sys.executable, "-m", "chatserver", *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def sqlite_tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_migrate_creates_the_schema_and_exits(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    result = run_cli("migrate", env={"CHAT_DATABASE_URL": f"sqlite:///{db}"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert {"users", "tokens", "messages", "idempotency_keys"} <= sqlite_tables(db)
    assert sqlite_page_size(db) == 2048  # new databases: smaller WAL writes per commit


def test_migrate_keeps_the_page_size_of_an_existing_database(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("CREATE TABLE notes (body TEXT)")
    result = run_cli("migrate", env={"CHAT_DATABASE_URL": f"sqlite:///{db}"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "messages" in sqlite_tables(db)
    assert sqlite_page_size(db) == 4096


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_migrating_an_existing_database_numbers_its_conversations(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """0002 numbers every stored message within its conversation, in id order."""
    url = (
        f"sqlite:///{tmp_path / 'chat.db'}"
        if engine == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    upgrade(url, "0001")
    users = [
        "INSERT INTO users (id, username, username_key, email, email_key, password_hash,"
        f" date_joined) VALUES ({n}, 'u{n}', 'u{n}', 'u{n}@e.com', 'u{n}@e.com', 'x', 0)"
        for n in (1, 2, 3)
    ]
    # (sender, recipient): three between users 1 and 2, one from 3 to 1
    pairs = [(1, 2), (2, 1), (3, 1), (1, 2)]
    messages = [
        "INSERT INTO messages (id, sender_id, recipient_id, body, sent_at, recipient_seq,"
        f" peer_lo, peer_hi) VALUES ({i}, {a}, {b}, 'hi', 0, {i}, {min(a, b)}, {max(a, b)})"
        for i, (a, b) in enumerate(pairs, start=1)
    ]
    execute_all(url, users + messages)

    upgrade(url)

    numbered = query_database(url, "SELECT id, conversation_seq FROM messages ORDER BY id")
    assert [tuple(row) for row in numbered] == [(1, 1), (2, 2), (3, 1), (4, 3)]


def execute_all(database_url: str, statements: list[str]) -> None:
    """Run statements straight against a test database, in one transaction."""
    if database_url.startswith("sqlite"):
        with closing(sqlite3.connect(database_url.split(":///", 1)[1])) as conn:
            for statement in statements:
                conn.execute(statement)
            conn.commit()
        return
    with psycopg.connect(database_url) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def sqlite_page_size(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("PRAGMA page_size").fetchone()[0])


def test_migrate_twice_is_harmless(tmp_path: Path) -> None:
    env = {"CHAT_DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}"}
    assert run_cli("migrate", env=env, cwd=tmp_path).returncode == 0
    again = run_cli("migrate", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr


def test_head_is_alembics_newest_revision(tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    config = alembic_config(f"sqlite:///{tmp_path / 'chat.db'}")
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD


LOADS_ALEMBIC = (
    "import sys; from chatserver.cli import main; main(sys.argv[1:]);"
    " print('alembic' in sys.modules)"
)


def test_migrate_loads_alembic_only_when_a_migration_is_pending(tmp_path: Path) -> None:
    """An up-to-date SQLite database starts without Alembic; one revision behind, or new,
    it is upgraded as before."""
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    upgrade(url, "0001")

    def migrate() -> bool:
        argv = [sys.executable, "-c", LOADS_ALEMBIC, "migrate", "--database-url", url]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
        return result.stdout.strip() == "True"

    assert migrate() is True  # 0001 -> head
    assert query_database(url, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    assert migrate() is False  # already at head


def test_migrate_defaults_to_chat_db_in_the_working_directory(tmp_path: Path) -> None:
    result = run_cli("migrate", env={}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "messages" in sqlite_tables(tmp_path / "chat.db")


def test_migrate_flag_overrides_the_environment(tmp_path: Path) -> None:
    flag_db = tmp_path / "flag.db"
    result = run_cli(
        "migrate",
        "--database-url",
        f"sqlite:///{flag_db}",
        env={"CHAT_DATABASE_URL": f"sqlite:///{tmp_path / 'env.db'}"},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "messages" in sqlite_tables(flag_db)
    assert not (tmp_path / "env.db").exists()


def test_migrate_postgres(postgres_url: str, tmp_path: Path) -> None:
    result = run_cli("migrate", env={"CHAT_DATABASE_URL": postgres_url}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with psycopg.connect(postgres_url) as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }
    assert {"users", "tokens", "messages", "idempotency_keys"} <= tables


def test_the_app_migrated_by_the_cli_serves_requests(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    assert run_cli("migrate", env={"CHAT_DATABASE_URL": url}, cwd=tmp_path).returncode == 0
    with TestClient(create_app(Settings(database_url=url))) as client:
        body = {"username": "alice", "email": "alice@example.com", "password": "pw-123456"}
        assert client.post("/api/v1/users/", json=body).status_code == 201


BAD_SERVE_SETTINGS = {
    "port not a number": ({"CHAT_PORT": "abc"}, [], "CHAT_PORT"),
    "port out of range": ({"CHAT_PORT": "70000"}, [], "CHAT_PORT"),
    "port flag zero": ({}, ["--port", "0"], "65535"),
    "unknown database": ({"CHAT_DATABASE_URL": "mysql://u:p@h/db"}, [], "CHAT_DATABASE_URL"),
    "unwritable sqlite": (
        {"CHAT_DATABASE_URL": "sqlite:////nonexistent/dir/chat.db"},
        [],
        "sqlite:////nonexistent/dir/chat.db",
    ),
    "unreachable postgres": (
        {"CHAT_DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:1/db"},
        [],
        "127.0.0.1:1",
    ),
    "log level": ({"CHAT_LOG_LEVEL": "loud"}, [], "CHAT_LOG_LEVEL"),
    "workers zero": ({"CHAT_WORKERS": "0"}, [], "CHAT_WORKERS"),
    "workers without redis": ({"CHAT_WORKERS": "2"}, [], "CHAT_REDIS_URL"),
    "redis url": ({"CHAT_REDIS_URL": "http://localhost"}, [], "CHAT_REDIS_URL"),
}


@pytest.mark.parametrize("case", BAD_SERVE_SETTINGS)
def test_serve_with_a_bad_setting_stops_with_one_clear_line(tmp_path: Path, case: str) -> None:
    env, flags, mentions = BAD_SERVE_SETTINGS[case]
    result = run_cli("serve", *flags, env=env, cwd=tmp_path)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("chatserver: ")
    assert mentions in lines[0]
    assert "hunter2" not in result.stderr + result.stdout


def test_serve_on_a_port_in_use_fails_without_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"CHAT_DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}", "CHAT_PORT": str(port)}
        result = run_cli("serve", env=env, cwd=tmp_path)
    output = result.stderr + result.stdout
    assert result.returncode != 0, output
    assert "Traceback" not in output
    assert "in use" in output.lower()


def test_nodes_migrating_a_fresh_postgresql_at_once_both_succeed(postgres_url: str) -> None:
    """Several `chatserver serve` starting together: the migration lock makes them take turns."""
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "chatserver", "migrate", "--database-url", postgres_url],
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err.decode()
    with closing(psycopg.connect(postgres_url)) as conn:
        (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone() or ("",)
    assert version == HEAD
