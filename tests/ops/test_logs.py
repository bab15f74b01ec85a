"""CHAT_LOG_FORMAT=json on a real server: every line is a JSON object; each request has one
line with time, level, request id, route, status, duration and the user id when known; no
password, token or query string ever reaches the log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from testinfra.server import log_dir, running_server

PASSWORD = "a-password-nobody-logs"
SECRET_QUERY = "needle-in-the-query"


def test_json_logs_carry_the_request_and_never_a_secret(tmp_path: Path) -> None:
    env = {"CHAT_DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}", "CHAT_LOG_FORMAT": "json"}
    with (
        running_server(tmp_path, env) as server,
        httpx.Client(base_url=server.base_url, timeout=10) as client,
    ):
        user_id, token = _exercise(client)
    # Stopped: everything the server will ever write is in its log file now (in the test
    # session's log directory when it has one).
    files = log_dir(tmp_path).glob(f"chatserver-{server.port}-*.log")
    log = "".join(path.read_text() for path in files)
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]  # all JSON
    assert all({"time", "level", "message"} <= set(line) for line in lines)
    requests = [line for line in lines if line.get("message") == "request"]
    sent = _one(requests, method="POST", route="/api/v1/chats")
    assert sent["status"] == 201
    assert sent["user_id"] == user_id
    assert sent["level"] == "info"
    assert isinstance(sent["duration_ms"], float)
    assert sent["request_id"]
    assert sent["time"].endswith("Z")
    mine = _one(requests, request_id="ops-test-request-1")
    assert mine["route"] == "/api/v1/users"
    assert mine["status"] == 404
    assert _one(requests, route="unmatched")["status"] == 404
    assert "user_id" not in _one(requests, method="POST", route="/api/v1/users")
    for secret in (PASSWORD, token, SECRET_QUERY, "?"):
        assert secret not in log, secret


def _exercise(client: httpx.Client) -> tuple[int, str]:
    body = {"username": "logged", "email": "logged@example.com", "password": PASSWORD}
    assert client.post("/api/v1/users/", json=body).status_code == 201
    r = client.post("/api/v1/auth/token/", json={"username": "logged", "password": PASSWORD})
    token, user_id = r.json()["token"], r.json()["user"]["id"]
    auth = {"Authorization": f"Bearer {token}"}
    sent = client.post(
        f"/api/v1/chats/?{SECRET_QUERY}=1", json={"user_id": user_id, "message": "x"}, headers=auth
    )
    assert sent.status_code == 201
    me = client.get(
        "/api/v1/users/",
        params={"username": SECRET_QUERY},
        headers={**auth, "X-Request-ID": "ops-test-request-1"},
    )
    assert me.status_code == 404
    assert client.get(f"/no/such/{SECRET_QUERY}").status_code == 404
    return user_id, token


def _one(lines: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    found = [line for line in lines if all(line.get(k) == v for k, v in fields.items())]
    assert len(found) == 1, (fields, lines)
    return found[0]
