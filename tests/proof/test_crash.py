"""Crash consistency: 8 concurrent writers with Idempotency-Keys; the server is killed
(``kill -9``) at a random moment and started again, or PostgreSQL is (``pg_ctl stop -m
immediate``); every writer retries what got no answer with the same key. Afterwards every
message that got a 201 is there exactly once, nothing is there twice, and each writer's ids
are in the order it sent. Then a SQLite database on a full disk: writes are refused with 503,
nothing acknowledged is lost, and writing resumes without a restart once there is room.

``make chaos`` runs many rounds (``PROOF_CHAOS_ROUNDS``).
"""

from __future__ import annotations

import contextlib
import random
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from testinfra.postgres import PostgresNotFound, PostgresServer
from testinfra.server import ServerProcess
from tests.proof import knobs
from tests.proof.chaos import Writer, inbox, run_with_crash, verify
from tests.proof.conftest import bearer, login, new_name, serve, signup

WRITERS = 8
RECIPIENTS = 2  # four writers to each: their sends interleave in one inbox
# Durable, as in production (the suite's shared cluster runs without fsync).
DURABLE_PG = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


@pytest.fixture(scope="module")
def durable_postgres() -> Iterator[PostgresServer]:
    try:
        # Under $TMPDIR: pytest's own temporary directories are closed to the postgres user.
        cluster = PostgresServer(DURABLE_PG)
    except PostgresNotFound as exc:
        pytest.skip(str(exc))
    with cluster:
        yield cluster


@contextlib.contextmanager
def server_on(database_url: str, workdir: Path) -> Iterator[ServerProcess]:
    server = serve(workdir, database_url)
    try:
        yield server
    finally:
        server.stop()


def cast(client: httpx.Client) -> tuple[list[Writer], list[str]]:
    """Eight writers and the tokens of their two recipients."""
    recipients = []
    for _ in range(RECIPIENTS):
        name = new_name("inbox")
        recipients.append((signup(client, name), login(client, name)))
    writers = []
    for i in range(WRITERS):
        name = new_name("writer")
        signup(client, name)
        writers.append(Writer(name, login(client, name), recipients[i % RECIPIENTS][0]))
    return writers, [token for _, token in recipients]


def rounds_with_crashes(server: ServerProcess, crash: Callable[[], None]) -> list[Writer]:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        writers, tokens = cast(client)
    for round_ in range(knobs.CHAOS_ROUNDS):
        run_with_crash(writers, server.base_url, round_, knobs.CHAOS_MESSAGES, crash)
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        received = [m for token in tokens for m in inbox(client, token)]
    verify(writers, received, knobs.CHAOS_ROUNDS, knobs.CHAOS_MESSAGES)
    return writers


def kill_and_restart(server: ServerProcess) -> Callable[[], None]:
    def crash() -> None:
        server.kill()
        server.start()

    return crash


def test_kill_9_of_the_server_loses_and_duplicates_nothing_sqlite(tmp_path: Path) -> None:
    with server_on(f"sqlite:///{tmp_path / 'chat.db'}", tmp_path) as server:
        writers = rounds_with_crashes(server, kill_and_restart(server))
    assert sum(w.retries for w in writers) > 0, "the crash interrupted no send"


def test_kill_9_of_the_server_loses_and_duplicates_nothing_postgres(
    durable_postgres: PostgresServer, tmp_path: Path
) -> None:
    url = durable_postgres.url(durable_postgres.create_database())
    with server_on(url, tmp_path) as server:
        writers = rounds_with_crashes(server, kill_and_restart(server))
    assert sum(w.retries for w in writers) > 0, "the crash interrupted no send"


def test_postgres_crash_under_writers_loses_and_duplicates_nothing(
    durable_postgres: PostgresServer, tmp_path: Path
) -> None:
    def crash() -> None:
        durable_postgres.crash()
        time.sleep(random.uniform(0.0, 1.0))  # down for a random while, writers retrying
        durable_postgres.restart()

    url = durable_postgres.url(durable_postgres.create_database())
    with server_on(url, tmp_path) as server:
        writers = rounds_with_crashes(server, crash)
    assert sum(w.retries for w in writers) > 0, "the crash interrupted no send"


# ---------------------------------------------------------------- a full disk

DISK_BYTES = 8 << 20
ROOM_LEFT_BYTES = 1 << 20
BIG_MESSAGE = "x" * 10_000
MAX_SENDS_TO_FILL = 2000
RECOVERY_SECONDS = 30.0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of a few MiB (mounting needs root; the test is skipped where it cannot)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    size = f"size={DISK_BYTES}"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """A file taking all of the disk's free space but ``leave`` bytes."""
    free = shutil.disk_usage(disk).free
    filler = disk / "filler"
    with filler.open("wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def send_big(client: httpx.Client, token: str, to: int) -> httpx.Response:
    return client.post(
        "/api/v1/chats/", json={"user_id": to, "message": BIG_MESSAGE}, headers=bearer(token)
    )


def test_full_disk_refuses_writes_with_503_and_recovers_without_restart(
    small_disk: Path, tmp_path: Path
) -> None:
    with server_on(f"sqlite:///{small_disk / 'chat.db'}", tmp_path) as server:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            sender, reader = new_name("filler"), new_name("reader")
            signup(client, sender)
            to = signup(client, reader)
            token, reader_token = login(client, sender), login(client, reader)
            filler = fill(small_disk, ROOM_LEFT_BYTES)
            acked, refused = [], None
            for _ in range(MAX_SENDS_TO_FILL):
                r = send_big(client, token, to)
                if r.status_code != 201:
                    refused = r
                    break
                acked.append(r.json()["id"])
            assert refused is not None, "the disk never filled"
            assert refused.status_code == 503, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
            # (Reading the inbox now would be refused as well: it marks messages received.)

            filler.unlink()
            deadline = time.monotonic() + RECOVERY_SECONDS
            while (r := send_big(client, token, to)).status_code != 201:
                assert r.status_code == 503, r.text
                assert time.monotonic() < deadline, "writes did not resume once there was room"
                time.sleep(0.1)
            acked.append(r.json()["id"])
            assert {m["id"] for m in inbox(client, reader_token)} == set(acked)

        server.kill()  # and every acknowledged message survives a crash as well
        server.start()
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            assert {m["id"] for m in inbox(client, reader_token)} == set(acked)
