"""/api/v1/users/: sign up, look users up, delete your own account."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from chatserver.app import create_app
from chatserver.config import Settings
from chatserver.migrations import upgrade
from tests.helpers import PASSWORD, Api, assert_problem, assert_utc_timestamp

Client = AsyncTestClient  # type: ignore[type-arg]

USERS = "/api/v1/users/"
CHATS = "/api/v1/chats/"
USER_FIELDS = {"id", "username", "email", "date_joined", "last_seen_at"}


def new_user(name: str = "alice", **overrides: Any) -> dict[str, Any]:
    return {"username": name, "email": f"{name}@example.com", "password": PASSWORD, **overrides}


async def signup(client: Client, body: dict[str, Any]) -> Any:
    return await client.post(USERS, json=body)


# ---------------------------------------------------------------- sign up


async def test_signup_returns_201_with_the_user_object(client: Client) -> None:
    before = datetime.now(UTC)
    r = await signup(client, new_user("alice"))
    assert r.status_code == 201, r.text
    user = r.json()
    assert set(user) >= USER_FIELDS
    assert isinstance(user["id"], int)
    assert user["username"] == "alice"
    assert user["email"] == "alice@example.com"
    assert user["last_seen_at"] is None
    joined = assert_utc_timestamp(user["date_joined"])
    assert before - timedelta(seconds=5) <= joined <= datetime.now(UTC) + timedelta(seconds=5)
    assert "password" not in r.text


async def test_signup_needs_no_authentication(client: Client) -> None:
    r = await client.post(USERS, json=new_user(), headers={"Authorization": "Bearer junk"})
    assert r.status_code == 201, r.text


async def test_user_ids_are_distinct_integers(client: Client) -> None:
    first = (await signup(client, new_user("first"))).json()["id"]
    second = (await signup(client, new_user("second"))).json()["id"]
    assert first != second


@pytest.mark.parametrize(
    "username",
    ["a", "x" * 30, "j.doe@home+tag-1_2", "Ünïcødé", "名前"],
    ids=["one-char", "thirty-chars", "every-symbol", "accented-letters", "cjk-letters"],
)
async def test_valid_usernames_are_accepted(client: Client, username: str) -> None:
    r = await signup(client, new_user("valid", username=username))
    assert r.status_code == 201, r.text
    assert r.json()["username"] == username


async def test_invalid_usernames_are_400(client: Client, subtests: pytest.Subtests) -> None:
    for username in ["", "x" * 31, "with space", "bang!", "sla/sh", "col:on", "tab\t", "nl\n"]:
        with subtests.test(username=username):
            r = await signup(client, new_user("x", username=username))
            assert_problem(r, 400, "username")


async def test_valid_email_of_254_characters_is_accepted(client: Client) -> None:
    email = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com"
    assert len(email) == 254
    r = await signup(client, new_user("long", email=email))
    assert r.status_code == 201, r.text


async def test_invalid_emails_are_400(client: Client, subtests: pytest.Subtests) -> None:
    too_long = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 58 + ".com"
    assert len(too_long) == 255
    for email in ["", "plain", "no-at.example.com", "a@", "@example.com", "a b@example.com"]:
        with subtests.test(email=email):
            assert_problem(await signup(client, new_user("x", email=email)), 400, "email")
    with subtests.test(email="255 characters"):
        assert_problem(await signup(client, new_user("x", email=too_long)), 400, "email")


@pytest.mark.parametrize(
    "password", ["48213579a", "pqzxwrvt", "p" * 1024, "        "], ids=["8+", "8", "1024", "spaces"]
)
async def test_valid_passwords_are_accepted(client: Client, password: str) -> None:
    r = await signup(client, new_user("pw", password=password))
    assert r.status_code == 201, r.text
    token = await client.post("/api/v1/auth/token/", json={"username": "pw", "password": password})
    assert token.status_code == 200, token.text


async def test_invalid_passwords_are_400(client: Client, subtests: pytest.Subtests) -> None:
    for password in ["", "short", "p" * 7, "p" * 1025, "12345678", "0" * 20]:
        with subtests.test(length=len(password), password=password[:20]):
            assert_problem(await signup(client, new_user("x", password=password)), 400, "password")


async def test_a_rejected_signup_creates_no_user(api: Api) -> None:
    r = await signup(api.client, new_user("ghost", password="short"))
    assert r.status_code == 400
    # The username is still free.
    assert (await signup(api.client, new_user("ghost"))).status_code == 201


async def test_taken_username_is_409_ignoring_case(client: Client) -> None:
    assert (await signup(client, new_user("Alice"))).status_code == 201
    r = await signup(client, new_user("aLICE", email="other@example.com"))
    assert_problem(r, 409)


async def test_taken_email_is_409_ignoring_case(client: Client) -> None:
    assert (await signup(client, new_user("alice", email="Alice@Example.com"))).status_code == 201
    r = await signup(client, new_user("bob", email="ALICE@example.COM"))
    assert_problem(r, 409)


async def test_unknown_fields_are_ignored_and_never_applied(client: Client) -> None:
    body = new_user(
        "mallory",
        id=424242,
        date_joined="2000-01-01T00:00:00Z",
        last_seen_at="2000-01-01T00:00:00Z",
        role="admin",
        is_admin=True,
    )
    r = await signup(client, body)
    assert r.status_code == 201, r.text
    user = r.json()
    assert user["id"] != 424242
    assert not user["date_joined"].startswith("2000-")
    assert user["last_seen_at"] is None
    assert "role" not in user
    assert "is_admin" not in user


# ---------------------------------------------------------------- look up


async def test_get_without_parameters_returns_the_caller_with_email(api: Api) -> None:
    alice = await api.signup()
    r = await api.get(USERS, alice)
    assert r.status_code == 200, r.text
    me = r.json()
    assert set(me) >= USER_FIELDS
    assert (me["id"], me["username"], me["email"]) == (alice.id, alice.username, alice.email)


async def test_get_by_id_returns_the_user_without_email(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    r = await api.get(USERS, alice, user_id=bob.id)
    assert r.status_code == 200, r.text
    other = r.json()
    assert (other["id"], other["username"]) == (bob.id, bob.username)
    assert "email" not in other
    assert bob.email not in r.text


async def test_get_by_own_id_shows_the_email(api: Api) -> None:
    alice = await api.signup()
    r = await api.get(USERS, alice, user_id=alice.id)
    assert r.json()["email"] == alice.email


async def test_get_by_username_ignores_case(api: Api) -> None:
    alice = await api.signup()
    bob = await api.signup("Bob.Smith")
    for name in ("Bob.Smith", "bob.smith", "BOB.SMITH"):
        r = await api.get(USERS, alice, username=name)
        assert r.status_code == 200, (name, r.text)
        assert r.json()["id"] == bob.id
        assert "email" not in r.json()


async def test_get_unknown_user_is_404(api: Api) -> None:
    alice = await api.signup()
    assert_problem(await api.get(USERS, alice, user_id=alice.id + 1000), 404)
    assert_problem(await api.get(USERS, alice, username="nobody"), 404)


async def test_get_by_username_is_exact_not_a_prefix(api: Api) -> None:
    alice = await api.signup("alice")
    assert_problem(await api.get(USERS, alice, username="ali"), 404)


async def test_get_needs_authentication(client: Client) -> None:
    r = await client.get(USERS)
    assert_problem(r, 401)
    assert r.headers["WWW-Authenticate"]


async def test_last_seen_is_null_until_the_first_fetch_then_set(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    assert (await api.get(USERS, alice)).json()["last_seen_at"] is None
    assert (await api.get(USERS, bob, user_id=alice.id)).json()["last_seen_at"] is None

    before = datetime.now(UTC) - timedelta(seconds=5)
    await api.inbox(alice)

    seen = (await api.get(USERS, alice)).json()["last_seen_at"]
    assert assert_utc_timestamp(seen) >= before
    assert (await api.get(USERS, bob, user_id=alice.id)).json()["last_seen_at"] == seen


async def test_later_fetches_move_last_seen_forward_in_the_background(
    database_url: str,
) -> None:
    """After the first fetch, fetches only note their time; the background writer stores
    it (one transaction per resolution period for every noted user)."""
    fast = Settings(database_url=database_url, last_seen_resolution_seconds=0.05)
    await asyncio.to_thread(upgrade, fast.database_url)
    async with AsyncTestClient(app=create_app(fast)) as client:
        api = Api(client)
        alice = await api.signup()
        await api.inbox(alice)
        first = (await api.get(USERS, alice)).json()["last_seen_at"]
        async with asyncio.timeout(10):
            while (await api.get(USERS, alice)).json()["last_seen_at"] == first:
                await api.inbox(alice)
                await asyncio.sleep(0.05)
        later = (await api.get(USERS, alice)).json()["last_seen_at"]
    assert assert_utc_timestamp(later) > assert_utc_timestamp(first)


async def test_sending_does_not_set_last_seen(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    await api.send(alice, bob.id)
    assert (await api.get(USERS, alice)).json()["last_seen_at"] is None


# ---------------------------------------------------------------- delete


async def test_delete_is_204_and_the_token_stops_working(api: Api) -> None:
    alice = await api.signup()
    second_token = await api.login(alice.username)
    r = await api.client.delete(USERS, headers=alice.auth)
    assert r.status_code == 204, r.text
    assert r.content == b""
    for token in (alice.token, second_token):
        r = await api.client.get(USERS, headers={"Authorization": f"Bearer {token}"})
        assert_problem(r, 401)
        assert r.headers["WWW-Authenticate"]


async def test_deleted_user_cannot_log_in_or_use_basic_auth(api: Api) -> None:
    alice = await api.signup()
    await api.client.delete(USERS, headers=alice.auth)
    r = await api.client.post(
        "/api/v1/auth/token/", json={"username": alice.username, "password": PASSWORD}
    )
    assert_problem(r, 401)
    assert_problem(await api.client.get(USERS, headers=alice.basic), 401)


async def test_deleted_user_profile_is_404(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    await api.client.delete(USERS, headers=alice.auth)
    assert_problem(await api.get(USERS, bob, user_id=alice.id), 404)
    assert_problem(await api.get(USERS, bob, username=alice.username), 404)


async def test_sending_to_a_deleted_user_is_404(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    await api.client.delete(USERS, headers=alice.auth)
    r = await api.client.post(CHATS, json={"user_id": alice.id, "message": "hi"}, headers=bob.auth)
    assert_problem(r, 404)


async def test_deleted_user_keeps_sent_messages_in_recipients_history(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    sent = await api.send(alice, bob.id, "remember me")
    await api.client.delete(USERS, headers=alice.auth)

    inbox = await api.inbox(bob)
    assert [m["id"] for m in inbox["messages"]] == [sent["id"]]
    kept = inbox["messages"][0]
    assert (kept["sent_by"], kept["message"]) == (alice.id, "remember me")
    conversation = await api.inbox(bob, **{"with": alice.id})
    assert [m["id"] for m in conversation["messages"]] == [sent["id"]]


async def test_deleted_user_received_messages_are_gone(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    to_alice = await api.send(bob, alice.id, "to alice")
    to_bob = await api.send(alice, bob.id, "to bob")
    await api.client.delete(USERS, headers=alice.auth)

    conversation = await api.inbox(bob, **{"with": alice.id})
    ids = [m["id"] for m in conversation["messages"]]
    assert to_alice["id"] not in ids
    assert ids == [to_bob["id"]]
    assert conversation["meta"]["count"] == 1


async def test_deleted_username_and_email_can_register_again_with_a_new_id(api: Api) -> None:
    alice = await api.signup()
    await api.client.delete(USERS, headers=alice.auth)
    again = await api.signup(alice.username)
    assert again.email == alice.email
    assert again.id != alice.id
    me = (await api.get(USERS, again)).json()
    assert (me["id"], me["email"]) == (again.id, alice.email)


async def test_new_account_with_a_reused_name_sees_none_of_the_old_messages(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    await api.send(bob, alice.id, "for the old alice")
    await api.client.delete(USERS, headers=alice.auth)
    again = await api.signup(alice.username)
    inbox = await api.inbox(again)
    assert inbox["messages"] == []
    assert inbox["meta"]["count"] == 0


async def test_delete_leaves_other_users_alone(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    await api.client.delete(USERS, headers=alice.auth)
    assert (await api.get(USERS, bob)).status_code == 200
    await api.send(bob, bob.id, "still here")


async def test_delete_needs_authentication(client: Client) -> None:
    r = await client.delete(USERS)
    assert_problem(r, 401)
    assert r.headers["WWW-Authenticate"]


async def test_delete_with_basic_auth_works(api: Api) -> None:
    alice = await api.signup()
    r = await api.client.delete(USERS, headers=alice.basic)
    assert r.status_code == 204, r.text
    assert_problem(await api.client.get(USERS, headers=alice.auth), 401)


async def test_ids_of_deleted_users_and_messages_are_never_reused(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    newest_message = await api.send(alice, bob.id, "deleted with bob")
    await api.client.delete(USERS, headers=bob.auth)  # bob is the newest user, too

    carol = await api.signup()
    assert carol.id > bob.id
    assert (await api.send(alice, carol.id, "after"))["id"] > newest_message["id"]
