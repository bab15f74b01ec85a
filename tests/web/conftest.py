"""The web client in Debian's Chromium against a real ``chatserver serve``: one server and
one browser per test module, a fresh browser context per person.

Every person's page is watched for the whole test: console errors, uncaught exceptions and
Content-Security-Policy violations fail the test (the browser's own log lines about
requests that failed while a test holds the network down are expected then, and only then).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from chatserver import store
from chatserver.auth import hash_password
from chatserver.db import open_database
from chatserver.services import now_us
from testinfra.server import ServerProcess, running_server
from tests.browser import CHROMIUM_ARGS, chromium_path
from tests.helpers import run_cli

PASSWORD = "s3cret-pass"
ARTIFACTS = Path(
    os.environ.get("CHAT_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")
)
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 360, "height": 740}
# What Chromium logs by itself for a request that could not be made while offline.
NETWORK_FAILURE = re.compile(r"Failed to load resource|net::ERR_|WebSocket connection to")
# Reported to the console by an init script (not subject to the page's CSP).
CSP_WATCH = """document.addEventListener("securitypolicyviolation", (e) =>
  console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`));
"""
_names = itertools.count(1)
expect.set_options(timeout=15_000)


def unique(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 1000}x{next(_names)}"


class Person:
    """One person in their own browser context (own storage, own network switch)."""

    def __init__(self, browser: Browser, base_url: str, name: str, **options: Any) -> None:
        self.name = name
        self.base_url = base_url
        self.context: BrowserContext = browser.new_context(**{"viewport": DESKTOP, **options})
        self.context.add_init_script(CSP_WATCH)
        self.page: Page = self.context.new_page()
        self.problems: list[str] = []
        self.network_down = False
        self.allowed: list[re.Pattern[str]] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        self.page.on("dialog", lambda dialog: self.problems.append(f"dialog: {dialog.message}"))

    def _console(self, message: Any) -> None:
        if message.type != "error":
            return
        if self.network_down and NETWORK_FAILURE.search(message.text):
            return
        if any(pattern.search(message.text) for pattern in self.allowed):
            return
        self.problems.append(f"console error: {message.text}")

    @contextlib.contextmanager
    def refused(self, status: int) -> Iterator[None]:
        """Inside, the browser's own log line for an HTTP ``status`` answer is expected (a
        request the test makes the server refuse)."""
        pattern = re.compile(f"Failed to load resource: .*status of {status}")
        self.allowed.append(pattern)
        try:
            yield
        finally:
            self.allowed.remove(pattern)

    # ------------------------------------------------------------ going places

    def open(self, path: str = "/") -> None:
        self.page.goto(self.base_url + path)

    def sign_up(self) -> None:
        self.open("/#/signup")
        form = self.page.get_by_role("form", name="Sign up")
        form.get_by_label("Username", exact=True).fill(self.name)
        form.get_by_label("Email", exact=True).fill(f"{self.name}@example.com")
        form.get_by_label("Password", exact=True).fill(PASSWORD)
        form.get_by_role("button", name="Sign up").click()
        self.expect_connected()

    def log_in(self, path: str = "/#/login") -> None:
        self.open(path)
        form = self.page.get_by_role("form", name="Log in")
        form.get_by_label("Username or email", exact=True).fill(self.name)
        form.get_by_label("Password", exact=True).fill(PASSWORD)
        form.get_by_role("button", name="Log in").click()
        self.expect_connected()

    def expect_connected(self) -> None:
        expect(self.page.get_by_role("status").filter(has_text="Connected")).to_be_visible()

    def open_conversation(self, peer: str) -> None:
        self.entry(peer).click()
        expect(self.page.get_by_role("heading", name=peer, exact=True)).to_be_visible()

    def start_conversation(self, peer: str) -> None:
        finder = self.page.get_by_role("searchbox", name="Find people")
        finder.fill(peer)
        finder.press("Enter")
        self.page.get_by_role("link", name=f"Message {peer}", exact=True).click()
        expect(self.page.get_by_role("heading", name=peer, exact=True)).to_be_visible()

    # ------------------------------------------------------------ what is on the page

    @property
    def conversations(self) -> Any:
        return self.page.get_by_role("navigation", name="Conversations")

    def entry(self, peer: str) -> Any:
        return self.conversations.get_by_role("link", name=re.compile(f"^{re.escape(peer)}\\b"))

    @property
    def log(self) -> Any:
        return self.page.get_by_role("log", name="Messages")

    @property
    def messages(self) -> Any:
        return self.log.get_by_role("article")

    def message(self, text: str | re.Pattern[str]) -> Any:
        """The message whose own text (not a quote of another) contains ``text``."""
        return self.messages.filter(has=self.page.locator("p.text", has_text=text))

    @property
    def composer(self) -> Any:
        return self.page.get_by_role("textbox", name="Message", exact=True)

    def send(self, text: str) -> None:
        self.composer.fill(text)
        self.composer.press("Enter")

    def go_offline(self) -> None:
        self.network_down = True
        self.context.set_offline(True)

    def go_online(self) -> None:
        self.context.set_offline(False)
        self.expect_connected()
        self.network_down = False

    def screenshot(self, name: str) -> Path:
        path = ARTIFACTS / "web" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path))
        return path


class ApiClient:
    """The HTTP API for arranging what a test starts from (users, many messages)."""

    def __init__(self, base_url: str, database_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)
        self.database_url = database_url

    def sign_up(self, name: str, *, log_in: bool = True) -> tuple[int, str]:
        """A new user: (id, token); the token is "" without ``log_in``."""
        body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
        user = self.http.post("/api/v1/users/", json=body)
        assert user.status_code == 201, user.text
        if not log_in:
            return user.json()["id"], ""
        login = self.http.post("/api/v1/auth/token/", json={"username": name, "password": PASSWORD})
        assert login.status_code == 200, login.text
        return user.json()["id"], login.json()["token"]

    def send(self, token: str, to: int, text: str) -> dict[str, Any]:
        r = self.http.post(
            "/api/v1/chats/",
            json={"user_id": to, "message": text},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 201, r.text
        message: dict[str, Any] = r.json()
        return message

    def seed_users(self, names: list[str]) -> list[int]:
        """Many users at once, through the store (one shared password hash: signing up a
        hundred people through the API spends minutes in argon2 on a loaded machine)."""
        # In a thread of its own: Playwright's sync API keeps an event loop in this one.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, _insert_users(self.database_url, names)).result()

    def bulk_messages(self, sender: int, recipient: int, count: int) -> None:
        """``chatserver bulk-load``: messages "bulk message 1" … "bulk message N", in order."""
        env = {"CHAT_DATABASE_URL": self.database_url}
        args = ("bulk-load", "--sender", str(sender), "--recipient", str(recipient))
        done = run_cli(*args, "--count", str(count), env=env, cwd=Path.cwd())
        assert done.returncode == 0, done.stderr

    def get(self, token: str, path: str, **params: Any) -> Any:
        r = self.http.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        return r.json()


async def _insert_users(database_url: str, names: list[str]) -> list[int]:
    db = await open_database(database_url)
    try:
        password_hash = await hash_password(PASSWORD)
        async with db.transaction() as conn:
            return [
                (
                    await store.insert_user(
                        conn,
                        name,
                        f"{name}@example.com",
                        password_hash,
                        (name.casefold(), f"{name}@example.com"),
                        now_us(),
                    )
                ).id
                for name in names
            ]
    finally:
        await db.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    chromium_path()  # skip before starting anything when there is no browser
    workdir = tmp_path_factory.mktemp("web")
    env = {"CHAT_DATABASE_URL": f"sqlite:///{workdir / 'chat.db'}", "CHAT_RATE_LIMITS": "off"}
    with running_server(workdir, env) as running:
        yield running


@pytest.fixture(scope="module")
def browser(server: ServerProcess) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def api(server: ServerProcess) -> Iterator[ApiClient]:
    client = ApiClient(server.base_url, server.env["CHAT_DATABASE_URL"])
    yield client
    client.http.close()


@pytest.fixture
def people(browser: Browser, server: ServerProcess) -> Iterator[Any]:
    """``people(n)`` -> n new people, each in their own context; none of their pages may log
    an error, throw, or violate the CSP during the test."""
    made: list[Person] = []

    def make(count: int = 1, **options: Any) -> list[Person]:
        new = [Person(browser, server.base_url, unique("p"), **options) for _ in range(count)]
        made.extend(new)
        return new

    yield make
    problems = [f"{p.name}: {problem}" for p in made for problem in p.problems]
    for person in made:
        person.context.close()
    assert problems == []
