"""/docs in a real browser, offline: Debian's chromium (driven by Playwright) against a live
``chatserver serve``. The page must list the API's operations with every request it makes
going to the server itself, under a Content-Security-Policy that allows only 'self'."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import sync_playwright

from testinfra.procs import HOST
from testinfra.server import ServerProcess, running_server
from tests.browser import CHROMIUM_ARGS, chromium_path

RENDER_TIMEOUT_MS = 20_000
ZERO_WIDTH_SPACE = "\u200b"  # Swagger UI puts them in long paths as line-break hints
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def chromium() -> str:
    return chromium_path()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("docs")
    env = {"CHAT_DATABASE_URL": f"sqlite:///{workdir / 'chat.db'}"}
    with running_server(workdir, env) as running:
        yield running


def documented_operations(server: ServerProcess) -> set[str]:
    """Every operation of the OpenAPI document, as "METHOD /path"."""
    document = httpx.get(f"{server.base_url}/openapi.json", timeout=10).json()
    return {
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_docs_page_lists_the_operations_without_leaving_the_machine(
    chromium: str, server: ServerProcess
) -> None:
    requested: list[str] = []
    console: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
            response = page.goto(f"{server.base_url}/docs", wait_until="load")
            assert response is not None
            assert response.status == 200
            csp = response.headers.get("content-security-policy", "")
            page.locator(".opblock").first.wait_for(timeout=RENDER_TIMEOUT_MS)
            page.wait_for_load_state("networkidle")
            shown = {
                " ".join(block.inner_text().replace(ZERO_WIDTH_SPACE, "").split()[:2])
                for block in page.locator(".opblock-summary").all()
            }
        finally:
            browser.close()

    assert {"GET /api/v1/users", "POST /api/v1/chats"} <= shown
    assert shown == documented_operations(server)
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert [line for line in console if "Content Security Policy" in line] == []
    away = [url for url in requested if urlsplit(url).hostname != HOST]
    assert away == [], f"the page asked for something off this machine: {away}"
    assert any(url.endswith("/docs/openapi.json") for url in requested)
