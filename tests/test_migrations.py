"""Migrations: ``chatserver migrate`` on SQLite and PostgreSQL, what each revision does to
existing data, and nodes migrating one database at once."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import msgspec
import psycopg
import pytest
from litestar.testing import TestClient

from chatserver import auth
from chatserver.app import create_app
from chatserver.config import Settings
from chatserver.db import now_us
from chatserver.migrations import HEAD, alembic_config, upgrade
from tests.helpers import query_database, run_cli


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


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_migrating_an_existing_database_indexes_its_messages_for_search(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """0005 indexes the stored messages and notes which message each stored
    Idempotency-Key response holds; search then finds them through the API."""
    url = (
        f"sqlite:///{tmp_path / 'chat.db'}"
        if engine == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    upgrade(url, "0003")
    users = [
        "INSERT INTO users (id, username, username_key, email, email_key, password_hash,"
        f" date_joined) VALUES ({n}, 'u{n}', 'u{n}', 'u{n}@e.com', 'u{n}@e.com', 'x', 0)"
        for n in (1, 2)
    ]
    messages = [_message_at_0003(i, body) for i, body in ((1, "Old Kettle"), (2, "new kettles"))]
    # A response stored before 0005, without edited_at, deleted_at and reply_to.
    stored = (
        '{"id":2,"sent_by":1,"received_by":2,"message":"new kettles",'
        '"sent_at":"1970-01-01T00:00:00Z","received_at":null}'
    )
    request_hash = hashlib.sha256(msgspec.json.encode([2, "new kettles"])).hexdigest()
    key = (
        "INSERT INTO idempotency_keys (sender_id, key, request_hash, status, response,"
        # created now: the app's start forgets keys older than their time to live
        f" created_at) VALUES (1, 'k', '{request_hash}', 201, '{stored}', {now_us()})"
    )
    execute_all(url, [*users, *messages, key])

    upgrade(url)

    assert query_database(url, "SELECT message_id FROM idempotency_keys") == [(2,)]
    app = create_app(Settings(database_url=url))
    with TestClient(app) as client:
        token = _token_for(client, url, user_id=2)
        r = client.get("/api/v1/chats/?q=kettle", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        assert [m["id"] for m in r.json()["messages"]] == [2, 1]
        r = client.get("/api/v1/chats/?q=old", headers={"Authorization": f"Bearer {token}"})
        assert [m["id"] for m in r.json()["messages"]] == [1]
        # The response stored before is answered, with the fields it did not have.
        sender = {"Authorization": f"Bearer {_token_for(client, url, user_id=1)}"}
        body = {"user_id": 2, "message": "new kettles"}
        r = client.post("/api/v1/chats/", json=body, headers={**sender, "Idempotency-Key": "k"})
        assert r.status_code == 201, r.text
        assert r.json() == {
            **msgspec.json.decode(stored),
            "edited_at": None,
            "deleted_at": None,
            "reply_to": None,
        }


def _token_for(client: TestClient, database_url: str, user_id: int) -> str:  # type: ignore[type-arg]
    """A Bearer token for a user inserted without a password, written straight to the
    database (the token table stores its hash)."""
    token = f"migration-test-token-{user_id}"
    execute_all(
        database_url,
        [
            "INSERT INTO tokens (user_id, token_hash, created_at)"
            f" VALUES ({user_id}, '{auth.token_hash(token)}', {now_us()})"
        ],
    )
    return token


def test_0004_moves_message_events_into_their_rows_and_marks_what_was_deleted(
    database_url: str,
) -> None:
    """Message events leave ``events`` (their rows carry the positions); what retention
    had deleted (everything before a user's oldest event left) becomes the user's mark at
    position 0. Down again, the message events after each mark come back."""
    from alembic import command

    upgrade(database_url, "0003")
    users = [
        "INSERT INTO users (id, username, username_key, email, email_key, password_hash,"
        f" date_joined, event_pos) VALUES ({n}, 'u{n}', 'u{n}', 'u{n}@e.com', 'u{n}@e.com',"
        f" 'x', 0, {pos})"
        for n, pos in ((1, 4), (2, 5), (3, 0))
    ]
    # Both from user 2 to user 1: user 1's positions 2 and 3, user 2's 1 and 2.
    messages = [
        "INSERT INTO messages (id, sender_id, recipient_id, body, sent_at, recipient_seq,"
        " peer_lo, peer_hi, conversation_seq, pair_seq, sender_pos, recipient_pos)"
        f" VALUES ({n}, 2, 1, 'hi', 0, {n}, 1, 2, {n}, {n}, {n}, {n + 1})"
        for n in (1, 2)
    ]
    # User 1's position 1 was deleted as too old, user 2's every stored event.
    events = [
        "INSERT INTO events (user_id, pos, kind, message_id, at) VALUES"
        " (1, 2, 'message', 1, 0), (1, 3, 'message', 2, 0)",
        "INSERT INTO events (user_id, pos, kind, by_id, of_id, up_to_id, at)"
        " VALUES (1, 4, 'read', 1, 2, 2, 0)",
    ]
    execute_all(database_url, users + messages + events)
    select = "SELECT user_id, pos, kind, up_to_id FROM events ORDER BY user_id, pos"

    upgrade(database_url)
    assert [tuple(r) for r in query_database(database_url, select)] == [
        (1, 0, "gone", 1),
        (1, 4, "read", 2),
        (2, 0, "gone", 5),
    ]
    command.downgrade(alembic_config(database_url), "0003")
    assert [tuple(r) for r in query_database(database_url, select)] == [
        (1, 2, "message", None),
        (1, 3, "message", None),
        (1, 4, "read", 2),
    ]


def index_names(database_url: str, table: str) -> set[str]:
    if database_url.startswith("sqlite"):
        sql = f"SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = '{table}'"
    else:
        sql = f"SELECT indexname FROM pg_indexes WHERE tablename = '{table}'"
    return {row[0] for row in query_database(database_url, sql)}


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


def test_0004_keeps_every_conversation_and_drops_the_pair_index(database_url: str) -> None:
    """0004 rebuilds SQLite's conversations without a rowid and drops ix_messages_pair
    on both engines; the rows are kept, down and up again."""
    from alembic import command

    upgrade(database_url, "0003")
    users = [
        "INSERT INTO users (id, username, username_key, email, email_key, password_hash,"
        f" date_joined) VALUES ({n}, 'u{n}', 'u{n}', 'u{n}@e.com', 'u{n}@e.com', 'x', 0)"
        for n in (1, 2)
    ]
    rows = [(1, 2, 7, 3, 1, 6), (2, 1, 7, 4, 4, 0)]
    conversations = [
        "INSERT INTO conversations (user_id, peer_id, last_message_id, received_count,"
        f" unread_count, last_read_id) VALUES {row}"
        for row in rows
    ]
    execute_all(database_url, users + conversations)
    select = (
        "SELECT user_id, peer_id, last_message_id, received_count, unread_count, last_read_id"
        " FROM conversations ORDER BY user_id"
    )
    for revision in ("head", "0003", "head"):
        if revision == "head":
            upgrade(database_url)
        else:
            command.downgrade(alembic_config(database_url), revision)
        assert [tuple(row) for row in query_database(database_url, select)] == rows
        indexes = index_names(database_url, "messages")
        assert ("ix_messages_pair" in indexes) == (revision == "0003")
        assert "ix_conversations_latest" in index_names(database_url, "conversations")
    if database_url.startswith("sqlite"):
        (sql,) = query_database(
            database_url, "SELECT sql FROM sqlite_master WHERE name = 'conversations'"
        )
        assert "WITHOUT ROWID" in sql[0]


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_migrating_existing_users_keys_them_by_rfc_8265_with_skeletons(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """0007 keys usernames by UsernameCaseMapped and gives each a skeleton; a later account
    whose skeleton an earlier one has keeps none (the unique index allows many NULLs)."""
    url = (
        f"sqlite:///{tmp_path / 'chat.db'}"
        if engine == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    upgrade(url, "0003")
    names = ["Alice", "\u0430lice", "Stra\u00dfe", "bob"]  # Cyrillic а; ß casefolds to ss
    execute_all(
        url,
        [
            "INSERT INTO users (id, username, username_key, email, email_key, password_hash,"
            f" date_joined) VALUES ({n}, '{name}', '{name.casefold()}', 'u{n}@e.com',"
            f" 'u{n}@e.com', 'x', 0)"
            for n, name in enumerate(names, start=1)
        ],
    )

    upgrade(url)

    rows = query_database(url, "SELECT username_key, username_skeleton FROM users ORDER BY id")
    assert [tuple(row) for row in rows] == [
        ("alice", "alice"),
        ("\u0430lice", None),  # looks like Alice, who came first
        ("stra\u00dfe", "strasse"),  # skeletons are case-folded
        ("bob", "bob"),
    ]


def test_0009_indexes_new_messages_at_commit_and_catches_up_on_rows_written_directly(
    tmp_path: Path,
) -> None:
    """After 0009 the insert trigger is gone: messages already indexed stay found, edits of
    them still move the index, and messages written without the server (a tool, a bulk
    load) are indexed before the next search."""
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    upgrade(url, "0003")
    users = [
        "INSERT INTO users (id, username, username_key, email, email_key, password_hash,"
        f" date_joined) VALUES ({n}, 'u{n}', 'u{n}', 'u{n}@e.com', 'u{n}@e.com', 'x', 0)"
        for n in (1, 2)
    ]
    execute_all(url, [*users, _message_at_0003(1, "Old Kettle")])
    upgrade(url)
    assert query_database(url, "SELECT up_to FROM search_indexed") == [(1,)]
    execute_all(
        url,
        [
            _message_at_head(2, "new kettles"),
            _message_at_head(3, "kettle soon gone"),
            "UPDATE messages SET body = '', deleted_at = 1 WHERE id = 3",
            "UPDATE messages SET body = 'Old teapot' WHERE id = 1",  # indexed: trigger
        ],
    )
    app = create_app(Settings(database_url=url))
    with TestClient(app) as client:
        auth_header = {"Authorization": f"Bearer {_token_for(client, url, user_id=2)}"}

        def found(q: str) -> list[int]:
            r = client.get(f"/api/v1/chats/?q={q}", headers=auth_header)
            assert r.status_code == 200, r.text
            return [m["id"] for m in r.json()["messages"]]

        assert found("kettle") == [2]
        assert found("teapot") == [1]
        assert found("gone") == []
    assert query_database(url, "SELECT up_to FROM search_indexed") == [(3,)]


def _message_at_0003(message_id: int, body: str) -> str:
    return (
        "INSERT INTO messages (id, sender_id, recipient_id, body, sent_at, recipient_seq,"
        f" peer_lo, peer_hi) VALUES ({message_id}, 1, 2, '{body}', 0, {message_id}, 1, 2)"
    )


def _message_at_head(message_id: int, body: str) -> str:
    return (
        "INSERT INTO messages (id, sender_id, recipient_id, body, sent_at, recipient_seq,"
        " peer_lo, peer_hi, conversation_seq, pair_seq, sender_pos, recipient_pos) VALUES"
        f" ({message_id}, 1, 2, '{body}', 0, {message_id}, 1, 2, {message_id}, {message_id},"
        f" {100 + message_id}, {100 + message_id})"
    )
