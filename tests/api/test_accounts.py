"""Accounts against a real server on each database: brute-force throttling of password
checks (token endpoint and Basic alike), look-alike usernames, common passwords, hashes
upgraded at login, and the tokens' expiry, limit, listing and revocation."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from typing import Any

import httpx
import psycopg
import pytest
from argon2 import PasswordHasher

from chatserver.config import Settings
from chatserver.hub import CLOSE_REVOKED
from chatserver.passwords import HASHER
from testinfra.postgres import PostgresServer
from tests.helpers import PASSWORD, TEST_LIMITS, Api, assert_401, assert_problem, basic, bearer
from tests.helpers import query_database as query
from tests.realtime_helpers import (
    LiveServer,
    read_until_closed,
    ready_stream,
    serve_in_thread,
    wait_until,
)

TOKEN = "/api/v1/auth/token/"
TOKENS = "/api/v1/auth/tokens/"
USERS = "/api/v1/users/"
MAX_TOKENS = 3
# Small numbers, so the tests stay short; the rules are the same as with the defaults.
ACCOUNT_SETTINGS: dict[str, Any] = {
    **TEST_LIMITS,  # the per-address limits would refuse this module's many logins first
    "max_tokens_per_user": MAX_TOKENS,
    "token_use_resolution_seconds": 0.2,
    "login_failures_before_throttle": 10,
}


@pytest.fixture(scope="module")
def sqlite_accounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('accounts') / 'chat.db'}"
    with serve_in_thread(Settings(database_url=url, **ACCOUNT_SETTINGS)) as server:
        yield server, url


@pytest.fixture(scope="module")
def postgres_accounts(postgres_server: PostgresServer) -> Iterator[tuple[LiveServer, str]]:
    name = postgres_server.create_database()
    url = postgres_server.url(name)
    try:
        with serve_in_thread(Settings(database_url=url, **ACCOUNT_SETTINGS)) as server:
            yield server, url
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def accounts(request: pytest.FixtureRequest) -> tuple[LiveServer, str]:
    served: tuple[LiveServer, str] = request.getfixturevalue(f"{request.param}_accounts")
    return served


@pytest.fixture
def db_url(accounts: tuple[LiveServer, str]) -> str:
    return accounts[1]


@pytest.fixture
async def api(accounts: tuple[LiveServer, str]) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(base_url=accounts[0].base_url, timeout=30) as client:
        yield Api(client)  # type: ignore[arg-type]


def login_body(username: str, password: str) -> dict[str, str]:
    return {"username": username, "password": password}


def assert_throttled(r: httpx.Response) -> None:
    problem = assert_problem(r, 429)
    assert problem["type"].endswith("/too-many-attempts")
    assert int(r.headers["Retry-After"]) >= 1


# ---------------------------------------------------------------- brute force


async def fail(api: Api, username: str, times: int) -> list[int]:
    """``times`` wrong passwords for ``username``, sent together; their statuses."""
    replies = await asyncio.gather(
        *(api.client.post(TOKEN, json=login_body(username, f"wrong-{i}")) for i in range(times))
    )
    return sorted(r.status_code for r in replies)


async def test_after_10_failures_attempts_get_429_without_a_password_check(api: Api) -> None:
    alice = await api.signup()
    # Sent at once: each attempt counts before its check, so concurrency cannot get more.
    assert await fail(api, alice.username, 15) == [401] * 10 + [429] * 5
    r = await api.client.post(TOKEN, json=login_body(alice.username, PASSWORD))
    assert_throttled(r)  # even the right password is not checked now
    assert_throttled(await api.client.get(USERS, headers=alice.basic))


async def test_basic_auth_and_the_token_endpoint_share_the_count(api: Api) -> None:
    alice = await api.signup()
    for _ in range(5):
        assert_401(await api.client.get(USERS, headers=basic(alice.username, "wrong-pw1")))
    assert await fail(api, alice.username, 6) == [401] * 5 + [429]
    # by email too: the count is the account's
    assert_throttled(await api.client.get(USERS, headers=basic(alice.email, PASSWORD)))


async def test_the_owners_tokens_keep_working_while_throttled(api: Api) -> None:
    alice = await api.signup()
    await fail(api, alice.username, 12)
    r = await api.client.get(USERS, headers=alice.auth)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == alice.id


async def test_an_unknown_name_is_throttled_the_same_way(api: Api) -> None:
    alice = await api.signup()
    seen = []
    for name in (alice.username, f"nobody-{alice.id}"):
        statuses = await fail(api, name, 12)
        r = await api.client.post(TOKEN, json=login_body(name, "x-wrong-1"))
        assert_throttled(r)
        problem = {k: r.json()[k] for k in ("type", "title", "status")}
        seen.append((statuses, problem, sorted(r.headers.keys())))
    assert seen[0] == seen[1]
    assert seen[0][0] == [401] * 10 + [429] * 2


async def test_the_wait_grows_as_failures_go_on(api: Api) -> None:
    alice = await api.signup()
    await fail(api, alice.username, 10)
    waits = []
    for _ in range(3):
        r = await api.client.post(TOKEN, json=login_body(alice.username, "wrong-again"))
        assert_throttled(r)
        waits.append(int(r.headers["Retry-After"]))

        async def turn_came(name: str = alice.username) -> bool:
            reply = await api.client.post(TOKEN, json=login_body(name, "still-wrong"))
            return reply.status_code == 401  # checked again: one more failure

        await wait_until(turn_came, within=20, what="the next evaluated attempt")
    r = await api.client.post(TOKEN, json=login_body(alice.username, "wrong-again"))
    waits.append(int(r.headers["Retry-After"]))
    assert waits[0] == 1  # 1 s, then 2, 4, 8 …
    assert waits[-1] >= 8


async def test_a_success_clears_the_failures(api: Api) -> None:
    alice = await api.signup()
    assert await fail(api, alice.username, 9) == [401] * 9
    assert (await api.client.post(TOKEN, json=login_body(alice.username, PASSWORD))).is_success
    assert await fail(api, alice.username, 9) == [401] * 9


# ---------------------------------------------------------------- usernames and passwords


async def signup(api: Api, username: str, password: str = PASSWORD) -> httpx.Response:
    email = f"{abs(hash(username))}@example.com"
    body = {"username": username, "email": email, "password": password}
    return await api.client.post(USERS, json=body)


async def test_look_alike_usernames_are_409(api: Api, subtests: pytest.Subtests) -> None:
    base = f"alice{id(api) % 10_000}"
    assert (await signup(api, base)).status_code == 201
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in base)  # ａｌｉｃｅ…
    cyrillic = "\u0430" + base[1:]  # Cyrillic а
    cases = {"full-width": full_width, "Cyrillic a": cyrillic, "upper case": base.upper()}
    for case, name in cases.items():
        with subtests.test(case):
            assert_problem(await signup(api, name), 409)


async def test_a_confusable_name_is_409_and_says_so(api: Api) -> None:
    assert (await signup(api, "paypal-x1")).status_code == 201
    problem = assert_problem(await signup(api, "paypal-xl"), 409)  # l for 1
    assert "confusable" in problem["detail"]


async def test_a_name_that_mixes_scripts_is_409(api: Api) -> None:
    problem = assert_problem(await signup(api, "b\u043eb-mixed"), 409)  # Cyrillic о
    assert "mixes scripts" in problem["detail"]


async def test_names_in_one_other_script_are_welcome(api: Api) -> None:
    viewer = await api.signup()
    r = await signup(api, "\u0431\u043e\u0440\u0438\u0441")  # борис
    assert r.status_code == 201, r.text
    found = await api.client.get(
        USERS, params={"username": "\u0411\u041e\u0420\u0418\u0421"}, headers=viewer.auth
    )
    assert found.json()["id"] == r.json()["id"]


async def test_full_width_names_are_stored_narrow_and_found_either_way(api: Api) -> None:
    viewer = await api.signup()
    r = await signup(api, "\uff42\uff45\uff54\uff54\uff59-7")  # ｂｅｔｔｙ-7
    assert r.status_code == 201, r.text
    assert r.json()["username"] == "betty-7"
    found = await api.client.get(USERS, params={"username": "BETTY-7"}, headers=viewer.auth)
    assert found.json()["id"] == r.json()["id"]


async def test_a_common_password_is_400_naming_the_rule(api: Api) -> None:
    for password in ("password", "Password1", "qwertyuiop"):
        problem = assert_problem(await signup(api, f"pw{len(password)}", password), 400, "password")
        assert "commonly used" in problem["errors"]["password"][0]


# ---------------------------------------------------------------- rehash at login


async def test_a_hash_with_older_parameters_is_upgraded_at_login(api: Api, db_url: str) -> None:
    alice = await api.signup()
    old = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    set_hash(db_url, alice.id, old)
    assert query(db_url, f"SELECT password_hash FROM users WHERE id = {alice.id}")[0][0] == old
    r = await api.client.post(TOKEN, json=login_body(alice.username, PASSWORD))
    assert r.status_code == 200, r.text
    new = query(db_url, f"SELECT password_hash FROM users WHERE id = {alice.id}")[0][0]
    assert new != old
    assert not HASHER.check_needs_rehash(new)
    assert HASHER.verify(new, PASSWORD)


def set_hash(db_url: str, user_id: int, password_hash: str) -> None:
    write(db_url, f"UPDATE users SET password_hash = '{password_hash}' WHERE id = {user_id}")


def write(db_url: str, sql: str) -> None:
    """One committed statement straight against the database (outside the app)."""
    if db_url.startswith("sqlite"):
        with closing(sqlite3.connect(db_url.split(":///", 1)[1])) as conn, conn:
            conn.execute(sql)
    else:
        with psycopg.connect(db_url) as conn:
            conn.execute(sql)  # type: ignore[arg-type]


# ---------------------------------------------------------------- listing and revoking


async def list_tokens(api: Api, token: str) -> list[dict[str, Any]]:
    r = await api.client.get(TOKENS, headers=bearer(token))
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"tokens"}
    tokens: list[dict[str, Any]] = body["tokens"]
    return tokens


async def test_the_list_shows_ids_and_times_never_tokens(api: Api) -> None:
    alice = await api.signup()
    second = await api.login(alice.username)
    tokens = await list_tokens(api, second)
    assert [set(t) for t in tokens] == [{"id", "created_at", "last_used_at", "current"}] * 2
    assert [t["current"] for t in tokens] == [True, False]  # newest first
    assert alice.token not in str(tokens)
    assert second not in str(tokens)


async def test_last_used_at_is_written_in_the_background(api: Api) -> None:
    alice = await api.signup()
    other = await api.login(alice.username)
    assert all(t["last_used_at"] is None for t in await list_tokens(api, other))

    async def written() -> bool:
        listed = await list_tokens(api, other)
        return next(t for t in listed if t["current"])["last_used_at"] is not None

    await wait_until(written, within=10, what="last_used_at of the token in use")


async def test_revoking_one_token_by_id(api: Api) -> None:
    alice, mallory = await api.signup(), await api.signup()
    second = await api.login(alice.username)
    first_id = next(t["id"] for t in await list_tokens(api, second) if not t["current"])
    r = await api.client.delete(f"{TOKENS}{first_id}/", headers=mallory.auth)
    assert_problem(r, 404)  # not mallory's
    r = await api.client.delete(f"{TOKENS}{first_id}/", headers=bearer(second))
    assert r.status_code == 204, r.text
    assert_401(await api.client.get(USERS, headers=alice.auth))
    assert_problem(await api.client.delete(f"{TOKENS}{first_id}/", headers=bearer(second)), 404)


async def test_revoking_all_but_the_current_one(api: Api) -> None:
    alice = await api.signup()
    others = [alice.token, await api.login(alice.username)]
    current = await api.login(alice.username)
    r = await api.client.delete(TOKENS, headers=bearer(current))
    assert r.status_code == 204, r.text
    for token in others:
        assert_401(await api.client.get(USERS, headers=bearer(token)))
    assert [t["current"] for t in await list_tokens(api, current)] == [True]


async def test_a_revoked_tokens_stream_closes_with_4401(
    api: Api, accounts: tuple[LiveServer, str]
) -> None:
    alice, bob = await api.signup(), await api.signup()
    current = await api.login(alice.username)
    ws_url = accounts[0].ws_url
    async with ready_stream(api, ws_url, alice, bob) as ws:
        r = await api.client.delete(TOKENS, headers=bearer(current))
        assert r.status_code == 204, r.text
        code, _ = await read_until_closed(ws)
    assert code == CLOSE_REVOKED


async def test_the_token_beyond_the_limit_revokes_the_oldest(api: Api) -> None:
    alice = await api.signup()
    tokens = [alice.token] + [await api.login(alice.username) for _ in range(MAX_TOKENS)]
    assert_401(await api.client.get(USERS, headers=alice.auth))
    for token in tokens[1:]:
        assert (await api.client.get(USERS, headers=bearer(token))).status_code == 200
    assert len(await list_tokens(api, tokens[-1])) == MAX_TOKENS


async def test_a_token_unused_for_its_ttl_is_refused(api: Api, db_url: str) -> None:
    alice = await api.signup()
    stale = await api.login(alice.username)
    long_ago = 1_000_000  # 1970: far more than 30 days without use
    write(
        db_url,
        f"UPDATE tokens SET created_at = {long_ago}, last_used_at = {long_ago}"
        f" WHERE user_id = {alice.id} AND id = (SELECT max(id) FROM tokens"
        f" WHERE user_id = {alice.id})",
    )
    problem = assert_401(await api.client.get(USERS, headers=bearer(stale)))
    assert "expired" in problem["detail"]
    assert len(await list_tokens(api, alice.token)) == 1  # the list leaves it out
