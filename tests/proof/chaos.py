"""Jepsen's acknowledged-write check, for the crash tests: writers that send with
Idempotency-Keys and retry every unanswered send with the same key, and the verdict."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.proof.conftest import bearer

RETRY_DEADLINE_SECONDS = 120.0
RETRY_PAUSE_SECONDS = 0.05


@dataclass
class Writer:
    """One sender: sends ``count`` numbered messages, one at a time, each until answered."""

    name: str
    token: str
    to: int
    acked: list[int] = field(default_factory=list)
    retries: int = 0
    server_errors: Counter[int] = field(default_factory=Counter)

    def text(self, round_: int, i: int) -> str:
        return f"{self.name} r{round_} #{i}"

    def run(self, base_url: str, round_: int, count: int) -> None:
        with httpx.Client(base_url=base_url, timeout=10) as client:
            for i in range(count):
                self.acked.append(self.send(client, self.text(round_, i), f"{round_}-{i}"))

    def send(self, client: httpx.Client, text: str, key: str) -> int:
        deadline = time.monotonic() + RETRY_DEADLINE_SECONDS
        headers = {**bearer(self.token), "Idempotency-Key": key}
        while True:
            try:
                r = client.post(
                    "/api/v1/chats/", json={"user_id": self.to, "message": text}, headers=headers
                )
            except httpx.TransportError:
                r = None  # no answer: the server is down, or died while answering
            if r is not None and r.status_code in (200, 201):
                message_id: int = r.json()["id"]
                return message_id
            if r is not None and r.status_code < 500:
                raise AssertionError(f"{text}: {r.status_code} {r.text}")
            if r is not None:
                self.server_errors[r.status_code] += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"{text}: no answer within {RETRY_DEADLINE_SECONDS} s")
            self.retries += 1
            time.sleep(RETRY_PAUSE_SECONDS)


def run_with_crash(
    writers: list[Writer], base_url: str, round_: int, count: int, crash: Callable[[], None]
) -> None:
    """The writers in threads, and one crash at a random moment while they write."""
    failures: list[BaseException] = []

    def guarded(writer: Writer) -> None:
        try:
            writer.run(base_url, round_, count)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=guarded, args=(w,)) for w in writers]
    done_before = sum(len(w.acked) for w in writers)
    # The crash comes after a random number of this round's sends were answered (at most
    # half, so the writers still have sends in flight), however fast the machine is.
    crash_after = done_before + random.randint(1, max(1, len(writers) * count // 2))
    for thread in threads:
        thread.start()
    _wait_until(lambda: sum(len(w.acked) for w in writers) >= crash_after or bool(failures))
    crash()
    for thread in threads:
        thread.join(RETRY_DEADLINE_SECONDS + 30)
    assert not failures, failures
    assert not any(t.is_alive() for t in threads), "a writer is stuck"


def _wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the writers made no progress"
        time.sleep(0.002)


def inbox(client: httpx.Client, token: str) -> list[dict[str, Any]]:
    """Every message the user received, oldest first (through the API, cursor by cursor)."""
    messages: list[dict[str, Any]] = []
    while True:
        after = messages[-1]["id"] if messages else 0
        r = client.get(
            "/api/v1/chats/", params={"after_id": after, "page_size": 100}, headers=bearer(token)
        )
        assert r.status_code == 200, r.text
        page = r.json()["messages"]
        if not page:
            return messages
        messages += page


def verify(writers: list[Writer], received: list[dict[str, Any]], rounds: int, count: int) -> None:
    """Every acknowledged send is there exactly once, with its text; nothing else is; each
    writer's ids rise in the order it sent."""
    by_id = {m["id"]: m for m in received}
    texts = Counter(m["message"] for m in received)
    assert not [t for t, n in texts.items() if n > 1], "duplicates"
    for writer in writers:
        expected = [writer.text(r, i) for r in range(rounds) for i in range(count)]
        assert len(writer.acked) == len(expected)
        for message_id, text in zip(writer.acked, expected, strict=True):
            assert message_id in by_id, f"acknowledged {text} (id {message_id}) is lost"
            assert by_id[message_id]["message"] == text
        assert writer.acked == sorted(writer.acked), f"{writer.name}'s ids out of order"
    assert len(received) == sum(len(w.acked) for w in writers)
