"""api/route.py, the adapter every route is written with, on a small app of its own routes:
how it reads a query, headers and a body (and names every bad field), what it answers, and
what it puts in the OpenAPI document. The caller (authentication) needs the app's services,
so that route is also registered on a real app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pytest
from litestar import Litestar
from litestar.datastructures import State
from litestar.testing import AsyncTestClient, TestClient

from chatserver.api import route
from chatserver.api.deps import Caller
from chatserver.api.readers import QueryReader
from chatserver.app import create_app
from chatserver.config import Settings
from chatserver.errors import InvalidInput
from chatserver.migrations import upgrade
from chatserver.problems import EXCEPTION_HANDLERS
from tests.helpers import Api, assert_problem

# ---------------------------------------------------------------- a small app


class Page(msgspec.Struct, frozen=True):
    page: Annotated[int, msgspec.Meta(ge=1, le=1000, description="Which page")] = 1
    size: Annotated[int, msgspec.Meta(ge=1, le=50)] = 10
    tag: Annotated[str, msgspec.Meta(max_length=5)] | None = None
    exact: bool = False


class Tags(msgspec.Struct, frozen=True):
    tag: Annotated[str, msgspec.Meta(max_length=5, description="A short tag")] | None = (
        msgspec.field(default=None, name="X-Tag")
    )


class Listing(msgspec.Struct):
    page: int
    size: int
    tag: str | None
    exact: bool
    header_tag: str | None


class Note(msgspec.Struct, frozen=True):
    to: Annotated[int, msgspec.Meta(ge=1, examples=[7])]
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=20, examples=["hello"])]
    urgent: bool = False


class NoteOut(msgspec.Struct):
    to: int
    text: str
    urgent: bool


class Me(msgspec.Struct):
    user_id: int


@route.get("/items")
async def list_items(query: Page, headers: Tags) -> Listing:
    """List items (public)."""
    return Listing(query.page, query.size, query.tag, query.exact, headers.tag)


@route.post("/notes")
async def create_note(body: Note) -> NoteOut:
    """Write a note."""
    return NoteOut(body.to, body.text, body.urgent)


@route.delete("/notes")
async def forget_notes() -> None:
    """Forget every note."""


@route.get("/test-only/me")
async def whoami(caller: Caller) -> Me:
    """Who is asking."""
    return Me(caller.user_id)


def small_app() -> Litestar:
    return Litestar(
        route_handlers=[list_items, create_note, forget_notes, whoami],
        exception_handlers=EXCEPTION_HANDLERS,
        # The adapter looks the services up on every request; these routes use none.
        state=State({"services": None}),
    )


@pytest.fixture(scope="module")
def small() -> Iterator[TestClient[Litestar]]:
    with TestClient(app=small_app()) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    document: dict[str, Any] = small_app().openapi_schema.to_schema()
    return document


def errors_of(r: Any, status: int = 400) -> dict[str, list[str]]:
    """The problem's errors, by field (after checking it is an RFC 9457 problem)."""
    errors: dict[str, list[str]] = assert_problem(r, status).get("errors", {})
    return errors


# ---------------------------------------------------------------- the query string


def test_the_query_is_converted_from_text(small: TestClient[Litestar]) -> None:
    r = small.get("/items", params={"page": "3", "size": "7", "tag": "red", "exact": "true"})
    assert r.status_code == 200, r.text
    assert r.json() == {"page": 3, "size": 7, "tag": "red", "exact": True, "header_tag": None}


def test_an_absent_query_parameter_takes_its_default(small: TestClient[Litestar]) -> None:
    r = small.get("/items")
    assert r.status_code == 200, r.text
    assert r.json() == {"page": 1, "size": 10, "tag": None, "exact": False, "header_tag": None}


def test_every_bad_query_parameter_is_named_in_one_problem(small: TestClient[Litestar]) -> None:
    r = small.get("/items", params={"page": "0", "size": "many", "tag": "too long", "exact": "?"})
    assert set(errors_of(r)) == {"page", "size", "tag", "exact"}


def test_unknown_query_parameters_are_ignored(small: TestClient[Litestar]) -> None:
    r = small.get("/items", params={"page": "2", "nonsense": "1", "Page": "x"})
    assert r.status_code == 200, r.text
    assert r.json()["page"] == 2


class Since(msgspec.Struct, frozen=True):
    since: int | None = None
    word: str | None = None


