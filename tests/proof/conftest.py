"""Fixtures of the proofs: a real ``chatserver serve`` process on each database, with the
request-rate limits off (the proofs send far more than one client would), and clients."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testinfra.postgres import PostgresServer
from testinfra.server import ServerProcess, server_env
from tests.logcheck import remember

PASSWORD = "proof-Passw0rd-never-logged"
remember(PASSWORD)
# The proofs check correctness, not the limits (which have tests of their own): request
# rates off, and the per-account login throttle out of reach (the fuzzer's checks send wrong
# credentials for its one account on purpose, far more than 10 times).
PROOF_ENV = {
    "CHAT_RATE_LIMITS": "off",
    "CHAT_LOGIN_FAILURES_BEFORE_THROTTLE": "1000000",
    "CHAT_LOGIN_FAILURES_PER_HOUR": "1000000",
    "CHAT_LOG_LEVEL": "info",
}
_names = itertools.count(1)


def serve(workdir: Path, database_url: str, **env: str) -> ServerProcess:
    """A started ``chatserver serve`` on ``database_url`` (migrated by serve itself)."""
    server = ServerProcess(
        workdir, server_env({**PROOF_ENV, "CHAT_DATABASE_URL": database_url, **env})
    )
    server.start()
    return server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh database for the module: a SQLite file or a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('proof') / 'chat.db'}"
    cluster: PostgresServer = request.getfixturevalue("postgres_server")
    return cluster.url(cluster.create_database())


@pytest.fixture(scope="module")
def proof_server(
    database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    server = serve(tmp_path_factory.mktemp("server"), database)
    try:
        yield server
    finally:
        server.stop()


def new_name(prefix: str = "p") -> str:
    return f"{prefix}{next(_names)}"


def signup(client: httpx.Client, name: str) -> int:
    body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    r = client.post("/api/v1/users/", json=body)
    assert r.status_code == 201, r.text
    user_id: int = r.json()["id"]
    return user_id


def login(client: httpx.Client, name: str) -> str:
    r = client.post("/api/v1/auth/token/", json={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    token: str = r.json()["token"]
    remember(token)
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
