"""auth.py: credentials (Bearer and Basic, on every route), 401s, password hashing and what
it costs, and the per-process Bearer cache (a revocation wins over a look-up already running).

Issuing and revoking tokens: api/test_tokens.py."""

from __future__ import annotations

import base64

import pytest
from litestar.testing import AsyncTestClient

from chatserver import auth, passwords
from chatserver.auth import TokenCache
from tests.helpers import PASSWORD, Api, assert_401, basic, bearer, query_database

Client = AsyncTestClient  # type: ignore[type-arg]

TOKEN = "/api/v1/auth/token/"
USERS = "/api/v1/users/"
CHATS = "/api/v1/chats/"


# ---------------------------------------------------------------- Bearer and Basic


async def test_basic_auth_is_accepted_everywhere(api: Api) -> None:
    alice = await api.signup()
    r = await api.client.get(USERS, headers=alice.basic)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == alice.id
    r = await api.client.post(
        CHATS, json={"user_id": alice.id, "message": "hi"}, headers=alice.basic
    )
    assert r.status_code == 201, r.text
    r = await api.client.get(CHATS, headers=alice.basic)
    assert r.status_code == 200, r.text


async def test_basic_auth_accepts_the_email(api: Api) -> None:
    alice = await api.signup()
    r = await api.client.get(USERS, headers=basic(alice.email, PASSWORD))
    assert r.status_code == 200, r.text
    assert r.json()["id"] == alice.id


async def test_basic_auth_with_a_colon_in_the_password(client: Client) -> None:
    password = "pass:word:with:colons"
    body = {"username": "colon", "email": "colon@example.com", "password": password}
    assert (await client.post(USERS, json=body)).status_code == 201
    r = await client.get(USERS, headers=basic("colon", password))
    assert r.status_code == 200, r.text


async def test_scheme_names_are_case_insensitive(api: Api) -> None:
    alice = await api.signup()
    r = await api.client.get(USERS, headers={"Authorization": f"bearer {alice.token}"})
    assert r.status_code == 200, r.text


async def test_bad_credentials_are_401_with_www_authenticate(
    api: Api, subtests: pytest.Subtests
) -> None:
    alice = await api.signup()
    headers = {
        "missing": {},
        "empty": {"Authorization": ""},
        "unknown token": bearer("not-a-real-token"),
        "bearer without token": {"Authorization": "Bearer"},
        "bearer blank": {"Authorization": "Bearer    "},
        "unknown scheme": {"Authorization": f"Token {alice.token}"},
        "token without scheme": {"Authorization": alice.token},
        "basic wrong password": basic(alice.username, "wrong-pw1"),
        "basic unknown user": basic("nobody", PASSWORD),
        "basic not base64": {"Authorization": "Basic !!!not-base64!!!"},
        "basic without colon": {
            "Authorization": "Basic " + base64.b64encode(alice.username.encode()).decode()
        },
        "basic not utf8": {"Authorization": "Basic " + base64.b64encode(b"\xff:\xfe").decode()},
    }
    for case, header in headers.items():
        for method, path in (("GET", USERS), ("GET", CHATS), ("DELETE", TOKEN)):
            with subtests.test(case, method=method, path=path):
                assert_401(await api.client.request(method, path, headers=header))


async def test_a_401_does_not_say_whether_the_user_exists(api: Api) -> None:
    alice = await api.signup()
    problem = assert_401(
        await api.client.post(TOKEN, json={"username": alice.username, "password": "nope-nope"})
    )
    assert alice.username not in str(problem)


# ---------------------------------------------------------------- hashing costs


@pytest.fixture
def argon2_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records each argon2 password verification the server runs (by password)."""
    calls: list[str] = []
    real = passwords._verify

    def counting(password_hash: str, password: str) -> bool:
        calls.append(password)
        return real(password_hash, password)

    monkeypatch.setattr(passwords, "_verify", counting)
    return calls


async def test_a_bearer_request_costs_no_password_hash(api: Api, argon2_checks: list[str]) -> None:
    alice = await api.signup()
    argon2_checks.clear()
    for _ in range(2):  # the first look-up of a token and a cached one
        assert (await api.client.get(USERS, headers=alice.auth)).status_code == 200
    assert argon2_checks == []
    assert (await api.client.get(USERS, headers=alice.basic)).status_code == 200
    assert argon2_checks == [PASSWORD]  # Basic does check the password


async def test_unknown_user_costs_one_hash_like_a_wrong_password(
    api: Api, argon2_checks: list[str]
) -> None:
    alice = await api.signup()
    argon2_checks.clear()
    await api.client.post(TOKEN, json={"username": alice.username, "password": "wrong-pw-1"})
    await api.client.post(TOKEN, json={"username": "nobody-here", "password": "wrong-pw-2"})
    await api.client.get(USERS, headers=basic("nobody-here", "wrong-pw-3"))
    assert argon2_checks == ["wrong-pw-1", "wrong-pw-2", "wrong-pw-3"]


async def test_passwords_are_stored_as_argon2id_hashes(api: Api, database_url: str) -> None:
    await api.signup()
    rows = query_database(database_url, "SELECT password_hash FROM users")
    assert len(rows) == 1
    assert rows[0][0].startswith("$argon2id$")
    assert PASSWORD not in rows[0][0]


def test_parsed_basic_credentials_never_show_the_password() -> None:
    header = "Basic " + base64.b64encode(b"alice:s3cret-pass").decode()
    credentials = auth.parse_authorization(header)
    assert isinstance(credentials, auth.BasicCredentials)
    assert credentials.password == "s3cret-pass"
    assert "s3cret-pass" not in repr(credentials)
    assert "s3cret-pass" not in str(credentials)


# ---------------------------------------------------------------- the token cache


def test_a_cached_token_is_served_until_evicted() -> None:
    cache = TokenCache(ttl=30)
    cache.put("hash", 7)
    assert cache.get("hash") == 7
    cache.evict_token("hash")
    assert cache.get("hash") is None


def test_a_lookup_finishing_after_a_revocation_cannot_put_the_token_back() -> None:
    cache = TokenCache(ttl=30)
    cache.evict_token("hash")  # the revocation committed and evicted first …
    cache.put("hash", 7)  # … then a look-up that read the database before it finishes
    assert cache.get("hash") is None


def test_a_lookup_finishing_after_the_user_was_deleted_cannot_put_a_token_back() -> None:
    cache = TokenCache(ttl=30)
    cache.put("other", 8)
    cache.evict_user(7)
    cache.put("hash", 7)
    assert cache.get("hash") is None
    assert cache.get("other") == 8


def test_entries_expire_after_the_ttl() -> None:
    cache = TokenCache(ttl=0)
    cache.put("hash", 7)
    assert cache.get("hash") is None
