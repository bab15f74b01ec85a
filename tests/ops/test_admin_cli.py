"""``chatserver users|tokens|invites|stats`` on each database: results, ``--json``, one-line
errors and exit codes (0 done, 1 refused, 2 usage or settings)."""

from __future__ import annotations

from pathlib import Path

from testinfra import procs
from tests.helpers import PASSWORD
from tests.ops.conftest import chatserver, ok_json, one_line_error


def test_users_commands(database_url: str, tmp_path: Path) -> None:
    env = {"CHAT_DATABASE_URL": database_url}

    def run(*args: str, stdin: str | None = None) -> object:
        return ok_json(chatserver(*args, "--json", env=env, cwd=tmp_path, stdin=stdin))

    alice = run(
        "users",
        "create",
        "alice",
        "--email",
        "a@example.com",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert alice == run("users", "show", "ALICE")  # names match without regard to case
    assert isinstance(alice, dict)
    assert alice["active"] is True
    assert alice["username"] == "alice"
    assert alice["deactivated_at"] is None
    run("users", "create", "bob", "--email", "b@example.com", "--password-stdin", stdin=PASSWORD)
    listed = run("users", "list")
    assert [u["username"] for u in listed] == ["alice", "bob"]  # type: ignore[attr-defined]
    deactivated = run("users", "deactivate", "alice")
    assert deactivated["active"] is False  # type: ignore[index]
    assert deactivated["deactivated_at"]  # type: ignore[index]
    assert run("users", "reactivate", "alice")["active"] is True  # type: ignore[index]
    run("users", "set-password", "alice", "--password-stdin", stdin="another long password\n")
    assert run("tokens", "revoke", "--user", "alice") == {"user": "alice", "revoked": 0}
    stats = run("stats")
    assert stats["users"] == 2  # type: ignore[index]
    assert stats["messages"] == 0  # type: ignore[index]
    assert stats["database_bytes"] > 0  # type: ignore[index]
    assert run("users", "delete", "bob") == {"deleted": "bob", "id": listed[1]["id"]}  # type: ignore[index]
    text = chatserver("users", "list", env=env, cwd=tmp_path)
    assert text.returncode == 0
    assert "username=alice" in text.stdout
    assert "bob" not in text.stdout


def test_users_errors_are_one_line_with_documented_exit_codes(
    database_url: str, tmp_path: Path
) -> None:
    env = {"CHAT_DATABASE_URL": database_url}

    def run(*args: str, stdin: str | None = None):  # type: ignore[no-untyped-def]
        return chatserver(*args, env=env, cwd=tmp_path, stdin=stdin)

    create = ("users", "create", "carol", "--email", "c@example.com", "--password-stdin")
    assert run(*create, stdin=PASSWORD).returncode == 0
    one_line_error(run(*create, stdin=PASSWORD), 1, "already taken")
    one_line_error(run("users", "show", "nobody"), 1, "no user named 'nobody'")
    one_line_error(run("users", "deactivate", "nobody"), 1, "no user named 'nobody'")
    one_line_error(
        run(
            "users", "create", "dave", "--email", "not-an-email", "--password-stdin", stdin=PASSWORD
        ),
        1,
        "email",
    )
    one_line_error(
        run("users", "set-password", "carol", "--password-stdin", stdin="short"), 1, "password"
    )
    # No terminal to prompt on, and no --password-stdin: a usage error.
    one_line_error(
        run("users", "create", "erin", "--email", "e@example.com"), 2, "--password-stdin"
    )
    bad_db = chatserver("users", "list", env={"CHAT_DATABASE_URL": "mysql://x"}, cwd=tmp_path)
    one_line_error(bad_db, 2, "CHAT_DATABASE_URL")
    usage = run("users", "frobnicate")
    assert usage.returncode == 2
    assert "invalid choice" in usage.stderr


def test_invites_commands(database_url: str, tmp_path: Path) -> None:
    env = {"CHAT_DATABASE_URL": database_url}
    first = ok_json(chatserver("invites", "create", "--json", env=env, cwd=tmp_path))
    second = ok_json(
        chatserver(
            "invites", "create", "--uses", "5", "--expires-in", "7", "--json", env=env, cwd=tmp_path
        )
    )
    assert len(first["code"]) >= 20
    assert first["uses"] == 1
    assert first["expires_at"] is None
    assert second["uses"] == 5
    assert second["expires_at"] > second["created_at"]
    listed = ok_json(chatserver("invites", "list", "--json", env=env, cwd=tmp_path))
    assert [i["id"] for i in listed] == [first["id"], second["id"]]
    assert all("code" not in i for i in listed)  # stored hashed: never shown again
    assert chatserver("invites", "revoke", first["code"], env=env, cwd=tmp_path).returncode == 0
    by_id = chatserver("invites", "revoke", "--id", str(second["id"]), env=env, cwd=tmp_path)
    assert by_id.returncode == 0, by_id.stderr
    assert ok_json(chatserver("invites", "list", "--json", env=env, cwd=tmp_path)) == []
    one_line_error(
        chatserver("invites", "revoke", first["code"], env=env, cwd=tmp_path), 1, "no such invite"
    )
    one_line_error(
        chatserver("invites", "create", "--uses", "0", env=env, cwd=tmp_path), 1, "--uses"
    )


def test_deactivating_with_redis_unreachable_still_succeeds(
    database_url: str, tmp_path: Path
) -> None:
    """The change is committed before it is published: the nodes read it from the database."""
    env = {"CHAT_DATABASE_URL": database_url}
    create = ("users", "create", "frank", "--email", "f@example.com", "--password-stdin")
    assert chatserver(*create, env=env, cwd=tmp_path, stdin=PASSWORD).returncode == 0
    down = {**env, "CHAT_REDIS_URL": f"redis://127.0.0.1:{procs.free_port()}/0"}
    result = chatserver("users", "deactivate", "frank", "--json", env=down, cwd=tmp_path)
    assert ok_json(result)["active"] is False
    assert "could not publish to Redis" in result.stderr
