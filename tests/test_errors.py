"""Errors: every one is RFC 9457 problem+json, and no input, however malformed, gets a 5xx."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.helpers import PASSWORD, Api, assert_problem, post_raw

Client = AsyncTestClient  # type: ignore[type-arg]

USERS = "/api/v1/users/"
TOKEN = "/api/v1/auth/token/"
CHATS = "/api/v1/chats/"
KIB = 1024


def signup_body(**overrides: Any) -> dict[str, Any]:
    return {"username": "alice", "email": "alice@example.com", "password": PASSWORD, **overrides}


# ---------------------------------------------------------------- malformed bodies


@pytest.mark.parametrize("path", [USERS, TOKEN])
@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"username": "a",}',
        b"",
        b"[]",
        b'["alice", "alice@example.com", "password1"]',
        b'"a string"',
        b"42",
        b"null",
        b"\xff\xfe\x00",
    ],
    ids=[
        "broken",
        "trailing-comma",
        "empty",
        "empty-array",
        "array",
        "string",
        "number",
        "null",
        "not-utf8",
    ],
)
async def test_malformed_body_without_auth_is_400(client: Client, path: str, body: bytes) -> None:
    assert_problem(await post_raw(client, path, body), 400)


MALFORMED_MESSAGE_BODIES = [
    b"{not json",
    b"",
    b"[]",
    b'[{"user_id": 1, "message": "hi"}]',
    b'"hi"',
    b"null",
    b"\xff\xfe",
]


async def test_malformed_message_body_is_400(api: Api, subtests: pytest.Subtests) -> None:
    alice = await api.signup()
    for body in MALFORMED_MESSAGE_BODIES:
        with subtests.test(body=body):
            assert_problem(await post_raw(api.client, CHATS, body, alice.auth), 400)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": 5, "email": "a@example.com", "password": PASSWORD}, "username"),
        ({"username": "alice", "email": ["a@example.com"], "password": PASSWORD}, "email"),
        ({"username": "alice", "email": "a@example.com", "password": None}, "password"),
        ({"email": "a@example.com", "password": PASSWORD}, "username"),
        ({"username": "alice", "password": PASSWORD}, "email"),
        ({"username": "alice", "email": "a@example.com"}, "password"),
    ],
    ids=["username-int", "email-list", "password-null", "no-username", "no-email", "no-password"],
)
async def test_wrong_type_or_missing_field_in_signup_names_the_field(
    client: Client, body: dict[str, Any], field: str
) -> None:
    assert_problem(await client.post(USERS, json=body), 400, field)


MESSAGE_FIELD_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"user_id": 1.5, "message": "hi"}, "user_id"),
    ({"user_id": True, "message": "hi"}, "user_id"),
    ({"user_id": None, "message": "hi"}, "user_id"),
    ({"user_id": 2**70, "message": "hi"}, "user_id"),
    ({"user_id": -(2**70), "message": "hi"}, "user_id"),
    ({"user_id": 2**63, "message": "hi"}, "user_id"),
    ({"user_id": 0, "message": "hi"}, "user_id"),
    ({"user_id": -1, "message": "hi"}, "user_id"),
    ({"user_id": 1, "message": 5}, "message"),
    ({"user_id": 1, "message": None}, "message"),
    ({"user_id": 1, "message": {"text": "hi"}}, "message"),
    ({"user_id": 1, "message": ["hi"]}, "message"),
    ({"message": "hi"}, "user_id"),
    ({"user_id": 1}, "message"),
]


async def test_wrong_type_or_range_in_a_message_names_the_field(
    api: Api, subtests: pytest.Subtests
) -> None:
    alice = await api.signup()
    for body, field in MESSAGE_FIELD_ERRORS:
        with subtests.test(body=body):
            r = await api.client.post(CHATS, json=body, headers=alice.auth)
            assert_problem(r, 400, field)


@pytest.mark.parametrize("spelling", ['"{}"', "{}.0", "{}e0"])
async def test_user_id_that_is_not_a_json_integer_is_400(api: Api, spelling: str) -> None:
    alice = await api.signup()
    body = f'{{"user_id": {spelling.format(alice.id)}, "message": "hi"}}'.encode()
    assert_problem(await post_raw(api.client, CHATS, body, alice.auth), 400, "user_id")


async def test_huge_integer_written_as_a_literal_is_400(api: Api) -> None:
    alice = await api.signup()
    body = b'{"user_id": ' + b"9" * 5000 + b', "message": "hi"}'
    assert_problem(await post_raw(api.client, CHATS, body, alice.auth), 400)


async def test_deeply_nested_json_is_400(api: Api) -> None:
    alice = await api.signup()
    body = b'{"user_id": 1, "message": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    r = await post_raw(api.client, CHATS, body, alice.auth)
    assert_problem(r, 400)


async def test_token_request_with_a_wrong_type_names_the_field(client: Client) -> None:
    r = await client.post(TOKEN, json={"username": "alice", "password": ["x"]})
    assert_problem(r, 400, "password")


@pytest.mark.parametrize(
    "body", [{}, {"username": 5, "email": 5, "password": 5}], ids=["all-missing", "all-ints"]
)
async def test_every_wrongly_typed_or_missing_field_is_named(
    client: Client, body: dict[str, Any]
) -> None:
    assert_problem(await client.post(USERS, json=body), 400, "username", "email", "password")


# ---------------------------------------------------------------- NUL and lone surrogates

NUL = "\\u0000"
SURROGATES = ["\\ud800", "\\udfff", "a\\udc00b", "\\ud800\\ud800"]


def json_bytes(template: str, bad: str) -> bytes:
    """A JSON document (escapes written out literally, so the client cannot "fix" them)."""
    return template.replace("BAD", bad).encode()


async def test_unstorable_characters_in_a_message_are_400(
    api: Api, subtests: pytest.Subtests
) -> None:
    alice = await api.signup()
    template = f'{{"user_id": {alice.id}, "message": "hi BAD there"}}'
    with subtests.test("NUL names the field"):
        r = await post_raw(api.client, CHATS, json_bytes(template, NUL), alice.auth)
        assert_problem(r, 400, "message")
    for bad in SURROGATES:
        with subtests.test("lone surrogate", escape=bad):
            r = await post_raw(api.client, CHATS, json_bytes(template, bad), alice.auth)
            assert_problem(r, 400)
    with subtests.test("UTF-8 encoded surrogate"):
        raw = template.replace("BAD", "").encode().replace(b"hi ", b"hi \xed\xa0\x80")
        assert_problem(await post_raw(api.client, CHATS, raw, alice.auth), 400)


async def test_invalid_utf8_inside_a_json_string_is_400(client: Client) -> None:
    body = b'{"username": "al\xffice", "email": "a@example.com", "password": "pw-123456"}'
    assert_problem(await post_raw(client, USERS, body), 400)


SIGNUP_TEMPLATES = {
    "username": '{"username": "alBADice", "email": "a@example.com", "password": "pw-123456"}',
    "email": '{"username": "alice", "email": "aBAD@example.com", "password": "pw-123456"}',
    "password": '{"username": "alice", "email": "a@example.com", "password": "pw-1BAD23456"}',
}
LOGIN_TEMPLATES = {
    "username": '{"username": "alBADice", "password": "pw-123456"}',
    "password": '{"username": "alice", "password": "pw-1BAD23456"}',
}


@pytest.mark.parametrize("field", SIGNUP_TEMPLATES)
async def test_nul_in_a_signup_field_is_400_naming_it(client: Client, field: str) -> None:
    r = await post_raw(client, USERS, json_bytes(SIGNUP_TEMPLATES[field], NUL))
    assert_problem(r, 400, field)


@pytest.mark.parametrize("field", SIGNUP_TEMPLATES)
async def test_lone_surrogate_in_a_signup_field_is_400(client: Client, field: str) -> None:
    r = await post_raw(client, USERS, json_bytes(SIGNUP_TEMPLATES[field], SURROGATES[0]))
    assert_problem(r, 400)


@pytest.mark.parametrize("field", LOGIN_TEMPLATES)
async def test_nul_in_a_login_field_is_400_naming_it(client: Client, field: str) -> None:
    r = await post_raw(client, TOKEN, json_bytes(LOGIN_TEMPLATES[field], NUL))
    assert_problem(r, 400, field)


@pytest.mark.parametrize("field", LOGIN_TEMPLATES)
async def test_lone_surrogate_in_a_login_field_is_400(client: Client, field: str) -> None:
    r = await post_raw(client, TOKEN, json_bytes(LOGIN_TEMPLATES[field], SURROGATES[0]))
    assert_problem(r, 400)


async def test_unstorable_username_lookup_is_400(api: Api, subtests: pytest.Subtests) -> None:
    alice = await api.signup()
    for value in ["al\x00ice", "\x00"]:
        with subtests.test(username=value):
            r = await api.client.get(USERS, params={"username": value}, headers=alice.auth)
            assert_problem(r, 400, "username")
    with subtests.test("invalid UTF-8 percent-escapes"):
        r = await api.client.get(USERS + "?username=%ED%A0%80%FF", headers=alice.auth)
        assert r.status_code in (400, 404), r.text
        assert_problem(r, r.status_code)


@pytest.mark.parametrize("credentials", [b"al\x00ice:" + PASSWORD.encode(), b"\xff\xfe:pw"])
async def test_unstorable_basic_credentials_are_401(client: Client, credentials: bytes) -> None:
    header = "Basic " + base64.b64encode(credentials).decode()
    r = await client.get(USERS, headers={"Authorization": header})
    assert_problem(r, 401)
    assert "WWW-Authenticate" in r.headers


# ---------------------------------------------------------------- query parameters


INBOX_PARAMETER_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"page": 10**20}, "page"),
    ({"page": 0}, "page"),
    ({"page": -1}, "page"),
    ({"page": "one"}, "page"),
    ({"page": ""}, "page"),
    ({"page": 1.5}, "page"),
    ({"page_size": 101}, "page_size"),
    ({"page_size": 0}, "page_size"),
    ({"page_size": 10**20}, "page_size"),
    ({"page_size": "ten"}, "page_size"),
    ({"before_id": 2**70}, "before_id"),
    ({"before_id": -1}, "before_id"),
    ({"after_id": 2**70}, "after_id"),
    ({"after_id": "x"}, "after_id"),
    ({"with": 2**70}, "with"),
    ({"with": "bob"}, "with"),
    ({"unread": "maybe"}, "unread"),
    ({"unread": ""}, "unread"),
    ({"page": ["1", "2"]}, "page"),  # given twice: which one was meant is a guess
    ({"wait": "nan", "after_id": 1}, "wait"),
    ({"wait": "31", "after_id": 1}, "wait"),
]


async def test_bad_inbox_query_parameter_is_400_naming_it(
    api: Api, subtests: pytest.Subtests
) -> None:
    alice = await api.signup()
    for params, field in INBOX_PARAMETER_ERRORS:
        with subtests.test(params=params):
            r = await api.client.get(CHATS, params=params, headers=alice.auth)
            assert_problem(r, 400, field)


async def test_query_parameters_take_any_case_of_true_and_ignore_unknown_ones(api: Api) -> None:
    alice = await api.signup()
    for params in [{"unread": "TRUE"}, {"unread": "1"}, {"colour": "blue"}]:
        r = await api.client.get(CHATS, params=params, headers=alice.auth)
        assert r.status_code == 200, (params, r.text)


async def test_escaped_query_values_are_decoded_and_a_plus_is_a_space(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup(username="bob.s+x")
    escaped = await api.client.get(f"{USERS}?username=Bob.S%2Bx&&", headers=alice.auth)
    assert escaped.status_code == 200
    assert escaped.json()["id"] == bob.id
    plus = await api.client.get(f"{USERS}?username=bob.s+x", headers=alice.auth)
    assert_problem(plus, 404)  # "bob.s x": nobody


async def test_a_username_that_is_not_utf8_is_400_naming_it(api: Api) -> None:
    alice = await api.signup()
    r = await api.client.get(f"{USERS}?username=%FF%FE", headers=alice.auth)
    assert_problem(r, 400, "username")


async def test_bad_user_id_lookup_is_400_naming_it(api: Api, subtests: pytest.Subtests) -> None:
    alice = await api.signup()
    for user_id in [2**70, 2**63, 0, -5, "abc", ""]:
        with subtests.test(user_id=user_id):
            r = await api.client.get(USERS, params={"user_id": user_id}, headers=alice.auth)
            assert_problem(r, 400, "user_id")


# ---------------------------------------------------------------- size and media type


async def test_body_over_64_kib_is_413(api: Api) -> None:
    alice = await api.signup()
    body = json.dumps({"user_id": alice.id, "message": "x" * (64 * KIB)}).encode()
    assert_problem(await post_raw(api.client, CHATS, body, alice.auth), 413)


async def test_ten_megabyte_body_is_413(client: Client) -> None:
    body = b'{"username": "' + b"a" * (10 * KIB * KIB) + b'"}'
    assert_problem(await post_raw(client, USERS, body), 413)


async def test_body_just_under_64_kib_is_not_413(api: Api) -> None:
    alice = await api.signup()
    padding = 64 * KIB - 200
    body = json.dumps({"user_id": alice.id, "message": "x", "pad": "p" * padding}).encode()
    assert len(body) < 64 * KIB
    r = await post_raw(api.client, CHATS, body, alice.auth)
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
async def test_wrong_content_type_is_415(client: Client, content_type: str) -> None:
    body = json.dumps(signup_body()).encode()
    r = await post_raw(client, USERS, body, content_type=content_type)
    assert_problem(r, 415)


async def test_body_without_content_type_is_415(client: Client) -> None:
    body = json.dumps(signup_body()).encode()
    r = await client.post(USERS, content=body, headers={"Content-Type": ""})
    assert_problem(r, 415)


async def test_json_content_type_with_charset_is_accepted(client: Client) -> None:
    body = json.dumps(signup_body()).encode()
    r = await post_raw(client, USERS, body, content_type="application/json; charset=utf-8")
    assert r.status_code == 201, r.text


# ---------------------------------------------------------------- routing


@pytest.mark.parametrize(
    "path",
    ["/nope", "/api/v1/nope/", "/api/v2/users/", "/api/v1/users/7", "/api/v1/chats/7/nope/"],
)
async def test_unknown_route_is_404(client: Client, path: str) -> None:
    assert_problem(await client.get(path), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", USERS),
        ("PATCH", USERS),
        ("GET", TOKEN),
        ("PUT", CHATS),
        ("DELETE", CHATS),
        ("GET", "/api/v1/chats/7/"),
        ("POST", "/healthz"),
    ],
)
async def test_wrong_method_is_405(client: Client, method: str, path: str) -> None:
    r = await client.request(method, path, json={})
    assert_problem(r, 405)


# ---------------------------------------------------------------- problem shape


async def test_invalid_fields_are_each_named(client: Client) -> None:
    body = {"username": "bad name!", "email": "not-an-email", "password": "short"}
    problem = assert_problem(await client.post(USERS, json=body), 400, "username", "email")
    assert set(problem["errors"]) == {"username", "email", "password"}
    assert all(problem["errors"][f] and isinstance(problem["errors"][f][0], str) for f in body)


async def test_problem_type_is_a_uri(client: Client) -> None:
    problem = assert_problem(await client.get("/nope"), 404)
    assert problem["type"].startswith(("https://", "http://", "about:blank"))


# ---------------------------------------------------------------- request ids


async def test_every_success_carries_a_request_id(api: Api) -> None:
    alice = await api.signup()
    for r in [
        await api.client.get(USERS, headers=alice.auth),
        await api.client.get(CHATS, headers=alice.auth),
        await api.client.get("/healthz"),
    ]:
        assert r.status_code == 200
        assert r.headers.get("X-Request-ID"), r.headers


@pytest.mark.parametrize(
    ("method", "path", "content_type", "body", "status"),
    [
        ("GET", "/nope", None, None, 404),
        ("PUT", USERS, "application/json", b"{}", 405),
        ("POST", USERS, "application/json", b"[", 400),
        ("POST", USERS, "text/plain", b"hi", 415),
        ("POST", USERS, "application/json", b"x" * (65 * KIB), 413),
        ("GET", CHATS, None, None, 401),
    ],
)
async def test_every_error_carries_a_request_id(
    client: Client,
    method: str,
    path: str,
    content_type: str | None,
    body: bytes | None,
    status: int,
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    r = await client.request(method, path, content=body, headers=headers)
    assert_problem(r, status)
    assert r.headers.get("X-Request-ID"), r.headers


async def test_request_ids_differ_between_requests(client: Client) -> None:
    first = await client.get("/healthz")
    second = await client.get("/healthz")
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


async def test_a_plain_incoming_request_id_is_echoed(client: Client) -> None:
    r = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["X-Request-ID"] == "abc-123"


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/nope", 404), ("PUT", USERS, 405)])
async def test_the_routers_own_errors_echo_the_incoming_request_id(
    client: Client, method: str, path: str, status: int
) -> None:
    """404 and 405 are answered before any route runs; they carry the caller's id too,
    once, so a client can match them with its logs."""
    r = await client.request(method, path, headers={"X-Request-ID": "trace-42"})
    assert_problem(r, status)
    assert r.headers.get_list("X-Request-ID") == ["trace-42"]


# ---------------------------------------------------------------- trailing slashes


async def test_every_path_works_with_and_without_trailing_slash(api: Api) -> None:
    alice = await api.signup()
    login = {"username": alice.username, "password": PASSWORD}
    for n, slash in enumerate(("", "/")):
        newcomer = {"username": f"new{n}", "email": f"new{n}@example.com", "password": PASSWORD}
        requests: list[tuple[str, str, dict[str, Any] | None, int]] = [
            ("POST", "/api/v1/users", newcomer, 201),
            ("GET", "/api/v1/users", None, 200),
            ("POST", "/api/v1/auth/token", login, 200),
            ("POST", "/api/v1/chats", {"user_id": alice.id, "message": "hi"}, 201),
            ("GET", "/api/v1/chats", None, 200),
            ("GET", "/healthz", None, 200),
        ]
        for method, path, body, status in requests:
            r = await api.client.request(
                method, path + slash, json=body, headers=alice.auth, follow_redirects=False
            )
            assert r.status_code == status, (method, path + slash, r.status_code, r.text)


@pytest.mark.parametrize("path", ["/api/v1/auth/token", "/api/v1/users"])
async def test_delete_works_with_and_without_trailing_slash(api: Api, path: str) -> None:
    for slash in ("", "/"):
        user = await api.signup()
        r = await api.client.delete(path + slash, headers=user.auth, follow_redirects=False)
        assert r.status_code == 204, (path + slash, r.status_code, r.text)


@pytest.mark.parametrize("path", ["/openapi.json", "/docs"])
async def test_documentation_paths_never_redirect(client: Client, path: str) -> None:
    for variant in (path, path + "/"):
        r = await client.get(variant, follow_redirects=False)
        assert r.status_code == 200, (variant, r.status_code)