@pytest.mark.parametrize("null", ["null", "NULL", "Null"])
def test_a_null_query_parameter_is_refused_and_a_null_word_is_a_word(null: str) -> None:
    reader = QueryReader(Since)
    with pytest.raises(InvalidInput) as refused:
        reader.read_scope({"query_string": f"since={null}".encode()})
    assert refused.value.errors == {"since": ["omit the parameter instead of giving null"]}
    assert reader.read_scope({"query_string": f"word={null}".encode()}) == Since(word=null)
    assert reader.read_scope({"query_string": b"since=7"}) == Since(since=7)


def test_a_query_parameter_given_twice_is_400(small: TestClient[Litestar]) -> None:
    r = small.get("/items?page=1&size=5&page=2")
    assert errors_of(r) == {"page": ["given more than once"]}


def test_a_query_parameter_given_twice_is_400_even_with_the_same_value(
    small: TestClient[Litestar],
) -> None:
    assert set(errors_of(small.get("/items?exact=true&exact=true"))) == {"exact"}


# ---------------------------------------------------------------- headers


def test_headers_are_read_by_name_in_any_case(small: TestClient[Litestar]) -> None:
    for name in ("X-Tag", "x-tag", "X-TAG"):
        r = small.get("/items", headers={name: "blue"})
        assert r.status_code == 200, r.text
        assert r.json()["header_tag"] == "blue", name


def test_a_bad_header_is_named(small: TestClient[Litestar]) -> None:
    r = small.get("/items", headers={"X-Tag": "far too long"})
    assert set(errors_of(r)) == {"X-Tag"}


# ---------------------------------------------------------------- the body


def test_a_valid_body_is_read_and_a_post_answers_201(small: TestClient[Litestar]) -> None:
    r = small.post("/notes", json={"to": 7, "text": "hello", "urgent": True})
    assert r.status_code == 201, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"to": 7, "text": "hello", "urgent": True}


def test_the_body_is_typed_strictly(small: TestClient[Litestar]) -> None:
    for to in ("1", True, 1.5, None):
        r = small.post("/notes", json={"to": to, "text": "hello"})
        assert set(errors_of(r)) == {"to"}, to
    r = small.post("/notes", json={"to": 1, "text": "hello", "urgent": 1})
    assert set(errors_of(r)) == {"urgent"}


def test_every_bad_body_field_is_named_in_one_problem(small: TestClient[Litestar]) -> None:
    r = small.post("/notes", json={"to": "1", "text": "", "urgent": "yes"})
    assert set(errors_of(r)) == {"to", "text", "urgent"}


def test_missing_required_body_fields_are_named(small: TestClient[Litestar]) -> None:
    errors = errors_of(small.post("/notes", json={"urgent": False}))
    assert errors == {"to": ["this field is required"], "text": ["this field is required"]}


def test_unknown_body_fields_are_ignored(small: TestClient[Litestar]) -> None:
    r = small.post("/notes", json={"to": 7, "text": "hello", "colour": "red"})
    assert r.status_code == 201, r.text
    assert r.json() == {"to": 7, "text": "hello", "urgent": False}


@pytest.mark.parametrize("raw", [b"{", b"[1, 2]", b'"text"', b""])
def test_a_body_that_is_not_a_json_object_is_400(small: TestClient[Litestar], raw: bytes) -> None:
    r = small.post("/notes", content=raw, headers={"Content-Type": "application/json"})
    assert set(errors_of(r)) == {"body"}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_json_is_415(small: TestClient[Litestar], content_type: str) -> None:
    r = small.post(
        "/notes", content=b'{"to": 7, "text": "hi"}', headers={"Content-Type": content_type}
    )
    assert_problem(r, 415)


def test_a_json_media_type_with_parameters_or_a_suffix_is_json(
    small: TestClient[Litestar],
) -> None:
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        r = small.post(
            "/notes", content=b'{"to": 7, "text": "hi"}', headers={"Content-Type": content_type}
        )
        assert r.status_code == 201, (content_type, r.text)


# ---------------------------------------------------------------- answers and declarations


def test_a_handler_returning_none_answers_204_with_no_body(small: TestClient[Litestar]) -> None:
    r = small.delete("/notes")
    assert r.status_code == 204, r.text
    assert r.content == b""


def test_a_handler_asking_for_an_unknown_argument_is_refused_when_declared() -> None:
    async def odd(query: Page, user_id: int) -> None:
        """Asks for something the adapter cannot provide."""

    with pytest.raises(TypeError, match="user_id"):
        route.get("/odd")(odd)


# ---------------------------------------------------------------- OpenAPI


