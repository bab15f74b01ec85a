"""/api/v1/auth/token/: issuing a token (log in) and revoking it (log out)."""

from __future__ import annotations

from litestar.testing import AsyncTestClient

from tests.helpers import (
    PASSWORD,
    Api,
    assert_401,
    assert_problem,
    assert_utc_timestamp,
    basic,
    bearer,
    query_database,
)

Client = AsyncTestClient  # type: ignore[type-arg]

TOKEN = "/api/v1/auth/token/"
USERS = "/api/v1/users/"


# ---------------------------------------------------------------- issuing tokens


async def test_token_with_username_returns_token_and_own_user(api: Api) -> None:
    alice = await api.signup()
    r = await api.client.post(TOKEN, json={"username": alice.username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"token", "user"}
    assert isinstance(body["token"], str)
    user = body["user"]
    assert (user["id"], user["username"], user["email"]) == (alice.id, alice.username, alice.email)
    assert_utc_timestamp(user["date_joined"])


async def test_token_with_email_works(api: Api) -> None:
    alice = await api.signup()
    r = await api.client.post(TOKEN, json={"username": alice.email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    assert r.json()["user"]["id"] == alice.id


async def test_token_with_username_or_email_in_another_case_works(api: Api) -> None:
    alice = await api.signup("Alice")
    for login in ("ALICE", alice.email.upper()):
        r = await api.client.post(TOKEN, json={"username": login, "password": PASSWORD})
        assert r.status_code == 200, (login, r.text)


async def test_tokens_are_long_random_and_distinct(api: Api) -> None:
    alice = await api.signup()
    tokens = {alice.token, await api.login(alice.username), await api.login(alice.username)}
    assert len(tokens) == 3
    # At least 128 bits: 22 characters of URL-safe base64, 32 of hex.
    assert all(len(token) >= 22 for token in tokens)


async def test_every_issued_token_works(api: Api) -> None:
    alice = await api.signup()
    second = await api.login(alice.username)
    for token in (alice.token, second):
        r = await api.client.get(USERS, headers=bearer(token))
        assert r.status_code == 200, r.text
        assert r.json()["id"] == alice.id


async def test_tokens_are_stored_only_as_a_hash(api: Api, database_url: str) -> None:
    alice = await api.signup()
    rows = query_database(database_url, "SELECT * FROM tokens")
    assert len(rows) == 1
    assert all(alice.token not in str(value) for value in rows[0])


async def test_wrong_password_is_401(api: Api) -> None:
    alice = await api.signup()
    r = await api.client.post(TOKEN, json={"username": alice.username, "password": "wrong-pw1"})
    assert_401(r)


async def test_unknown_user_and_wrong_password_get_the_same_401(api: Api) -> None:
    alice = await api.signup()
    wrong_password = await api.client.post(
        TOKEN, json={"username": alice.username, "password": "wrong-pw1"}
    )
    unknown_user = await api.client.post(
        TOKEN, json={"username": "nobody-here", "password": "wrong-pw1"}
    )
    assert wrong_password.status_code == unknown_user.status_code == 401
    assert wrong_password.json() == unknown_user.json()
    assert wrong_password.headers["WWW-Authenticate"] == unknown_user.headers["WWW-Authenticate"]


async def test_basic_unknown_user_and_wrong_password_get_the_same_401(api: Api) -> None:
    alice = await api.signup()
    wrong_password = await api.client.get(USERS, headers=basic(alice.username, "wrong-pw1"))
    unknown_user = await api.client.get(USERS, headers=basic("nobody-here", "wrong-pw1"))
    assert wrong_password.status_code == unknown_user.status_code == 401
    assert wrong_password.json() == unknown_user.json()


async def test_token_request_with_missing_fields_is_400(client: Client) -> None:
    assert_problem(await client.post(TOKEN, json={"username": "alice"}), 400, "password")
    assert_problem(await client.post(TOKEN, json={"password": PASSWORD}), 400, "username")


async def test_issuing_a_token_needs_no_authentication(api: Api) -> None:
    alice = await api.signup()
    r = await api.client.post(
        TOKEN, json={"username": alice.username, "password": PASSWORD}, headers=bearer("junk")
    )
    assert r.status_code == 200, r.text


# ---------------------------------------------------------------- revoking


async def test_revoke_is_204_and_the_token_stops_working(api: Api) -> None:
    alice = await api.signup()
    assert (await api.client.get(USERS, headers=alice.auth)).status_code == 200  # now cached
    r = await api.client.delete(TOKEN, headers=alice.auth)
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert_401(await api.client.get(USERS, headers=alice.auth))
    assert_401(await api.client.delete(TOKEN, headers=alice.auth))


async def test_revoke_leaves_the_users_other_tokens_valid(api: Api) -> None:
    alice = await api.signup()
    other = await api.login(alice.username)
    await api.client.delete(TOKEN, headers=alice.auth)
    r = await api.client.get(USERS, headers=bearer(other))
    assert r.status_code == 200, r.text


async def test_revoke_needs_authentication(client: Client) -> None:
    assert_401(await client.delete(TOKEN))
