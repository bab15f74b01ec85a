"""CHAT_REGISTRATION: open (anyone), invite (a code from the command line, single- or
multi-use, with expiry), closed (403 for everyone), on each database."""

from __future__ import annotations

import httpx

from chatserver.admin import actions
from chatserver.admin.actions import Admin
from chatserver.auth import token_hash
from chatserver.config import Settings
from chatserver.db import now_us
from chatserver.store import admin as store_admin
from tests.helpers import PASSWORD, assert_problem, concurrent_app


def body(name: str, invite: str | None = None) -> dict[str, str]:
    fields = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    return fields if invite is None else {**fields, "invite": invite}


async def signup(client: httpx.AsyncClient, name: str, invite: str | None = None) -> httpx.Response:
    return await client.post("/api/v1/users/", json=body(name, invite))


async def test_open_registration_lets_anyone_sign_up(database_url: str) -> None:
    async with concurrent_app(Settings(database_url=database_url)) as (_, client):
        assert (await signup(client, "anyone")).status_code == 201


async def test_closed_registration_refuses_everyone(database_url: str) -> None:
    settings = Settings(database_url=database_url, registration="closed")
    async with concurrent_app(settings) as (app, client):
        problem = assert_problem(await signup(client, "nobody"), 403)
        assert "closed" in problem["detail"]
        code, _ = await actions.create_invite(Admin(app.state.services.db), 1, None)
        assert_problem(await signup(client, "nobody", code), 403)  # not even with a code
        user = await actions.create_account(
            Admin(app.state.services.db), "made", "made@example.com", PASSWORD
        )
        login = {"username": "made", "password": PASSWORD}
        r = await client.post("/api/v1/auth/token/", json=login)
        assert r.status_code == 200
        assert r.json()["user"]["id"] == user.id


async def test_invite_registration_needs_a_valid_code(database_url: str) -> None:
    settings = Settings(database_url=database_url, registration="invite")
    async with concurrent_app(settings) as (app, client):
        admin = Admin(app.state.services.db)
        assert "invite" in assert_problem(await signup(client, "a"), 403)["detail"]
        assert_problem(await signup(client, "a", "not-a-code"), 403)
        single, _ = await actions.create_invite(admin, 1, None)
        assert (await signup(client, "a", single)).status_code == 201
        assert_problem(await signup(client, "b", single), 403)  # used up
        multi, _ = await actions.create_invite(admin, 2, 7)
        # A sign-up that fails (the name is taken) does not use the code up.
        assert (await signup(client, "a", multi)).status_code == 409
        assert (await signup(client, "b", multi)).status_code == 201
        assert (await signup(client, "c", multi)).status_code == 201
        assert_problem(await signup(client, "d", multi), 403)
        revoked, _ = await actions.create_invite(admin, 1, None)
        await actions.revoke_invite(admin, revoked, None)
        assert_problem(await signup(client, "d", revoked), 403)


async def test_an_expired_invite_is_refused(database_url: str) -> None:
    settings = Settings(database_url=database_url, registration="invite")
    async with concurrent_app(settings) as (app, client):
        code = "an-expired-code"
        async with app.state.services.db.transaction() as conn:  # expired a second ago
            now = now_us()
            await store_admin.insert_invite(conn, token_hash(code), 5, now - 1_000_000, now)
        assert "expired" in assert_problem(await signup(client, "late", code), 403)["detail"]


async def test_invite_codes_are_stored_hashed(database_url: str) -> None:
    from tests.helpers import query_database

    async with concurrent_app(Settings(database_url=database_url)) as (app, _):
        code, _ = await actions.create_invite(Admin(app.state.services.db), 1, None)
    stored = query_database(database_url, "SELECT code_hash FROM invites")
    assert stored
    assert code not in str(stored)
