"""The log check itself: it finds a remembered secret and credential-shaped text, and
nothing in ordinary log lines."""

from __future__ import annotations

from tests.logcheck import leaks

TOKEN = "f0posomjj6gMR0B4ZLTSn2Jqzpy-AYQO1JxG6kZWwK0"


def test_finds_remembered_secrets_and_credential_shapes() -> None:
    logs = [
        ("a.log", f"INFO something {TOKEN} happened"),
        ("b.log", "GET /api/v1/stream?token=abc HTTP/1.1"),
        ("c.log", 'body {"username": "x", "password": "y"}'),
        ("d.log", "Authorization: Basic am9objpzM2NyZXQtcGFzc3dvcmQ="),
    ]
    found = leaks(logs, [TOKEN])
    assert [line.split(":")[0] for line in found] == ["a.log", "b.log", "c.log", "d.log"]


def test_ordinary_lines_are_clean() -> None:
    logs = [("a.log", "INFO chatserver bearer authentication failed for a request 401")]
    assert leaks(logs, [TOKEN]) == []