def operation(document: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    op: dict[str, Any] = document["paths"][path][method]
    return op


def test_openapi_takes_the_summary_from_the_docstring(openapi: dict[str, Any]) -> None:
    assert operation(openapi, "/items", "get")["summary"] == "List items (public)."
    assert operation(openapi, "/notes", "post")["summary"] == "Write a note."


def test_openapi_documents_query_and_header_parameters(openapi: dict[str, Any]) -> None:
    parameters = {p["name"]: p for p in operation(openapi, "/items", "get")["parameters"]}
    assert set(parameters) == {"page", "size", "tag", "exact", "X-Tag"}
    assert {p["in"] for n, p in parameters.items() if n != "X-Tag"} == {"query"}
    assert parameters["X-Tag"]["in"] == "header"
    assert parameters["X-Tag"]["schema"]["description"] == "A short tag"
    assert parameters["page"]["description"] == "Which page"
    assert parameters["page"]["schema"]["type"] == "integer"
    assert (parameters["page"]["schema"]["minimum"], parameters["page"]["schema"]["maximum"]) == (
        1,
        1000,
    )
    assert parameters["exact"]["schema"]["type"] == "boolean"
    # Optional: absent is how a query string says "none", so no null branch.
    assert parameters["tag"]["schema"]["type"] == "string"
    assert "anyOf" not in parameters["tag"]["schema"]
    assert not any(p.get("required") for p in parameters.values())


def test_openapi_documents_the_request_body_with_an_example(openapi: dict[str, Any]) -> None:
    body = operation(openapi, "/notes", "post")["requestBody"]
    assert body["required"] is True
    content = body["content"]["application/json"]
    schema = content["schema"]
    assert set(schema["properties"]) == {"to", "text", "urgent"}
    assert schema["required"] == ["to", "text"]
    assert schema["properties"]["text"]["minLength"] == 1
    examples = list(content["examples"].values())
    assert [example["value"] for example in examples] == [{"to": 7, "text": "hello"}]


def test_openapi_documents_the_response_body(openapi: dict[str, Any]) -> None:
    responses = operation(openapi, "/notes", "post")["responses"]
    schema = responses["201"]["content"]["application/json"]["schema"]
    name = schema["$ref"].rsplit("/", 1)[-1]
    assert name.endswith("NoteOut")
    assert set(openapi["components"]["schemas"][name]["properties"]) == {"to", "text", "urgent"}
    listing = operation(openapi, "/items", "get")["responses"]["200"]
    assert listing["content"]["application/json"]["schema"]["$ref"].endswith("Listing")


def test_openapi_documents_the_errors_each_declaration_implies(openapi: dict[str, Any]) -> None:
    def statuses(path: str, method: str) -> set[str]:
        return set(operation(openapi, path, method)["responses"])

    assert statuses("/items", "get") == {"200", "400", "503"}
    assert statuses("/notes", "post") == {"201", "400", "413", "415", "503"}
    assert statuses("/notes", "delete") == {"204", "503"}
    # A route with a caller is rate-limited per user.
    assert statuses("/test-only/me", "get") == {"200", "401", "429", "503"}
    problem = operation(openapi, "/notes", "post")["responses"]["415"]
    assert "application/problem+json" in problem["content"]


def test_openapi_marks_public_routes_as_needing_no_credentials(openapi: dict[str, Any]) -> None:
    for path, method in [("/items", "get"), ("/notes", "post"), ("/notes", "delete")]:
        assert operation(openapi, path, method).get("security") == [], (path, method)


def test_openapi_does_not_mark_a_route_with_a_caller_as_public(openapi: dict[str, Any]) -> None:
    assert operation(openapi, "/test-only/me", "get").get("security") != []


# ---------------------------------------------------------------- the caller, on a real app


@pytest.fixture
async def real(tmp_path: Path) -> AsyncIterator[Api]:
    """The real app on SQLite, with ``whoami`` registered on it."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'chat.db'}")
    await asyncio.to_thread(upgrade, settings.database_url)
    app = create_app(settings)
    app.register(whoami)
    async with AsyncTestClient(app=app) as test_client:
        yield Api(test_client)


async def test_the_caller_is_whoever_the_credentials_name(real: Api) -> None:
    alice = await real.signup()
    for headers in (alice.auth, alice.basic):
        r = await real.client.get("/test-only/me", headers=headers)
        assert r.status_code == 200, r.text
        assert r.json() == {"user_id": alice.id}


async def test_a_route_with_a_caller_is_401_without_valid_credentials(real: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        r = await real.client.get("/test-only/me", headers=headers)
        assert_problem(r, 401)
        assert r.headers["WWW-Authenticate"]
